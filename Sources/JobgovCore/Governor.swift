/// The feedback loop's policy: sample in, decision out. Pure; its clock is the input's `now`.
///
/// Memory admission is Buck2's headroom rule applied to tokens: running jobs are expected to reach their predicted
/// peaks, and a new job is admitted while what is in use, plus what the running jobs still need, plus the next job's
/// predicted peak stays under `memoryThreshold` of the budget. PSI is not the memory signal, because without swap a
/// cgroup at its limit shows almost no memory stall; it warns too late. Lowering acts at once,
/// raising waits `raiseHoldSeconds` after the last lowering and needs a margin, so the target does not oscillate.
/// Freezing stops growth but frees nothing, so it starts while room is left (freezeThreshold < 1), with the newest
/// job, so that older jobs finish and release memory; the oldest job always runs so the build always progresses.
public struct Governor: Sendable {
    public private(set) var settings: GovernorSettings
    public private(set) var target: Int
    /// The most jobs now: `-jN`, or what `jobgov ctl jobs N` set since.
    public private(set) var ceiling: Int
    private var lastLowered: Double = -.infinity
    private var lastFreeze: Double = -.infinity
    private var lastThaw: Double = -.infinity
    private var lastEvict: Double = -.infinity
    public private(set) var buildFrozen = false

    /// How many remote jobs at once: the helpers' slots, else the ceiling (`-j` is the remote width).
    private var remoteSlots: Int { settings.remoteSlots > 0 ? min(settings.remoteSlots, ceiling) : ceiling }

    public init(settings: GovernorSettings, initialTarget: Int? = nil) {
        self.settings = settings
        self.ceiling = settings.maxJobs
        self.target = max(1, min(settings.maxJobs, initialTarget ?? settings.maxJobs))
    }

