#if canImport(Glibc)
import Glibc
#endif
import BPFProbes
import JobgovCore
import LinuxSystem

/// The governor at work inside `jobgov run`: each tick it reads the sensors and the build's processes, asks the pure
/// `Governor` for a decision, and carries it out (token target, freezing single jobs or the build, memory.high). It
/// also keeps what the summary, the trace and the history need.
final class GovernorLoop {
    struct Options {
        var settings: GovernorSettings
        /// Where the memory history of this build lives (nil: no history).
        var historyFile: String?
        /// JSON lines, one per tick.
        var traceFile: String?
        var quiet: Bool
    }

    private(set) var governor: Governor
    private var table = JobTable()
    private var model: MemoryModel
    private let tree = ProcessTree()
    private let sensors: SensorReader
    private let cgroup: BuildCgroup?
    private let options: Options
    /// The process jobgov started: a jobserver client whatever its name.
    var launchedPID: Int32 = 0
    /// Tokens held by clients, as the supervisor last counted them (for the trace).
    var tokensOut = 0
    private let startTime: Double
    private var previous: Sample?
    private var leaves: [JobID: JobCgroup] = [:]
    private var trace: Int32 = -1
    private var oomKillsAtStart: UInt64?
    private var unattributedKills = 0
    /// The eBPF observers, once attached (a second into the build: loading them takes about 0.1 s).
    private var probes: BuildProbes?
    /// Machine-wide tuning for the last rung (root only; restored on every way out, by the watchdog too).
    let tuning: SystemTuning? = geteuid() == 0 ? SystemTuning() : nil
    private var probesAttempted = false
    /// Recipes that jobgov-shell asks to run again after an OOM kill: its pid → when it first asked.
    private var rerunsAsked: [Int32: Double] = [:]
    private var rerunsGranted = 0
    /// JOBGOV_DEBUG_TICK: print what each tick's readings cost.
    private let debugTicks = getenv("JOBGOV_DEBUG_TICK") != nil
    private var recentlyFinished: [FinishedJob] = []
    /// OOM victims BPF named before the cgroup's counter showed their kill.
    private var bpfVictims = 0
    private var killSeenAt: Double?
    private var namedVictims: Set<Int32> = []
    private var underOOMSince: Double?
    private var brakeReleased = false
    private var killsAtRelease = 0
    private var buildFrozen = false
    private(set) var lastDecision: GovernorDecision?

    // What the summary reports.
    private(set) var stats = RunStatistics()

    init(options: Options, cgroup: BuildCgroup?, startTime: Double) {
        self.options = options
        self.cgroup = cgroup
        self.startTime = startTime
        self.governor = Governor(settings: options.settings,
                                 initialTarget: nil)
        let history = options.historyFile.flatMap { readSmallFile($0, limit: 8 << 20) }
            .map(MemoryHistoryFormat.decodeAll) ?? MemoryHistoryFormat.Contents()
        self.model = MemoryModel(prior: MemoryModel.defaultPrior(budget: options.settings.budget, cpus: options.settings.cpus),
                                 history: history.peaks, historySeconds: history.seconds, historyOrder: history.order)
        self.sensors = SensorReader(cgroup: CgroupPaths(v2: cgroup?.unifiedDir, v1Memory: cgroup?.memoryDir))
        if let path = options.traceFile {
            trace = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        }
        stats.targetMin = options.settings.maxJobs
        stats.targetMax = 0
        // Before the first job has started, admit what the prior allows: a burst of `-j16` at t=0 is what OOM-kills.
        let first = governor.decide(GovernorInput(now: 0, memoryUsedBytes: 0, jobs: [],
                                                  nextJobPeakBytes: model.nextJobPeak))
        lastDecision = first
    }

    var traceFailed: Bool { options.traceFile != nil && trace < 0 }

    /// The target to start with.
    var initialTarget: Int { lastDecision?.targetJobs ?? options.settings.maxJobs }

