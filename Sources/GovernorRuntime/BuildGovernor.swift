import JobgovCore

/// The governor at work on one build (not a loop: the caller's event loop calls `tick`): each tick it reads the build through a `BuildSensing`, keeps the job table and the memory
/// model, asks the pure `Governor` for a decision and carries it out through a `BuildActuating` (token target,
/// freezing, paging out, ending a job to run it again, holding off the OOM killer). The kernel drives it in
/// `jobgov run`; a simulated build drives the very same code in the simulator. Time is the build's clock in seconds,
/// given by the caller.
public final class BuildGovernor {
    public struct Options: Sendable {
        public var settings: GovernorSettings
        /// What earlier builds of the same command left.
        public var history: MemoryHistoryFormat.Contents
        /// How long the build may wait at its hard limit before the OOM killer is let act (cgroup v1, where it is held off).
        public var oomWaitSeconds: Double = 5
        public init(settings: GovernorSettings, history: MemoryHistoryFormat.Contents = .init()) {
            self.settings = settings
            self.history = history
        }
    }

    public private(set) var governor: Governor
    public private(set) var table = JobTable()
    public internal(set) var model: MemoryModel
    /// Jobs that compile on distcc, icecc or sccache helpers: kept out of the memory model, which is for local work.
    public internal(set) var remote = RemoteJobs()
    private let sensor: BuildSensing
    private let actuator: BuildActuating
    private(set) var options: Options
    /// Messages for people (also kept for the summary).
    private let output: (String) -> Void
    /// One JSON line per tick, when a trace is wanted.
    public var trace: ((String) -> Void)?
    /// The build's timeline (jobs, freezes, counters), when `--trace-events` wants one.
    public var timeline: BuildTimeline?
    /// The process jobgov started: a jobserver client whatever its name.
    public var launchedPID: Int32 = 0
    /// Tokens held by clients, as the supervisor last counted them (for the trace).
    public var tokensOut = 0
    public private(set) var lastDecision: GovernorDecision?
    private(set) var lastInput: GovernorInput?
    public internal(set) var stats = RunStatistics()
    /// Time the build's tasks spent in reclaim, when the kernel tells (for the summary).
    public var reclaimStallSeconds: Double? {
        get { stats.reclaimStallSeconds }
        set { stats.reclaimStallSeconds = newValue }
    }

    private var oomKillsAtStart: UInt64?
    private var unattributedKills = 0
    /// OOM victims the events named before the cgroup's counter showed their kill.
    private var namedKills = 0
    private var killSeenAt: Double?
    private var recentlyFinished: [FinishedJob] = []
    /// Jobs (by their root's pid) that lost a process to the OOM killer, and jobs jobgov ended to run them again.
    private var oomVictimJobs: Set<Int32> = []
    private var evicted: Set<Int32> = []
    /// Recipes waiting to run again (for want of memory): their root's pid → when they first asked; and every
    /// recipe that asked, until it is answered for good.
    private var rerunsAsked: [Int32: Double] = [:]
    private var firstAsked: [Int32: Double] = [:]
    private var underOOMSince: Double?
    private var oomKillerReleased = false
    private var killsAtRelease = 0
    private var buildFrozen = false

    public init(options: Options, sensor: BuildSensing, actuator: BuildActuating, say: @escaping (String) -> Void) {
        self.options = options
        self.sensor = sensor
        self.actuator = actuator
        self.output = say
        let s = options.settings
        self.governor = Governor(settings: s)
        let h = options.history
        self.model = MemoryModel(prior: MemoryModel.defaultPrior(budget: s.budget, cpus: s.cpus), history: h.peaks,
                                 historySeconds: h.seconds, historyOrder: h.order, historyShapes: h.shapes,
                                 historyDoubt: s.canPageOut || s.canEvict ? 1 : 2)
        stats.targetMin = s.maxJobs
        stats.targetMax = 0
        // Before the first job has started, admit what the prior allows: a burst of `-j16` at t=0 is what OOM-kills.
        decideBeforeStart()
    }