    /// How many jobs fit: the running ones oldest first, then new ones, while the memory plan's highest point stays
    /// under `limit` bytes. Memory outside the running jobs (make, page cache, frozen jobs) is held as it is.
    static func jobsThatFit(_ input: GovernorInput, running: [GovernorInput.RunningJob], limit: Double, maxJobs: Int,
                            horizon: Double, slack: Double = 1.25, cautious: Bool = false,
                            youngSeconds: Double = 1, undoable: Bool = false, remoteSlots: Int = 0) -> Int {
        let inJobs = running.reduce(UInt64(0)) { $0 + $1.rssBytes }
        var plan = MemoryPlan(now: input.now, baseBytes: Double(input.memoryUsedBytes) - Double(inJobs))
        var count = 0
        for job in running {
            plan.add(job.planItem(now: input.now, horizon: horizon, slack: slack))
            if plan.peakBytes > limit && count >= 1 { return count }
            count += 1
        }
        // New jobs: the first at the high estimate (the margin for one surprise), each further one at the typical
        // peak; where a surprise can be undone (`undoable`: paged out or run again) the first too is at the typical
        // peak (simulated: cold builds 5% faster, a fifth more freezes and page-outs, no more OOM kills). A job
        // started in the last few seconds that is already bigger than that says the build has entered a heavier
        // phase: the next jobs are counted at its size (the jobserver cannot choose which job comes next).
        let recentBig = running.filter { input.now - $0.startedAt < 3 }.map(\.peakBytes).max() ?? 0
        let next = Double(max(undoable ? (input.typicalJobPeakBytes ?? input.nextJobPeakBytes) : input.nextJobPeakBytes,
                              recentBig, 1 << 20))
        let typical = Double(max(min(input.typicalJobPeakBytes ?? input.nextJobPeakBytes, input.nextJobPeakBytes),
                                 recentBig, 1 << 20))
        // When the history says which jobs come next, they are counted at their own peaks. How long a new job will
        // run is not known for sure: it is never planned to end. Where a wrong admission can be undone (`undoable`:
        // the job paged out or run again), each grows along its measured shape from now, so that a job that peaks
        // late is not counted at its peak beside jobs that end before it gets there. Otherwise each is at its peak
        // from the start, and the first at the largest of the next three, as the order varies a little from build
        // to build (which, where nothing can be undone, must not be a surprise; elsewhere it held a compile back
        // behind a link that could only start after it: simulated warm builds 1.13x -> 1.04x a clairvoyant's).
        let upcoming = input.upcomingJobs
        func newItem(_ index: Int) -> MemoryPlan.Item {
            guard index < upcoming.count else {
                let peak = index == 0 ? next : typical
                guard undoable, let t = input.typicalJob, let shape = t.shape, let run = t.runSeconds else {
                    return MemoryPlan.Item(bytes: 0, peakBytes: peak, endsAt: nil)
                }
                return MemoryPlan.Item(bytes: 0, peakBytes: peak, endsAt: nil, shape: shape, ranSeconds: 0,
                                       runSeconds: run)
            }
            guard undoable else {
                let window = index == 0 ? upcoming.prefix(3) : upcoming[index...index]
                return MemoryPlan.Item(bytes: 0, peakBytes: max(Double(window.map(\.peakBytes).max()!), Double(1 << 20)),
                                       endsAt: nil)
            }
            let job = upcoming[index]
            let peak = max(Double(job.peakBytes), Double(1 << 20))
            guard let shape = job.shape, let run = job.runSeconds, run > 0 else {
                return MemoryPlan.Item(bytes: 0, peakBytes: peak, endsAt: nil)
            }
            return MemoryPlan.Item(bytes: 0, peakBytes: peak, endsAt: nil, shape: shape, ranSeconds: 0, runSeconds: run)
        }
        // Remote jobs first, while the helpers have slots free: each at what a remote job holds here.
        var remoteFree = input.nextJobRemote ? max(0, remoteSlots - running.filter(\.remote).count) : 0
        while count < maxJobs && remoteFree > 0 {
            let trial = plan.adding(MemoryPlan.Item(bytes: 0, peakBytes: Double(max(input.remoteJobPeakBytes, 1 << 20)),
                                                    endsAt: nil))
            guard trial.peakBytes <= limit else { break }
            plan = trial
            remoteFree -= 1
            count += 1
        }
        var index = 0
        // Slow start while nothing can take memory back: one job of unknown size at a time, and none beside a job of
        // a new kind for as long as it runs (its size may show only at its end, as a link's does).
        let probing = cautious && running.contains { (!$0.peakKnown && $0.ranSeconds < youngSeconds) || $0.newKind }
        var unknownAdmitted = 0
        while count < maxJobs {
            if cautious && index >= upcoming.count && (probing || unknownAdmitted >= 1) { break }
            if index >= upcoming.count { unknownAdmitted += 1 }
            let trial = plan.adding(newItem(index))
            guard trial.peakBytes <= limit else { break }
            plan = trial
            index += 1
            count += 1
        }
        return max(1, count)
    }

    /// The plan of the running jobs, everything else (frozen jobs included) held as it is, less `released` bytes
    /// that leave (jobs paged out or ended).
    static func runningPlan(_ input: GovernorInput, running: [GovernorInput.RunningJob], horizon: Double,
                            slack: Double = 1.25, released: Double = 0) -> MemoryPlan {
        let inJobs = running.reduce(0.0) { $0 + Double($1.rssBytes) }
        return MemoryPlan(now: input.now, baseBytes: Double(input.memoryUsedBytes) - inJobs - released,
                          items: running.map { $0.planItem(now: input.now, horizon: horizon, slack: slack) })
    }

    /// Whether one more job of `peakBytes` fits beside the running jobs' plan (frozen jobs' memory held): the rule
    /// for letting a job that was ended early run again.
    public func admits(_ input: GovernorInput, peakBytes: UInt64, excluding: Set<JobID> = []) -> Bool {
        let running = input.jobs.filter { !$0.frozen && !excluding.contains($0.id) }
        guard input.jobs.allSatisfy({ !$0.frozen }) else { return false }
        let plan = Self.runningPlan(input, running: running, horizon: settings.growthHorizonSeconds,
                                    slack: settings.endSlack)
        return plan.adding(MemoryPlan.Item(bytes: 0, peakBytes: Double(peakBytes), endsAt: nil)).peakBytes
            <= settings.memoryThreshold * Double(settings.budget)
    }