    func setCeiling(_ jobs: Int) { governor.setCeiling(jobs) }

    /// One tick: returns the number of jobs the pool should allow.
    func tick(now: Double) -> Int {
        let t = now - startTime
        let t0 = monotonicSeconds()
        let sample = sensors.sample(.governor)
        let t1 = monotonicSeconds()
        let processes = tree.observe(below: getpid())
        if debugTicks { note("debug: sample \(Int((t1 - t0) * 1e6)) us, processes \(Int((monotonicSeconds() - t1) * 1e6)) us (\(processes.count))") }
        drainProbes()
        let finished = table.update(processes, launched: launchedPID, now: t) { self.tree.arguments(of: $0) }
        for job in finished {
            model.record(job)
            stats.record(job)
        }
        for (id, leaf) in leaves where table.jobs[id] == nil {
            leaf.remove()
            leaves[id] = nil
        }
        let memory = sample.cgroupMemory
        let usage = memory?.usageBytes ?? 0
        let inactiveFile = memory?.stat["total_inactive_file"] ?? memory?.stat["inactive_file"] ?? 0
        let used = usage > inactiveFile ? usage - inactiveFile : usage
        stats.peakMemory = max(stats.peakMemory, memory?.peakBytes ?? usage, usage)
        accountOOMKills(finished: finished, fallback: memory?.oomKills, now: t)

        var running: [GovernorInput.RunningJob] = []
        for job in table.running {
            model.noteStarted(job.command)
            // A recipe waiting to run again after an OOM kill holds nothing and runs nothing until jobgov says go;
            // counting its old peak as growth to come would keep the others frozen while it waits for them.
            if rerunsAsked[job.id.pid] != nil { continue }
            let ranFor = t - job.startedAt - job.frozenTime(at: t)
            running.append(GovernorInput.RunningJob(
                id: job.id, startedAt: job.startedAt, rssBytes: job.rssBytes, peakBytes: job.peakBytes,
                predictedPeakBytes: model.predictedPeak(of: job.command), frozen: job.frozen,
                // A frozen job keeps the growth it had when it was frozen: thawed, it will grow again.
                growing: job.frozen ? job.growthRate > 0 : t - job.lastGrowthAt < options.settings.growingSeconds,
                growthRate: job.growthRate,
                remainingSeconds: model.knownSeconds(of: job.command).map { $0 - ranFor }))
        }
        let input = GovernorInput(
            now: t, memoryUsedBytes: used, jobs: running, nextJobPeakBytes: model.nextJobPeak,
            typicalJobPeakBytes: model.typicalJobPeak,
            upcomingJobPeaksBytes: model.upcomingPeaks(count: max(governor.ceiling, options.settings.maxJobs)),
            systemAvailableBytes: sample.memory?.available, systemTotalBytes: sample.memory?.total,
            cpuBusy: previous.flatMap { buildCPUShare(from: $0, to: sample, cpus: options.settings.cpus) },
            ioLatencySeconds: previous.flatMap { ioLatency(from: $0, to: sample) })
        previous = sample
        var decision = governor.decide(input)
        // While a recipe waits to run again alone, nothing new starts.
        if !rerunsAsked.isEmpty { decision.targetJobs = min(decision.targetJobs, max(1, table.jobs.count)) }
        lastDecision = decision
        apply(decision, now: t)
        handleOOMWait(underOOM: memory?.underOOM == true, now: t)
        stats.noteTarget(decision.targetJobs, rung: decision.rung, at: t)
        writeTrace(t: t, decision: decision, used: used, limit: memory?.limitBytes, sample: sample)
        return decision.targetJobs
    }

