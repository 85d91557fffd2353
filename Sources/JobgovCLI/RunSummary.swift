import GovernorRuntime
import JobgovCore

/// What jobgov says when the build ends: a few lines for people, and the same and more as JSON for scripts.
struct RunSummary {
    let outcome: BuildSupervisor.Outcome
    let plan: RunPlan

    private var status: String {
        switch outcome.exit {
        case .exited(0): "finished"
        case .exited(let code): "failed with status \(code)"
        case .signaled(let sig): "was ended by signal \(sig) (\(signalName(sig)))"
        }
    }

    var lines: [String] {
        let l = outcome.ledger
        var first = "build \(status) after \(formatSeconds(outcome.elapsed)); "
        if let s = outcome.statistics, s.targetMax > 0 {
            first += s.targetMin == s.targetMax ? "\(s.targetMax) jobs" : "\(s.targetMin)-\(s.targetMax) jobs"
            if let avg = s.averageTarget, s.targetMin != s.targetMax {
                first += " (\(oneDecimal(avg)) on average, \(s.targetChanges) changes)"
            }
            first += " of \(l.targetJobs == plan.ceiling ? plan.ceiling : max(plan.ceiling, l.targetJobs)) asked for"
        } else {
            first += "\(l.targetJobs) jobs"
            if l.targetJobs != plan.ceiling { first += " (ceiling \(plan.ceiling))" }
        }
        first += ", up to \(l.peakOutstanding + 1) at once seen"
        if l.recreated > 0 { first += ", \(l.recreated) lost token\(l.recreated == 1 ? "" : "s") re-created" }
        let missing = l.created - outcome.tokensInPoolAtEnd
        if missing > 0 { first += "; \(missing) token\(missing == 1 ? " was" : "s were") still out at exit" }
        var out = [first]
        if let s = outcome.statistics {
            var memory = "memory: peak \(MemorySize.format(s.peakMemory))"
            if let b = outcome.budget { memory += " (budget \(MemorySize.format(b.bytes)))" }
            memory += "; \(s.jobFreezes) job freeze\(s.jobFreezes == 1 ? "" : "s")"
            if s.buildFreezes > 0 { memory += ", \(s.buildFreezes) whole-build freeze\(s.buildFreezes == 1 ? "" : "s")" }
            if s.frozenSeconds > 0 { memory += ", \(formatSeconds(s.frozenSeconds)) frozen in all" }
            if s.pageOuts > 0 {
                memory += ", \(s.pageOuts) paged out (\(MemorySize.format(s.pagedOutBytes)))"
            }
            if s.evictions > 0 { memory += ", \(s.evictions) ended early to run again" }
            if let stall = s.reclaimStallSeconds, stall >= 0.05 { memory += "; \(formatSeconds(stall)) stalled in reclaim" }
            memory += "; \(s.oomKills) OOM kill\(s.oomKills == 1 ? "" : "s")"
            if s.reruns > 0 { memory += " (\(s.reruns) job\(s.reruns == 1 ? "" : "s") run again)" }
            out.append(memory)
            if s.remoteJobs + s.fellBackJobs > 0 {
                out.append("distributed: \(s.remoteJobs) job\(s.remoteJobs == 1 ? "" : "s") compiled remotely, "
                           + "\(s.localJobs) ran here" + (s.fellBackJobs > 0 ? " (\(s.fellBackJobs) fell back from remote)" : ""))
            }
            if !s.largest.isEmpty {
                out.append("largest jobs: " + s.largest.prefix(3).map {
                    "\(MemorySize.format($0.peakBytes)) \(Self.shortCommand($0.command))"
                }.joined(separator: "; "))
            }
        }
        return out
    }

    var json: String {
        let l = outcome.ledger
        var w = JSONObjectWriter()
        switch outcome.exit {
        case .exited(let code):
            w.add("exit_status", Int(code))
        case .signaled(let sig):
            w.add("exit_status", 128 + Int(sig))
            w.add("signal", Int(sig))
        }
        w.add("wall_seconds", outcome.elapsed)
        w.add("command", plan.argv.joined(separator: " "))
        w.add("jobs_requested", plan.ceiling)
        w.add("jobs_at_end", l.targetJobs)
        w.add("peak_concurrency", l.peakOutstanding + 1)
        w.add("tokens_recreated", l.recreated)
        w.add("governed", outcome.statistics != nil)
        if let b = outcome.budget {
            w.add("budget_bytes", Int(b.bytes))
            w.add("budget_source", b.source)
        }
        if let s = outcome.statistics {
            w.add("target_min", s.targetMax == 0 ? l.targetJobs : s.targetMin)
            w.add("target_max", s.targetMax == 0 ? l.targetJobs : s.targetMax)
            w.add("target_average", s.averageTarget ?? Double(l.targetJobs))
            w.add("target_changes", s.targetChanges)
            w.add("highest_rung", s.highestRung.description)
            w.add("peak_memory_bytes", Int(s.peakMemory))
            w.add("job_freezes", s.jobFreezes)
            w.add("build_freezes", s.buildFreezes)
            w.add("frozen_seconds", s.frozenSeconds)
            w.add("page_outs", s.pageOuts)
            w.add("paged_out_bytes", Int(s.pagedOutBytes))
            w.add("jobs_ended_early", s.evictions)
            w.add("oom_kills", s.oomKills)
            w.add("jobs_finished", s.jobsFinished)
            w.add("remote_jobs", s.remoteJobs)
            w.add("local_jobs", s.localJobs)
            w.add("fell_back_jobs", s.fellBackJobs)
            w.add("largest_jobs", objects: s.largest.map {
                var j = JSONObjectWriter()
                j.add("command", $0.command)
                j.add("peak_bytes", Int($0.peakBytes))
                j.add("seconds", $0.seconds)
                j.add("frozen_seconds", $0.frozenSeconds)
                return j
            })
            w.add("oom_victims", strings: s.oomVictims)
            w.add("jobs_rerun", s.reruns)
            if let stall = s.reclaimStallSeconds { w.add("reclaim_stall_seconds", stall) }
            w.add("events", strings: s.events)
        }
        return w.text
    }

    static func shortCommand(_ command: String) -> String {
        command.count > 50 ? String(command.prefix(47)) + "..." : command
    }
}

func oneDecimal(_ x: Double) -> String {
    let tenths = Int((x * 10).rounded())
    return "\(tenths / 10).\(tenths % 10)"
}