    public mutating func decide(_ input: GovernorInput) -> GovernorDecision {
        let s = settings
        let budget = Double(s.budget)
        let jobs = input.jobs.sorted { ($0.startedAt, $0.id.pid) < ($1.startedAt, $1.id.pid) }
        let running = jobs.filter { !$0.frozen }
        let frozen = jobs.filter(\.frozen)
        let used = Double(input.memoryUsedBytes)
        var reasons: [String] = []

        // Rung 4: the machine itself is short of memory (something outside the build grew): freeze everything
        // until it recovers. The build's own budget cannot help there.
        if let available = input.systemAvailableBytes, let total = input.systemTotalBytes, total > 0 {
            let share = Double(available) / Double(total)
            if !buildFrozen && share < s.systemFreezeThreshold {
                buildFrozen = true
            } else if buildFrozen && share > s.systemThawThreshold {
                buildFrozen = false
                lastThaw = input.now
            }
        }
        if buildFrozen {
            // Everything but the oldest stays frozen one by one after the build thaws, to come back step by step.
            let toFreeze = running.dropFirst().map(\.id)
            lowerTarget(to: max(1, jobs.count), now: input.now)
            return GovernorDecision(targetJobs: target, rung: .freezeBuild, freeze: Array(toFreeze), buildFrozen: true,
                                    throttle: true, reason: "machine short of memory")
        }

        // Rung 1: how many jobs memory allows. Two rules: the running jobs at their predicted peaks plus the new
        // ones must fit in the budget (predictions are peaks, and jobs rarely peak together, so the whole budget is
        // planned with), and no job starts while memory in use is above `memoryThreshold` of it.
        let memoryLimit = s.memoryThreshold * budget
        let fitNow = Self.jobsThatFit(input, running: running, limit: budget, maxJobs: ceiling,
                                      horizon: s.growthHorizonSeconds, slack: s.endSlack, cautious: s.slowStart,
                                      youngSeconds: s.youngSeconds, undoable: s.canPageOut || s.canEvict,
                                      remoteSlots: remoteSlots)
        var wanted = min(ceiling, fitNow + frozen.count)
        if fitNow < ceiling { reasons.append("memory") }
        if used > memoryLimit && wanted > jobs.count {
            wanted = max(1, jobs.count)
            reasons.append("memory in use")
        }
        // CPU and I/O saturation: more jobs than run now buy nothing.
        // The build's own CPU use, not the machine's: jobs that wait (I/O, a linker reading) cost no CPU, and
        // another program's load is no reason to hold the build back. Held at the jobs running, never below one
        // per CPU, so that the hold does not ratchet the count down as jobs end.
        // Remote jobs use the helpers' CPUs: the hold is on local jobs, and remote ones may still fill free slots.
        let remoteRunning = jobs.filter(\.remote).count
        let remoteFree = input.nextJobRemote ? max(0, remoteSlots - remoteRunning) : 0
        // Under `jobgov daemon` the build's CPUs are its share: its use is measured against that, and the hold's
        // floor is that many jobs.
        let cpus = s.cpuShare.map { min(Double(s.cpus), max(0.05, $0)) } ?? Double(s.cpus)
        let cpuFloor = max(1, Int(cpus.rounded()))
        let cpuHold = max(jobs.count - remoteRunning, cpuFloor) + remoteRunning + remoteFree
        if let busy = input.cpuBusy.map({ $0 * Double(s.cpus) / cpus }), busy > s.cpuThreshold, wanted > cpuHold {
            wanted = cpuHold
            reasons.append("cpu")
        }
        if let latency = input.ioLatencySeconds, latency > s.ioLatencyThreshold, wanted > max(jobs.count, cpuFloor) {
            wanted = max(jobs.count, cpuFloor)
            reasons.append("io")
        }
        // While a job is frozen no new job starts: its token stays out, and nothing is admitted past it.
        if !frozen.isEmpty { wanted = min(wanted, max(1, jobs.count)) }

        if wanted < target {
            lowerTarget(to: wanted, now: input.now)
        } else if wanted > target && input.now - lastLowered >= s.raiseHoldSeconds {
            // Raise only as far as fits with a margin.
            let withMargin = Self.jobsThatFit(input, running: running, limit: budget - s.raiseMargin * budget,
                                              maxJobs: ceiling, horizon: s.growthHorizonSeconds, slack: s.endSlack,
                                              cautious: s.slowStart, youngSeconds: s.youngSeconds,
                                              undoable: s.canPageOut || s.canEvict,
                                              remoteSlots: remoteSlots) + frozen.count
            target = max(target, min(wanted, withMargin))
        }

        // Rung 3: freeze the newest running job (never the oldest) when memory is nearly gone, or thaw the oldest
        // frozen one when it fits again.
        var decision = GovernorDecision(targetJobs: target, rung: target < ceiling ? .withhold : .run,
                                        buildFrozen: false, throttle: false, reason: "")
        let predictedRunning = Self.expectedTotal(input, running: running, horizon: s.growthHorizonSeconds)
        decision.throttle = used > budget
        // Freeze on what memory will be in half a second at the jobs' present growth, not on their predicted peaks:
        // predictions steer admission; freezing costs throughput and is kept for real shortage. It still acts
        // before the budget is reached, while the job frozen is small: at the limit, freezing frees nothing.
        // One exception: when the running jobs' plan no longer fits because jobs turned out heavier than predicted
        // (a batch of them at a phase change), the newest of those are frozen at once, while they hold little:
        // frozen later they would sit on memory the others need. Jobs the model knows are left to admission.
        let h = s.growthHorizonSeconds
        let nearFuture = used + running.reduce(0.0) { $0 + $1.growth(within: s.freezeHorizonSeconds, horizon: h) }
        let slack = s.endSlack
        let plan = Self.runningPlan(input, running: running, horizon: h, slack: slack)
        // Past the freeze threshold, freezing is for growth: jobs that sit at their peaks (admitted because the plan
        // fits) hold still, and freezing them would only stop them from finishing. Frozen jobs' memory counts in
        // what is used, so without this every tick froze one more job until one ran (measured in the simulator).
        let overUsed = used > s.freezeThreshold * budget && (running.contains(where: \.growing) || used > budget)
        if let oldest = jobs.first(where: { !$0.remote }), oldest.frozen, !s.yieldsToOlderBuild {
            // The jobs older than it have ended: the oldest job always runs, whatever memory says, or the build
            // would wait for nothing (memory in use may sit above the freeze threshold with every job frozen).
            decision.thaw = [oldest.id]
            lastThaw = input.now
            reasons.append("thaw oldest")
        } else if overUsed || nearFuture > budget || plan.peakBytes > budget || yieldsOldest(running, horizon: h) {
            let local = running.filter { !$0.remote }
            if local.count >= (s.yieldsToOlderBuild ? 1 : 2) && input.now - lastFreeze >= s.freezeIntervalSeconds {
                // The newest first, never the oldest; several at once when together they grow faster than the
                // room left (a phase of heavy jobs that all started together), each of them while still small.
                var ahead = nearFuture
                var usedSettled = !overUsed
                var kept = running
                var toFreeze: [JobID] = []
                for job in local.dropFirst().reversed() {
                    let pressing = ahead > budget || !usedSettled
                    let overPlan = Self.runningPlan(input, running: kept, horizon: h, slack: slack).peakBytes > budget
                    if !pressing && !overPlan { break }
                    if !pressing && !job.isYoungSurprise(horizon: h) { continue }
                    toFreeze.append(job.id)
                    kept.removeAll { $0.id == job.id }
                    ahead -= job.growth(within: s.freezeHorizonSeconds, horizon: h)
                    usedSettled = usedSettled || used - Double(job.rssBytes) <= s.freezeThreshold * budget
                }
                // Yielding to an older build (`jobgov daemon`): the oldest job too. The daemon says its growth does
                // not fit in the memory that is free (what the builds hold, not their shares: a build over its share
                // keeps what its frozen jobs hold), so the share alone cannot tell.
                if yieldsOldest(running, horizon: h), let oldest = local.first, !toFreeze.contains(oldest.id) {
                    toFreeze.append(oldest.id)
                    reasons.append("yield to an older build")
                }
                if !toFreeze.isEmpty {
                    decision.freeze = toFreeze
                    lastFreeze = input.now
                    reasons.append(toFreeze.count == 1 ? "freeze newest" : "freeze \(toFreeze.count) newest")
                }
            }
        } else if !frozen.isEmpty, !input.atHardLimit, !s.yieldsToOlderBuild,
                  input.now - lastThaw >= s.thawIntervalSeconds, input.now - lastFreeze >= s.thawIntervalSeconds {
            // Not while yielding to an older build: what is frozen waits for the daemon's word, not for the share.
            // Never at the hard limit: a job there waits for memory the plan did not see it needing (it cannot
            // grow, so it does not look like growing), and a thaw would only add to the demand.
            // Thawed, oldest first, as many as the plan fits under the budget. A frozen job already at its peak
            // needs nothing more: thawing it lets it finish and free its memory, the only way memory comes back
            // without swap. Thawing one at a time serialised a whole phase of heavy jobs (measured). A paged-out
            // job's memory comes back as it runs: it is planned at what it held.
            // The near-future check that freezes must not fire again at once on the jobs' old growth rates.
            // A frozen job's growth rate is the one it had when it was frozen, often in the steepest part of its
            // ramp: extrapolated, it keeps a job that has nearly reached its plateau frozen until everything else
            // ends (measured in the simulator: seconds of a lone running job beside paged-out ones). Where a wrong
            // thaw can be undone (the job frozen and paged out again, or ended and run again) it is planned at a
            // quarter above what it reached, and its growth is watched once it runs.
            let thawHorizon = s.canPageOut || s.canEvict ? 0 : h
            var thawed = plan
            var ahead = nearFuture
            for job in frozen {
                let trial = thawed.adding(job.planItem(now: input.now, horizon: thawHorizon, slack: slack),
                                          fromBase: Double(job.rssBytes))
                var grows = job.growth(within: s.freezeHorizonSeconds, horizon: thawHorizon)
                if thawHorizon == 0 {
                    grows = min(grows, max(0, Double(job.expectedPeak(horizon: 0)) - Double(job.holdingBytes)))
                }
                grows += Double(job.holdingBytes - job.rssBytes)
                guard trial.peakBytes <= budget, ahead + grows <= budget else { break }
                thawed = trial
                ahead += grows
                decision.thaw.append(job.id)
            }
            if !decision.thaw.isEmpty {
                lastThaw = input.now
                reasons.append(decision.thaw.count == 1 ? "thaw" : "thaw \(decision.thaw.count)")
            } else if s.canPageOut {
                decision.pageOut = Self.pageOutToThaw(frozen: frozen, plan: plan, ahead: nearFuture, budget: budget,
                                                      now: input.now, horizon: thawHorizon, slack: slack,
                                                      within: s.freezeHorizonSeconds)
                if !decision.pageOut.isEmpty { reasons.append("page out \(decision.pageOut.count) to thaw oldest") }
            }
        }
        resolveHeldMemory(input, jobs: jobs, decision: &decision, reasons: &reasons)
        var asked = Set<JobID>()
        decision.pageOut = decision.pageOut.filter { asked.insert($0).inserted }
        if !frozen.isEmpty || !decision.freeze.isEmpty { decision.rung = .freezeJobs }
        else if decision.throttle { decision.rung = .throttle }
        decision.targetJobs = target
        decision.reason = reasons.joined(separator: ",")
        // Calm is judged with the prior as well: the next job may belong to a heavier phase than any seen yet.
        let unstarted = Double(max(0, target - running.count)) * Double(max(input.nextJobPeakBytes, s.priorJobPeakBytes))
        decision.calm = frozen.isEmpty && decision.rung == .run && predictedRunning + unstarted < 0.5 * budget
        return decision
    }