    private func apply(_ decision: GovernorDecision, now: Double) {
        guard let cgroup else { return }
        if decision.buildFrozen != buildFrozen {
            do {
                if decision.buildFrozen { try cgroup.freeze() } else { try cgroup.thaw() }
                buildFrozen = decision.buildFrozen
                if buildFrozen {
                    stats.buildFreezes += 1
                    let problem = tuning?.apply()
                    say("machine nearly out of memory: build frozen until it recovers"
                        + (tuning == nil ? "" : problem.map { " (no tuning: \($0))" }
                            ?? "; kswapd set to reclaim earlier (vm.watermark_scale_factor \(SystemTuning.tunedWatermarkScale)), memory compacted"))
                } else {
                    tuning?.restore()
                    say("build thawed" + (tuning == nil ? "" : "; vm.watermark_scale_factor restored"))
                }
            } catch {
                say("cannot \(decision.buildFrozen ? "freeze" : "thaw") the build: \(error.description)")
            }
        }
        for id in decision.freeze {
            guard let job = table.jobs[id], !job.frozen else { continue }
            do throws(CgroupError) {
                let leaf: JobCgroup
                if let existing = leaves[id] { leaf = existing } else { leaf = try cgroup.makeFreezeLeaf("\(id.pid)") }
                leaves[id] = leaf
                for pid in job.pids { try? leaf.adopt(pid) }
                try leaf.freeze()
                table.setFrozen(id, true, now: now)
                stats.jobFreezes += 1
                say("froze job \(id.pid) (\(MemorySize.format(job.rssBytes)), \(short(job.command))) to let older jobs finish")
            } catch {
                say("cannot freeze job \(id.pid): \(error.description)")
            }
        }
        // Processes a frozen job forked while it was being moved are moved after it; only those (each move takes
        // the kernel's cgroup lock, and this runs every tick).
        for (id, leaf) in leaves {
            guard let job = table.jobs[id], job.frozen else { continue }
            let inside = Set(leaf.directories.flatMap { BuildCgroup.processes(in: $0) })
            for pid in job.pids where !inside.contains(pid) { try? leaf.adopt(pid) }
        }
        for id in decision.thaw {
            guard let leaf = leaves[id] else { continue }
            do {
                try leaf.thaw()
                table.setFrozen(id, false, now: now)
                say("thawed job \(id.pid)")
            } catch {
                say("cannot thaw job \(id.pid): \(error.description)")
            }
        }
    }

    /// Counts the build's OOM kills and names a victim for each: a job the OOM killer ended disappears from the
    /// table within a tick of the kill, so the largest job that ended this tick or the last one is named.
    private func accountOOMKills(finished: [FinishedJob], fallback: UInt64?, now: Double, final: Bool = false) {
        let kills = cgroup?.oomKills() ?? fallback
        if oomKillsAtStart == nil { oomKillsAtStart = kills }
        if let kills, let start = oomKillsAtStart {
            let total = Int(kills - min(kills, start))
            if total > stats.oomKills {
                // Kills BPF already named are not guessed at again.
                let named = min(bpfVictims, total - stats.oomKills)
                bpfVictims -= named
                unattributedKills += total - stats.oomKills - named
                if unattributedKills > 0 { killSeenAt = killSeenAt ?? now }
            }
            stats.oomKills = total
        }
        recentlyFinished = recentlyFinished.filter { now - $0.endedAt < 2 } + finished
        // A recipe under jobgov-shell names itself by asking to run again (see rerunVerdict); otherwise the job the
        // OOM killer ended disappeared from the table within a tick or two of the kill: name the largest that did.
        guard unattributedKills > 0, final || now - (killSeenAt ?? now) >= 1 else { return }
        while unattributedKills > 0, let victim = recentlyFinished.max(by: { $0.peakBytes < $1.peakBytes }) {
            recentlyFinished.removeAll { $0 == victim }
            nameOOMVictim(victim.command, peak: victim.peakBytes)
        }
        killSeenAt = nil
    }