    private func decideBeforeStart() {
        lastDecision = governor.decide(GovernorInput(
            now: 0, memoryUsedBytes: 0, jobs: [], nextJobPeakBytes: model.nextJobPeak,
            upcomingJobs: model.upcomingJobs(count: options.settings.maxJobs)))
    }

    /// The target to start with.
    public var initialTarget: Int { lastDecision?.targetJobs ?? options.settings.maxJobs }

    public func setCeiling(_ jobs: Int) { governor.setCeiling(jobs) }

    /// The one place the budget changes at run time (a share from `jobgov daemon`): the governor and every message
    /// and trace that names the budget use the new one from the next tick on.
    public func setBudget(_ budget: UInt64, hardLimit: UInt64) {
        governor.setBudget(budget, hardLimit: hardLimit)
        options.settings = governor.settings
        // Before the first tick, the target to start with follows the new budget.
        if lastInput == nil { decideBeforeStart() }
    }

    /// Whether `jobgov daemon` has this build yield to an older one, even its oldest job.
    public func setYieldsToOlderBuild(_ yields: Bool) {
        guard governor.settings.yieldsToOlderBuild != yields else { return }
        governor.setYieldsToOlderBuild(yields)
        options.settings = governor.settings
    }

    /// The CPUs `jobgov daemon` gives this build (nil: all of them).
    public func setCPUShare(_ cpus: Double?) {
        governor.setCPUShare(cpus)
        options.settings = governor.settings
    }

    /// One tick at build time `t`: returns the number of jobs the pool should allow.
    public func tick(now t: Double) -> Int {
        let reading = sensor.read()
        handle(sensor.events(), now: t)
        let finished = table.update(reading.processes, launched: launchedPID, now: t) { self.sensor.arguments(of: $0) }
        for job in finished { record(job) }
        for id in endedIDs() { actuator.jobEnded(id) }
        stats.peakMemory = max(stats.peakMemory, reading.memoryPeakBytes ?? reading.memoryUsageBytes,
                               reading.memoryUsageBytes)
        accountOOMKills(finished: finished, counter: reading.oomKills, now: t)

        let input = governorInput(reading: reading, now: t)
        lastInput = input
        var decision = governor.decide(input)
        // While a recipe waits to run again, nothing new starts.
        if !rerunsAsked.isEmpty { decision.targetJobs = min(decision.targetJobs, max(1, table.jobs.count)) }
        lastDecision = decision
        apply(decision, now: t)
        handleOOMWait(underOOM: reading.underOOM, now: t)
        stats.noteTarget(decision.targetJobs, rung: decision.rung, at: t)
        writeTrace(t: t, decision: decision, reading: reading)
        noteTimeline(t: t, finished: finished, decision: decision, reading: reading)
        return decision.targetJobs
    }

    private var knownIDs: Set<JobID> = []
    private func endedIDs() -> [JobID] {
        let now = Set(table.jobs.keys)
        let gone = knownIDs.subtracting(now)
        knownIDs = now
        return gone.sorted { $0.pid < $1.pid }
    }