    /// Under a daemon's word to yield (`GovernorSettings.yieldsToOlderBuild`): the oldest local job runs and holds
    /// less than half of what it will, so frozen now it keeps little from the older build. One that has grown
    /// further keeps running (without swap, freezing it would free nothing).
    private func yieldsOldest(_ running: [GovernorInput.RunningJob], horizon: Double) -> Bool {
        guard settings.yieldsToOlderBuild, let oldest = running.first(where: { !$0.remote }) else { return false }
        return 2 * oldest.rssBytes < oldest.expectedPeak(horizon: horizon)
    }

    /// Freezing frees nothing by itself: frozen jobs keep their memory. When the jobs left running could not all
    /// finish under the hard limit beside what the frozen ones hold (the deadlock that ends in the kernel's OOM
    /// killer), or can no longer reach the budget, the frozen memory must go: paged out where there is swap for the
    /// build (the job keeps its work and pages back in when thawed), else, where the build tool lets a job run again
    /// (make under jobgov-shell), the newest frozen or to-be-frozen job is ended while it is small and run again
    /// later. Decided now, before the build sits at its limit, and at the least cost: newest first, paging before
    /// ending. Where neither is possible (ninja without swap) admission is what has to keep the build out of here.
    private mutating func resolveHeldMemory(_ input: GovernorInput, jobs: [GovernorInput.RunningJob],
                                            decision: inout GovernorDecision, reasons: inout [String]) {
        let s = settings
        guard s.canPageOut || s.canEvict else { return }
        let h = s.growthHorizonSeconds
        let thawing = Set(decision.thaw)
        let freezing = Set(decision.freeze)
        let running = jobs.filter { (!$0.frozen || thawing.contains($0.id)) && !freezing.contains($0.id) }
        // Newest first: those being frozen now, then those frozen before.
        var held = Array(jobs.filter { ($0.frozen && !thawing.contains($0.id)) || freezing.contains($0.id) }.reversed())
        // The build waits at its hard limit: whatever the plan says, it was wrong. The newest running jobs (never
        // the oldest) are candidates too, after the frozen ones.
        if input.atHardLimit {
            held += running.filter { !$0.remote }.dropFirst().reversed()
        }
        guard !held.isEmpty, !running.isEmpty else { return }
        var released = 0.0
        func peak() -> Double {
            Self.runningPlan(input, running: running, horizon: h, slack: s.endSlack, released: released).peakBytes
        }
        var current = peak()
        let budget = Double(s.budget)
        let hard = Double(s.hardLimit)
        var stuck = input.atHardLimit
        for job in held {
            let alreadyPaged = job.frozen && job.pagedOutBytes > 0
            if s.canPageOut && !alreadyPaged {
                // Paged out once memory is needed: the running jobs' plan passes the budget (a page-out costs about
                // 3 ms of CPU per MiB, and a thaw soon after costs the job a fault per page).
                guard current > budget || stuck else { break }
                let running = !job.frozen && !decision.freeze.contains(job.id)
                // A job still faulting its pages back in holds little: at the limit, freezing it again stops its
                // demand; paging out is for what is resident.
                if running && stuck { decision.freeze.append(job.id) }
                guard job.rssBytes > 1 << 20 else {
                    if running && stuck { stuck = false }
                    continue
                }
                if running && !stuck { continue }
                decision.pageOut.append(job.id)
                released += Double(job.rssBytes)
                stuck = false
            } else {
                // Ended early: without swap, or where a page-out did not free what the job holds (the swap was
                // full, or smaller than the job), and the jobs left cannot finish beside it.
                guard current > hard || stuck else { break }
                if alreadyPaged && job.rssBytes <= 16 << 20 { continue }
                // Its memory is on its way out: ending it now would throw its work away for what comes anyway.
                if job.pageOutUnderWay {
                    released += Double(job.rssBytes)
                    current = peak()
                    continue
                }
                stuck = false
                guard job.evictable, input.now - lastEvict >= s.freezeIntervalSeconds else { continue }
                decision.evict.append(job.id)
                decision.freeze.removeAll { $0 == job.id }
                released += Double(job.rssBytes)
            }
            current = peak()
        }
        if !decision.evict.isEmpty {
            lastEvict = input.now
            reasons.append("end \(decision.evict.count) newest to run again")
        }
        if !decision.pageOut.isEmpty { reasons.append("page out \(decision.pageOut.count)") }
    }