    private func nameOOMVictim(_ command: String, peak: UInt64) {
        unattributedKills = max(0, unattributedKills - 1)
        let budget = options.settings.budget
        stats.oomVictims.append(command)
        say("the kernel's OOM killer ended a job: \(short(command))" + (peak > 0 ? ", at its peak \(MemorySize.format(peak))" : "")
            + " (budget \(MemorySize.format(budget)), hard limit \(MemorySize.format(budget + MemorySize.reserve(forBudget: budget))))")
    }

    /// Loads the observers jobgov uses (process exits with their exact peaks, reclaim stalls, OOM victims) and
    /// says once which are on and which are off and why. The high-frequency ones (per-page RSS, the scheduler,
    /// block I/O) are for `jobgov monitor`, not paid for during a build.
    func attachProbes(unifiedDir: String) {
        guard !probesAttempted else { return }
        probesAttempted = true
        do {
            let p = try BuildProbes.open(cgroupV2Path: unifiedDir, leaveOut: [.memory, .blockIO, .runQueue, .execGate, .brake])
            let wanted: [ProbeObserver] = [.processes, .reclaim, .oom]
            let on = wanted.filter { p.isAvailable($0) }
            if on.isEmpty {
                let why = p.unavailable.first?.reason ?? "not available"
                say("eBPF observers off (\(why)); running on PSI, cgroup counters and /proc")
                p.close()
                return
            }
            probes = p
            var line = "eBPF observers on: " + on.map(\.rawValue).joined(separator: ", ")
            let off = p.unavailable.filter { u in wanted.contains { $0.rawValue == u.observer } }
            if !off.isEmpty { line += "; off: " + off.map { "\($0.observer) (\($0.reason))" }.joined(separator: ", ") }
            say(line)
        } catch {
            say("eBPF observers off (\(error)); running on PSI, cgroup counters and /proc")
        }
    }

    private func drainProbes() {
        guard let probes else { return }
        probes.drain { event in
            switch event {
            case .exit(let pid, _, let peak):
                if peak > 0 { table.notePeak(pid: pid, bytes: peak) }
            case .oomVictim(let pid, let command, _, let inBuild) where inBuild:
                // The kernel named the victim: no need to guess from which job disappeared.
                let job = table.job(containing: pid)
                bpfVictims += 1
                unattributedKills += 1
                nameOOMVictim(job?.command ?? command, peak: job?.peakBytes ?? 0)
            default:
                break
            }
        }
    }

    /// jobgov-shell's question after its recipe died by SIGKILL: "go" once the build had an OOM kill not yet
    /// re-run and the job can run alone, "wait" until then, "no" when no OOM kill explains the SIGKILL.
    func rerunVerdict(shellPID pid: Int32, now: Double) -> String {
        let first = rerunsAsked[pid] ?? now
        rerunsAsked[pid] = first
        guard stats.oomKills > rerunsGranted else {
            // The OOM counter is read each tick: give it a moment before deciding the kill came from elsewhere.
            if now - first < 2 { return "wait" }
            rerunsAsked[pid] = nil
            return "no the job was killed, but not by the OOM killer"
        }
        let job = table.jobs.values.first { $0.id.pid == pid }
        if unattributedKills > 0, let job, namedVictims.insert(pid).inserted {
            nameOOMVictim(job.command, peak: job.peakBytes)
        }
        // A job that by itself filled nearly all of the hard limit cannot fit alone either: running it again would
        // only end the same way. (Against the hard limit, not the budget: a job between the two fits alone.)
        let hardLimit = options.settings.budget + MemorySize.reserve(forBudget: options.settings.budget)
        if let job, Double(job.peakBytes) >= 0.9 * Double(hardLimit) {
            rerunsAsked[pid] = nil
            rerunsGranted += 1
            return "no it alone took \(MemorySize.format(job.peakBytes)) of the \(MemorySize.format(hardLimit)) hard limit"
        }
        // Alone: no other job holds memory, frozen ones included (they keep their pages). Nothing new starts while a
        // recipe waits, so the others drain. Other recipes waiting to run again hold nothing and do not count, or
        // two of them would wait for each other; the first to ask again goes, the rest then wait for it. (Running
        // it beside others "if it fits" was tried: the killed job's peak is often not seen before it asks, and it
        // was let go beside a job as big as itself.)
        let others = table.jobs.values.filter { $0.id.pid != pid && rerunsAsked[$0.id.pid] == nil }
        guard others.isEmpty else { return "wait" }
        rerunsAsked[pid] = nil
        rerunsGranted += 1
        stats.reruns += 1
        say("running again, alone, a job the OOM killer ended: "
            + short(job?.command ?? "pid \(pid)"))
        return "go"
    }