    private func governorInput(reading: BuildReading, now t: Double) -> GovernorInput {
        var running: [GovernorInput.RunningJob] = []
        // Where a wrong admission can be undone, a job whose command never ran is planned as this build's jobs
        // typically ran (see `MemoryModel.typicalJob`), not at its peak throughout.
        let typical = options.settings.canPageOut || options.settings.canEvict ? model.typicalJob : nil
        for job in table.running {
            if job.remote.isRemote {
                running.append(remoteJob(job, now: t))
                continue
            }
            model.noteStarted(job.command)
            model.noteRunning(job.command, bytes: job.peakBytes, ranSeconds: job.activeSeconds(at: t))
            // A recipe waiting to run again holds nothing and runs nothing until it is told to go; counting its old
            // peak as growth to come would keep the others frozen while it waits for them.
            if rerunsAsked[job.id.pid] != nil || evicted.contains(job.id.pid) { continue }
            let predicted = model.predictedPeak(of: job.command)
            let knownSeconds = model.knownSeconds(of: job.command)
            var input = GovernorInput.RunningJob(
                id: job.id, startedAt: job.startedAt, rssBytes: job.rssBytes, peakBytes: job.peakBytes,
                predictedPeakBytes: predicted, frozen: job.frozen,
                // A frozen job keeps the growth it had when it was frozen: thawed, it will grow again.
                growing: job.frozen ? job.growthRate > 0 : t - job.lastGrowthAt < options.settings.growingSeconds,
                growthRate: job.growthRate, ranSeconds: job.activeSeconds(at: t),
                runSeconds: knownSeconds ?? typical?.runSeconds,
                shape: knownSeconds == nil ? typical?.shape : model.knownShape(of: job.command),
                pagedOutBytes: job.pagedOutBytes,
                evictable: options.settings.canEvict && job.rootName == "jobgov-shell",
                peakKnown: model.knowsPeak(of: job.command) && job.peakBytes <= predicted * 17 / 16)
            input.pageOutAskedSecondsAgo = job.pageOutAskedAt.map { t - $0 }
            input.newKind = !input.peakKnown && model.isNewKind(job.command)
            running.append(input)
        }
        var input = GovernorInput(
            now: t, memoryUsedBytes: reading.memoryUsedBytes, jobs: running, nextJobPeakBytes: model.nextJobPeak,
            typicalJobPeakBytes: model.typicalJobPeak,
            upcomingJobs: model.upcomingJobs(count: max(governor.ceiling, options.settings.maxJobs)), typicalJob: typical,
            systemAvailableBytes: reading.systemAvailableBytes, systemTotalBytes: reading.systemTotalBytes,
            cpuBusy: reading.cpuBusy, ioLatencySeconds: reading.ioLatencySeconds, atHardLimit: reading.underOOM)
        input.nextJobRemote = remote.nextJobRemote(running: table.running, now: t)
        input.remoteJobPeakBytes = remote.peakBytes
        return input
    }

    private func apply(_ decision: GovernorDecision, now: Double) {
        if decision.buildFrozen != buildFrozen {
            switch actuator.setBuildFrozen(decision.buildFrozen) {
            case .success(let note):
                buildFrozen = decision.buildFrozen
                if buildFrozen {
                    stats.buildFreezes += 1
                    say("machine nearly out of memory: build frozen until it recovers" + note)
                } else {
                    say("build thawed" + note)
                }
            case .failure(let problem):
                say("cannot \(decision.buildFrozen ? "freeze" : "thaw") the build: \(problem)")
            }
        }
        for id in decision.evict {
            guard let job = table.jobs[id] else { continue }
            if let problem = actuator.end(job) {
                say("cannot end job \(id.pid) early: \(problem)")
                continue
            }
            table.setFrozen(id, false, now: now)
            evicted.insert(id.pid)
            timeline?.mark(pid: id.pid, .endedEarly, at: now)
            stats.evictions += 1
            say("ended job \(id.pid) (\(MemorySize.format(job.rssBytes)), \(short(job.command))) early to make room; "
                + "it runs again when memory allows")
        }
        for id in decision.freeze {
            guard let job = table.jobs[id], !job.frozen else { continue }
            if let problem = actuator.freeze(job) {
                say("cannot freeze job \(id.pid): \(problem)")
                continue
            }
            table.setFrozen(id, true, now: now)
            stats.jobFreezes += 1
            say("froze job \(id.pid) (\(MemorySize.format(job.rssBytes)), \(short(job.command))) to let older jobs finish")
        }
        for id in decision.pageOut {
            guard let job = table.jobs[id], job.frozen, job.pagedOutBytes == 0 else { continue }
            switch actuator.pageOut(job) {
            case .success(let bytes):
                table.setPagedOut(id, bytes: max(bytes, job.rssBytes), now: now)
                stats.pageOuts += 1
                stats.pagedOutBytes += job.rssBytes
                say("paged out frozen job \(id.pid) (\(MemorySize.format(job.rssBytes)))")
            case .failure(let problem):
                say("cannot page out job \(id.pid): \(problem)")
            }
        }
        for job in table.jobs.values where job.frozen { actuator.keepFrozen(job) }
        for id in decision.thaw {
            guard let job = table.jobs[id], job.frozen else { continue }
            if let problem = actuator.thaw(job) {
                say("cannot thaw job \(id.pid): \(problem)")
                continue
            }
            table.setFrozen(id, false, now: now)
            say("thawed job \(id.pid)")
        }
    }