    /// With swap, frozen jobs that stay resident can leave one job running while the others wait for memory that
    /// only the waiting jobs hold (a wave of jobs admitted on a history that was wrong, then frozen). When the oldest
    /// frozen job cannot be thawed beside them, the newest frozen ones are paged out, newest first, until it could:
    /// the build keeps its parallelism at the cost of a page-out (about 3 ms of CPU per MiB) instead of running
    /// one job at a time. Jobs already paged out, or on their way, are left alone.
    static func pageOutToThaw(frozen: [GovernorInput.RunningJob], plan: MemoryPlan, ahead: Double, budget: Double,
                              now: Double, horizon: Double, slack: Double, within: Double) -> [JobID] {
        guard let oldest = frozen.first, frozen.count >= 2 else { return [] }
        let item = oldest.planItem(now: now, horizon: horizon, slack: slack)
        var grows = oldest.growth(within: within, horizon: horizon)
        grows = min(grows, max(0, Double(oldest.expectedPeak(horizon: horizon)) - Double(oldest.holdingBytes)))
        grows += Double(oldest.holdingBytes - oldest.rssBytes)
        var released = 0.0
        var out: [JobID] = []
        for job in frozen.dropFirst().reversed() {
            if plan.adding(item, fromBase: Double(oldest.rssBytes) + released).peakBytes <= budget
                && ahead - released + grows <= budget { return out }
            guard job.pagedOutBytes == 0, !job.pageOutUnderWay, job.rssBytes > 1 << 20 else { continue }
            out.append(job.id)
            released += Double(job.rssBytes)
        }
        // Not enough even with all of them out: paging out would cost CPU and buy no thaw.
        let fits = plan.adding(item, fromBase: Double(oldest.rssBytes) + released).peakBytes <= budget
            && ahead - released + grows <= budget
        return fits ? out : []
    }