    /// With the OOM killer disabled (v1), a build at its hard limit waits; while jobgov can still free memory by
    /// letting older jobs finish, that is what it wants. When nothing is left to freeze and the build has waited
    /// for 5 s, the kernel's OOM killer is let loose, once, so the build ends with a named job rather than hanging.
    private func handleOOMWait(underOOM: Bool, now: Double) {
        guard let cgroup, cgroup.memoryDir != nil else { return }
        if !underOOM || (brakeReleased && stats.oomKills > killsAtRelease) {
            // One kill per release: the OOM killer is held off again as soon as it has acted.
            underOOMSince = nil
            if brakeReleased {
                _ = try? cgroup.apply(CgroupLimits(oomKillDisabled: true))
                brakeReleased = false
            }
            return
        }
        let since = underOOMSince ?? now
        underOOMSince = since
        if !brakeReleased && now - since >= 5 {
            brakeReleased = (try? cgroup.apply(CgroupLimits(oomKillDisabled: false))) != nil
            killsAtRelease = stats.oomKills
            let biggest = table.running.max { $0.rssBytes < $1.rssBytes }
            say("the build has waited at its hard limit for 5 s with nothing left to freeze; letting the kernel's OOM killer "
                + "end a job" + (biggest.map { " (largest: \(short($0.command)), \(MemorySize.format($0.rssBytes)))" } ?? ""))
        }
    }

    /// Thaws every job jobgov froze and removes their leaves (the processes stay in them until they end).
    func finish() {
        // The build may have ended within a tick of an OOM kill: one last reading, in which every job has ended.
        let t = monotonicSeconds() - startTime
        let finished = table.update(tree.observe(below: getpid()), launched: launchedPID, now: t)
        for job in finished { stats.record(job) }
        accountOOMKills(finished: finished, fallback: nil, now: t, final: true)
        for (id, leaf) in leaves {
            try? leaf.thaw()
            table.setFrozen(id, false, now: monotonicSeconds() - startTime)
        }
        if buildFrozen { try? cgroup?.thaw() }
        tuning?.restore()
        if let path = options.historyFile {
            let text = MemoryHistoryFormat.encode(model.updatedHistory, seconds: model.updatedHistorySeconds,
                                                  order: model.updatedHistoryOrder)
            let directory = String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)])
            makeDirectories(directory)
            let tmp = path + ".tmp.\(getpid())"
            let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            if fd >= 0 {
                writeAll(fd, text)
                close(fd)
                rename(tmp, path)
            }
        }
        if trace >= 0 { close(trace) }
        trace = -1
        if let probes {
            let stall = probes.totalStall
            stats.reclaimStallSeconds = Double(stall.direct + stall.cgroup) / 1e9
            probes.close()
        }
        probes = nil
    }

    private func writeTrace(t: Double, decision: GovernorDecision, used: UInt64, limit: UInt64?, sample: Sample) {
        guard trace >= 0 else { return }
        var w = JSONObjectWriter()
        w.add("t", (t * 1000).rounded() / 1000)
        w.add("target", decision.targetJobs)
        w.add("tokens_out", tokensOut)
        w.add("running_jobs", table.jobs.values.filter { !$0.frozen }.count)
        w.add("frozen_jobs", table.jobs.values.filter(\.frozen).count)
        w.add("build_frozen", buildFrozen)
        w.add("memory_bytes", Int(used))
        w.add("budget_bytes", Int(options.settings.budget))
        w.add("limit_bytes", Int(min(limit ?? 0, UInt64(Int.max))))
        w.add("next_job_peak_bytes", Int(model.nextJobPeak))
        w.add("psi_memory_some_avg10", sample.cgroupPressure[.memory]?.some.avg10 ?? sample.systemPressure[.memory]?.some.avg10 ?? 0)
        w.add("psi_cpu_some_avg10", sample.systemPressure[.cpu]?.some.avg10 ?? 0)
        w.add("rung", decision.rung.description)
        w.add("reason", decision.reason)
        writeAll(trace, w.text + "\n")
    }

    private func say(_ message: String) {
        stats.events.append(message)
        if !options.quiet { note(message) }
    }
}