    private func handle(_ events: [BuildEvent], now: Double) {
        for event in events {
            switch event {
            case .exited(let pid, let peak):
                if peak > 0 { table.notePeak(pid: pid, bytes: peak) }
            case .oomVictim(let pid, let command, let ancestors):
                // The kernel named the victim: no need to guess from which job disappeared.
                let job = table.job(containing: pid) ?? ancestors.lazy.compactMap { self.table.job(containing: $0) }.first
                if let job {
                    oomVictimJobs.insert(job.id.pid)
                    timeline?.mark(pid: job.id.pid, .oomKilled, at: now)
                }
                namedKills += 1
                unattributedKills += 1
                nameOOMVictim(job?.command ?? command, peak: job?.peakBytes ?? 0)
            }
        }
    }

    /// Counts the build's OOM kills and names a victim for each: a job the OOM killer ended disappears from the
    /// table within a tick of the kill, so the largest job that ended this tick or the last one is named.
    private func accountOOMKills(finished: [FinishedJob], counter: UInt64?, now: Double, final: Bool = false) {
        let kills = sensor.oomKills() ?? counter
        if oomKillsAtStart == nil { oomKillsAtStart = kills }
        if let kills, let start = oomKillsAtStart {
            let total = Int(kills - min(kills, start))
            if total > stats.oomKills {
                // Kills the events already named are not guessed at again.
                let named = min(namedKills, total - stats.oomKills)
                namedKills -= named
                unattributedKills += total - stats.oomKills - named
                if unattributedKills > 0 { killSeenAt = killSeenAt ?? now }
            }
            // Never down: the v1 counter sums child cgroups, and one removed mid-build takes its kills with it.
            stats.oomKills = max(stats.oomKills, total)
        }
        recentlyFinished = recentlyFinished.filter { now - $0.endedAt < 2 } + finished
        // A recipe under jobgov-shell names itself by asking to run again (see rerunVerdict); otherwise the job the
        // OOM killer ended disappeared from the table within a tick or two of the kill: name the largest that did.
        guard unattributedKills > 0, final || now - (killSeenAt ?? now) >= 1 else { return }
        while unattributedKills > 0, let victim = recentlyFinished.max(by: { $0.peakBytes < $1.peakBytes }) {
            recentlyFinished.removeAll { $0 == victim }
            timeline?.mark(command: victim.command, startedAt: victim.startedAt, .oomKilled, at: victim.endedAt)
            nameOOMVictim(victim.command, peak: victim.peakBytes)
        }
        killSeenAt = nil
    }

    private func nameOOMVictim(_ command: String, peak: UInt64) {
        unattributedKills = max(0, unattributedKills - 1)
        let s = options.settings
        stats.oomVictims.append(command)
        say("the kernel's OOM killer ended a job: \(short(command))" + (peak > 0 ? ", at its peak \(MemorySize.format(peak))" : "")
            + " (budget \(MemorySize.format(s.budget)), hard limit \(MemorySize.format(s.hardLimit)))")
    }