    /// Memory in use once every running job reaches its predicted peak.
    static func expectedTotal(_ input: GovernorInput, running: [GovernorInput.RunningJob], horizon: Double) -> Double {
        var total = Double(input.memoryUsedBytes)
        for job in running {
            total += max(0, Double(job.expectedPeak(horizon: horizon)) - Double(job.rssBytes))
        }
        return total
    }

    private mutating func lowerTarget(to value: Int, now: Double) {
        if value < target {
            target = max(1, value)
            lastLowered = now
        }
    }

    /// `jobgov ctl jobs N`: the user's new ceiling, which the governor works under from now on.
    /// A raise is the user's wish: the hold after an earlier lowering does not delay it (memory still bounds it).
    public mutating func setCeiling(_ value: Int) {
        if value > ceiling { lastLowered = -.infinity }
        ceiling = max(1, value)
        target = min(target, ceiling)
    }

    /// The budget (and the hard limit above it) from now on: a machine-wide `jobgov daemon` moves a build's share
    /// while it runs. The next decision plans against it; nothing else of the governor's state changes.
    public mutating func setBudget(_ budget: UInt64, hardLimit: UInt64) {
        settings.budget = budget
        settings.hardLimit = max(budget, hardLimit)
    }

    /// Whether `jobgov daemon` has this build yield to an older one (see `GovernorSettings.yieldsToOlderBuild`).
    public mutating func setYieldsToOlderBuild(_ yields: Bool) {
        settings.yieldsToOlderBuild = yields
    }

    /// The CPUs `jobgov daemon` gives this build (nil: all of them; see `GovernorSettings.cpuShare`).
    public mutating func setCPUShare(_ cpus: Double?) {
        settings.cpuShare = cpus
    }
}