/// What the end-of-run summary reports.
struct RunStatistics {
    var targetMin = Int.max
    var targetMax = 0
    var targetChanges = 0
    private var lastTarget: Int?
    private var lastAt: Double = 0
    /// Target × seconds, for the time-weighted average.
    private var targetSeconds: Double = 0
    var highestRung: Rung = .run
    var peakMemory: UInt64 = 0
    var oomKills = 0
    var jobFreezes = 0
    var buildFreezes = 0
    var frozenSeconds: Double = 0
    var jobsFinished = 0
    var largest: [FinishedJob] = []
    var oomVictims: [String] = []
    var reruns = 0
    /// Time the build's tasks spent in memory reclaim (BPF), nil without the observers.
    var reclaimStallSeconds: Double?
    var events: [String] = []

    mutating func noteTarget(_ target: Int, rung: Rung, at t: Double) {
        if let last = lastTarget {
            targetSeconds += Double(last) * (t - lastAt)
            if last != target { targetChanges += 1 }
        }
        lastTarget = target
        lastAt = t
        targetMin = min(targetMin, target)
        targetMax = max(targetMax, target)
        highestRung = max(highestRung, rung)
    }

    var averageTarget: Double? { lastAt > 0 ? targetSeconds / lastAt : nil }

    mutating func record(_ job: FinishedJob) {
        jobsFinished += 1
        frozenSeconds += job.frozenSeconds
        largest.append(job)
        largest.sort { $0.peakBytes > $1.peakBytes }
        if largest.count > 5 { largest.removeLast() }
    }
}

private func short(_ command: String) -> String {
    command.count > 60 ? String(command.prefix(57)) + "..." : command
}

/// The build's CPU time between two samples as a share of all CPUs (from its cgroup), else the machine's busy
/// share when the build has no cgroup.
func buildCPUShare(from a: Sample, to b: Sample, cpus: Int) -> Double? {
    if let x = a.cgroupCPU, let y = b.cgroupCPU, b.time > a.time, y.usageMicroseconds >= x.usageMicroseconds {
        return Double(y.usageMicroseconds - x.usageMicroseconds) / 1e6 / (b.time - a.time) / Double(cpus)
    }
    guard let x = a.cpu, let y = b.cpu else { return nil }
    return CPUTimes.utilization(previous: x, current: y)
}

/// The slowest disk's average time per completed request between two samples, in seconds.
func ioLatency(from a: Sample, to b: Sample) -> Double? {
    var worst: Double?
    for (name, y) in b.disks where !name.hasPrefix("loop") && !name.hasPrefix("ram") {
        guard let x = a.disks[name], let ms = DiskStat.averageLatencyMilliseconds(previous: x, current: y) else { continue }
        worst = max(worst ?? 0, ms / 1000)
    }
    return worst
}

func makeDirectories(_ path: String) {
    var prefix = ""
    for part in path.split(separator: "/") {
        prefix += "/" + part
        mkdir(prefix, 0o755)
    }
}