    /// jobgov-shell's question after its recipe failed (any exit status or signal; `status` is the wait status when
    /// it says): "go" when the recipe lost a process to the OOM killer (the kernel named it, or an unnamed kill
    /// came while it ran and it died by SIGKILL) or jobgov ended it early, and it fits now; "wait" until it fits;
    /// "no REASON" when nothing says the failure was for want of memory. A compiler driver whose cc1plus was killed
    /// exits 1, not by a signal: the verdict goes by what happened in the recipe's process tree, not by its status.
    public func rerunVerdict(shellPID pid: Int32, status: ExitStatus?, now: Double) -> String {
        handle(sensor.events(), now: now)
        accountOOMKills(finished: [], counter: nil, now: now)
        let first = rerunsAsked[pid] ?? firstAsked[pid] ?? now
        firstAsked[pid] = first
        let job = table.jobs.values.first { $0.id.pid == pid }
        let killed = status?.wasKilled ?? true
        var cause = evicted.contains(pid) || oomVictimJobs.contains(pid)
        if !cause && unattributedKills > 0 && (killed || !sensor.namesOOMVictims) {
            // An OOM kill nobody has claimed, and this recipe died by SIGKILL (or, where the kernel does not name
            // victims, failed in any way: a driver whose compiler was killed exits 1): it was the victim.
            cause = true
            if let job { nameOOMVictim(job.command, peak: job.peakBytes) }
            timeline?.mark(pid: pid, .oomKilled, at: now)
        }
        guard cause else {
            // A recipe that failed with no kill counted and no victim named was not ended for want of memory: an
            // ordinary failure is answered at once. A SIGKILL gets two seconds for a late count first, as before
            // (without them, a sub-make SIGKILLed under make 4.4.1 lost a token for good in TokenAccountingTests; why
            // is not understood yet). Nothing is held back meanwhile.
            if killed && now - first < 2 { return "wait" }
            firstAsked[pid] = nil
            return killed ? "no the job was killed, but not by the OOM killer" : "no the job failed, not for want of memory"
        }
        rerunsAsked[pid] = first
        // A job that by itself filled nearly all of the hard limit cannot fit alone either: running it again would
        // only end the same way. (Against the hard limit, not the budget: a job between the two fits alone.)
        let hard = options.settings.hardLimit
        if let job, !evicted.contains(pid), Double(job.peakBytes) >= 0.9 * Double(hard) {
            forgetRerun(pid)
            return "no it alone took \(MemorySize.format(job.peakBytes)) of the \(MemorySize.format(hard)) hard limit"
        }
        // Alone, or beside the others where its peak seen so far (a quarter more: it may not have reached its peak)
        // fits the plan with nothing frozen. Other recipes waiting to run again hold nothing and do not count, or two
        // of them would wait for each other.
        let others = table.jobs.values.filter { $0.id.pid != pid && rerunsAsked[$0.id.pid] == nil }
        let peak = max(job.map { $0.peakBytes + $0.peakBytes / 4 } ?? 0, job.map { model.predictedPeak(of: $0.command) } ?? 0)
        let waiting = Set(table.jobs.values.filter { rerunsAsked[$0.id.pid] != nil || evicted.contains($0.id.pid) }.map(\.id))
        let fits = lastInput.map { governor.admits($0, peakBytes: peak, excluding: waiting) } ?? false
        guard others.isEmpty || (fits && earliestWaiting == pid) else { return "wait" }
        let wasEvicted = evicted.contains(pid)
        forgetRerun(pid)
        stats.reruns += 1
        timeline?.mark(pid: pid, .rerun, at: now)
        say("running again\(others.isEmpty ? ", alone" : ""), a job \(wasEvicted ? "jobgov ended early" : "the OOM killer ended"): "
            + short(job?.command ?? "pid \(pid)"))
        return "go"
    }

    /// The recipe that has waited longest goes first.
    private var earliestWaiting: Int32? { rerunsAsked.min { ($0.value, $0.key) < ($1.value, $1.key) }?.key }

    private func forgetRerun(_ pid: Int32) {
        rerunsAsked[pid] = nil
        firstAsked[pid] = nil
        evicted.remove(pid)
        oomVictimJobs.remove(pid)
    }

    /// With the OOM killer held off (v1), a build at its hard limit waits; while jobgov can still free memory by
    /// letting older jobs finish, that is what it wants. When nothing is left to do and the build has waited
    /// `oomWaitSeconds`, the kernel's OOM killer is let loose, once, so the build ends with a named job rather than
    /// hanging.
    private func handleOOMWait(underOOM: Bool, now: Double) {
        guard actuator.holdsOOMKiller else { return }
        if !underOOM || (oomKillerReleased && stats.oomKills > killsAtRelease) {
            // One kill per release: the OOM killer is held off again as soon as it has acted.
            underOOMSince = nil
            if oomKillerReleased {
                _ = actuator.setOOMKiller(enabled: false)
                oomKillerReleased = false
            }
            return
        }
        let since = underOOMSince ?? now
        underOOMSince = since
        if !oomKillerReleased && now - since >= options.oomWaitSeconds {
            oomKillerReleased = actuator.setOOMKiller(enabled: true)
            killsAtRelease = stats.oomKills
            let biggest = table.running.max { $0.rssBytes < $1.rssBytes }
            say("the build has waited at its hard limit for \(Int(options.oomWaitSeconds)) s with nothing left to free; "
                + "letting the kernel's OOM killer end a job"
                + (biggest.map { " (largest: \(short($0.command)), \(MemorySize.format($0.rssBytes)))" } ?? ""))
        }
    }

    /// The build has ended: one last reading, everything thawed and given back; returns the history to keep.
    public func finish(now t: Double) -> MemoryHistoryFormat.Contents {
        // The build may have ended within a tick of an OOM kill: one last reading, in which every job has ended.
        let finished = table.update(sensor.read().processes, launched: launchedPID, now: t)
        for job in finished { record(job) }
        handle(sensor.events(), now: t)
        accountOOMKills(finished: finished, counter: nil, now: t, final: true)
        for (id, job) in table.jobs where job.frozen { table.setFrozen(id, false, now: t) }
        timeline?.observe(now: t, jobs: table.jobs.values, ended: finished, sample: nil)
        actuator.finish()
        var history = MemoryHistoryFormat.Contents()
        history.peaks = model.updatedHistory
        history.seconds = model.updatedHistorySeconds
        history.order = model.updatedHistoryOrder
        history.shapes = model.updatedHistoryShapes
        return history
    }

    private func writeTrace(t: Double, decision: GovernorDecision, reading: BuildReading) {
        guard let trace else { return }
        var w = JSONObjectWriter()
        w.add("t", (t * 1000).rounded() / 1000)
        w.add("target", decision.targetJobs)
        w.add("tokens_out", tokensOut)
        w.add("running_jobs", table.jobs.values.filter { !$0.frozen }.count)
        w.add("frozen_jobs", table.jobs.values.filter(\.frozen).count)
        w.add("paged_out_jobs", table.jobs.values.filter { $0.pagedOutBytes > 0 }.count)
        w.add("remote_jobs", table.jobs.values.filter(\.remote.isRemote).count)
        w.add("build_frozen", buildFrozen)
        w.add("memory_bytes", Int(reading.memoryUsedBytes))
        w.add("budget_bytes", Int(options.settings.budget))
        w.add("limit_bytes", Int(min(reading.memoryLimitBytes ?? 0, UInt64(Int.max))))
        w.add("next_job_peak_bytes", Int(model.nextJobPeak))
        w.add("psi_memory_some_avg10", reading.memoryPressure)
        w.add("psi_cpu_some_avg10", reading.cpuPressure)
        if let busy = reading.cpuBusy { w.add("cpu_busy", (busy * 1000).rounded() / 1000) }
        if let share = options.settings.cpuShare { w.add("cpu_share", (share * 1000).rounded() / 1000) }
        if options.settings.yieldsToOlderBuild { w.add("yields", true) }
        w.add("rung", decision.rung.description)
        w.add("reason", decision.reason)
        trace(w.text + "\n")
    }
}

extension BuildGovernor {
    /// The tick as the timeline keeps it (the same figures as the trace's line).
    private func noteTimeline(t: Double, finished: [FinishedJob], decision: GovernorDecision, reading: BuildReading) {
        guard timeline != nil else { return }
        let frozen = table.jobs.values.filter(\.frozen).count
        timeline?.observe(now: t, jobs: table.jobs.values, ended: finished, sample: BuildTimeline.Sample(
            memoryUsedBytes: reading.memoryUsedBytes, budgetBytes: options.settings.budget,
            hardLimitBytes: reading.memoryLimitBytes, targetJobs: decision.targetJobs, tokensOut: tokensOut,
            runningJobs: table.jobs.count - frozen, frozenJobs: frozen, buildFrozen: buildFrozen,
            memoryPressure: reading.memoryPressure, cpuPressure: reading.cpuPressure))
    }

    private func say(_ message: String) {
        stats.events.append(message)
        output(message)
    }
}

func short(_ command: String) -> String {
    command.count > 60 ? String(command.prefix(57)) + "..." : command
}
