/// Thresholds and pacing of the governor. Every field is a flag (and a config-file key) of `jobgov run`.
public struct GovernorSettings: Sendable, Equatable {
    /// The most jobs: the user's `-jN`.
    public var maxJobs: Int
    /// The memory jobgov plans for; the hard limit sits a reserve above it.
    public var budget: UInt64
    /// Withhold tokens when the predicted memory of the running and next jobs would pass this share of the budget.
    public var memoryThreshold: Double = 0.85
    /// Freeze the newest job when memory in use passes this share of the budget.
    public var freezeThreshold: Double = 0.95
    /// Do not start more jobs than running ones (nor fewer than one per CPU) while the build keeps more than this
    /// share of all CPUs busy.
    public var cpuThreshold: Double = 0.90
    /// Do not start more jobs while block I/O takes longer than this per request, in seconds.
    public var ioLatencyThreshold: Double = 0.100
    /// Freeze the whole build when the machine's available memory falls below this share of its total.
    public var systemFreezeThreshold: Double = 0.03
    /// Thaw it when available memory is back above this share.
    public var systemThawThreshold: Double = 0.08
    public var cpus: Int
    /// Hysteresis: after lowering the target, wait this long before raising it again.
    public var raiseHoldSeconds: Double = 1.0
    /// Raising needs this much room beyond the job it would admit (a share of the budget), so that the target does not
    /// flip between two values as memory wobbles.
    public var raiseMargin: Double = 0.03
    /// At most one job frozen per this interval, at most one thawed per the other.
    public var freezeIntervalSeconds: Double = 0.1
    public var thawIntervalSeconds: Double = 0.5
    /// A job whose memory grew within this many seconds is taken to be still growing.
    public var growingSeconds: Double = 1.0
    /// A job growing past its prediction is expected to keep growing at its current rate for this long.
    public var growthHorizonSeconds: Double = 1.0
    /// What a job is assumed to need before anything is known (see `MemoryModel.defaultPrior`).
    public var priorJobPeakBytes: UInt64 = 0
    /// Freezing looks this far ahead at the jobs' present growth.
    public var freezeHorizonSeconds: Double = 0.5
    /// Where the kernel stops the build (the budget plus its reserve): frozen jobs' memory and the running jobs'
    /// plan must fit under it, or freezing cannot end well.
    public var hardLimit: UInt64
    /// A frozen job's memory can be paged out (swap or compressed RAM for the build), so freezing frees memory.
    public var canPageOut = false
    /// A job can be ended early and run again later (make, with jobgov-shell as its SHELL).
    public var canEvict = false
    /// A planned end is put this much later than what the same command took before.
    public var endSlack: Double = 1.25
    /// A job whose peak was never measured counts as young for this long (seconds run): while one is young and
    /// nothing can free memory (no page-out, no ending a job early), no further new job starts (see `jobsThatFit`).
    public var youngSeconds: Double = 1.0

    /// Start jobs of unknown size one at a time (each after the previous one has shown its growth for
    /// `youngSeconds`), as TCP's slow start probes an unknown path. `jobgov run` turns it on where neither paging
    /// out nor ending a job early can take memory back (ninja without swap): freezing is all there is there, and a
    /// wrong guess cannot be undone.
    public var slowStart = false

    public init(maxJobs: Int, budget: UInt64, cpus: Int, hardLimit: UInt64? = nil) {
        self.maxJobs = max(1, maxJobs)
        self.budget = budget
        self.cpus = max(1, cpus)
        self.hardLimit = max(budget, hardLimit ?? budget + MemorySize.reserve(forBudget: budget))
    }
}

/// What the governor sees at one tick. Built from a `Sample`, the job table and the memory model.
public struct GovernorInput: Sendable, Equatable {
    public struct RunningJob: Sendable, Equatable {
        public var id: JobID
        public var startedAt: Double
        public var rssBytes: UInt64
        public var peakBytes: UInt64
        /// The memory model's prediction of its peak.
        public var predictedPeakBytes: UInt64
        public var frozen: Bool
        /// Its memory grew recently.
        public var growing: Bool
        /// How fast its memory grows now, bytes per second.
        public var growthRate: Double
        /// How long it has run (frozen time not counted) and how long the same command ran before; the latter nil
        /// when it never ran.
        public var ranSeconds: Double
        public var runSeconds: Double?
        /// How the same command's memory grew before; nil when not known.
        public var shape: MemoryShape?
        /// What it held before its memory was paged out (0: not paged out): it comes back when it runs again.
        public var pagedOutBytes: UInt64 = 0
        /// It can be ended and run again later (its recipe runs under jobgov-shell).
        public var evictable = false
        /// Its peak was measured before (else `predictedPeakBytes` is a guess).
        public var peakKnown = true
        /// Seconds since its page-out was asked for (nil: none asked).
        public var pageOutAskedSecondsAgo: Double?

        /// Its page-out was asked for and has not had the time it takes: the memory is on its way out. A page-out
        /// moves about 160 MB/s on a 2-CPU machine with zram (half that is allowed for), in 32 MiB batches.
        public var pageOutUnderWay: Bool {
            guard frozen, pagedOutBytes > 0, rssBytes > 16 << 20, let ago = pageOutAskedSecondsAgo else { return false }
            return ago < 0.5 + Double(pagedOutBytes) / Self.slowestPageOutBytesPerSecond
        }
        static let slowestPageOutBytesPerSecond = 80.0 * 1_048_576

        public init(id: JobID, startedAt: Double, rssBytes: UInt64, peakBytes: UInt64, predictedPeakBytes: UInt64,
                    frozen: Bool = false, growing: Bool = false, growthRate: Double = 0,
                    ranSeconds: Double = 0, runSeconds: Double? = nil, shape: MemoryShape? = nil,
                    pagedOutBytes: UInt64 = 0, evictable: Bool = false, peakKnown: Bool = true) {
            self.peakKnown = peakKnown
            self.ranSeconds = ranSeconds
            self.runSeconds = runSeconds
            self.shape = shape
            self.pagedOutBytes = pagedOutBytes
            self.evictable = evictable
            self.id = id
            self.startedAt = startedAt
            self.rssBytes = rssBytes
            self.peakBytes = peakBytes
            self.predictedPeakBytes = predictedPeakBytes
            self.frozen = frozen
            self.growing = growing
            self.growthRate = growthRate
        }

        /// What the job is expected to reach: its prediction while it stays within it; once it has grown past it
        /// and still grows, a quarter more than it reached, or where its current growth takes it within `horizon`
        /// seconds if further. Growth past the prediction is what gives away a job the model knows nothing about
        /// (the links at the end of a first build); growth within it is already counted.
        func expectedPeak(horizon: Double) -> UInt64 {
            guard isSurprise else { return max(predictedPeakBytes, peakBytes) }
            return max(peakBytes + peakBytes / 4, holdingBytes + UInt64(max(0, growthRate * horizon)))
        }

        /// What it holds, or will hold again once its paged-out memory is back.
        var holdingBytes: UInt64 { max(rssBytes, pagedOutBytes) }

        /// The job in a memory plan made at `now`: growing along its measured shape to its expected peak by its
        /// expected end (put `slack` times later than what it took before). A job that outgrew its prediction, or
        /// runs longer than the same command did before, is one whose end is not known: it is held at its peak.
        func planItem(now: Double, horizon: Double, slack: Double = 1.25) -> MemoryPlan.Item {
            var end: Double?
            if !isSurprise, let run = runSeconds, ranSeconds < run {
                end = now + max(0.1, (run - ranSeconds) * slack)
            }
            return MemoryPlan.Item(bytes: Double(holdingBytes), peakBytes: Double(expectedPeak(horizon: horizon)),
                                   endsAt: end, shape: isSurprise ? nil : shape, ranSeconds: ranSeconds,
                                   runSeconds: runSeconds)
        }

        /// It still grows and has passed its prediction (by more than the wobble of a measured peak): the model
        /// does not know this job.
        var isSurprise: Bool { growing && peakBytes > predictedPeakBytes + predictedPeakBytes / 16 }

        /// How much it will grow within `seconds` at its present rate, but not past its expected peak unless it is a
        /// surprise (a job the model knows stops growing at its peak).
        func growth(within seconds: Double, horizon: Double) -> Double {
            let atRate = max(0, growthRate) * seconds
            if isSurprise { return atRate }
            return min(atRate, max(0, Double(expectedPeak(horizon: horizon)) - Double(rssBytes)))
        }

        /// A surprise with most of its growth still ahead of it: freezing it now stops that growth while it holds
        /// little.
        func isYoungSurprise(horizon: Double) -> Bool {
            isSurprise && 2 * rssBytes <= expectedPeak(horizon: horizon)
        }
    }

    public var now: Double
    /// The build's memory that cannot simply be dropped: usage less inactive page cache.
    public var memoryUsedBytes: UInt64
    public var jobs: [RunningJob]
    /// The memory model's guess for the next job to start (a high percentile: the margin for one surprise).
    public var nextJobPeakBytes: UInt64
    /// The typical job's peak (a mean): what each further new job is counted at.
    public var typicalJobPeakBytes: UInt64?
    /// The peaks of the jobs expected to start next, in order (from the history's record of the order an earlier
    /// build started them); empty when not known.
    public var upcomingJobPeaksBytes: [UInt64] { upcomingJobs.map(\.peakBytes) }
    /// The same jobs with how long each ran and how its memory grew, where the history knows.
    public var upcomingJobs: [UpcomingJob]
    /// How this build's finished jobs typically ran (`MemoryModel.typicalJob`), for new jobs the history does not
    /// name, where a wrong admission can be undone.
    public var typicalJob: UpcomingJob?
    /// The machine's available and total memory (MemAvailable, MemTotal), when known.
    public var systemAvailableBytes: UInt64?
    public var systemTotalBytes: UInt64?
    /// The build's CPU use since the last tick as a share of all CPUs (0...1).
    public var cpuBusy: Double?
    /// Milliseconds-per-request average of block I/O since the last tick, in seconds.
    public var ioLatencySeconds: Double?
    /// Tasks of the build wait at its hard limit (the OOM killer held off): the plan was wrong.
    public var atHardLimit = false

    public init(now: Double, memoryUsedBytes: UInt64, jobs: [RunningJob], nextJobPeakBytes: UInt64,
                typicalJobPeakBytes: UInt64? = nil, upcomingJobPeaksBytes: [UInt64] = [],
                upcomingJobs: [UpcomingJob]? = nil, typicalJob: UpcomingJob? = nil,
                systemAvailableBytes: UInt64? = nil, systemTotalBytes: UInt64? = nil, cpuBusy: Double? = nil,
                ioLatencySeconds: Double? = nil, atHardLimit: Bool = false) {
        self.atHardLimit = atHardLimit
        self.typicalJobPeakBytes = typicalJobPeakBytes
        self.upcomingJobs = upcomingJobs ?? upcomingJobPeaksBytes.map { UpcomingJob(peakBytes: $0) }
        self.typicalJob = typicalJob
        self.now = now
        self.memoryUsedBytes = memoryUsedBytes
        self.jobs = jobs
        self.nextJobPeakBytes = nextJobPeakBytes
        self.systemAvailableBytes = systemAvailableBytes
        self.systemTotalBytes = systemTotalBytes
        self.cpuBusy = cpuBusy
        self.ioLatencySeconds = ioLatencySeconds
    }
}

/// The rungs of the escalation ladder, lowest first.
public enum Rung: Int, Sendable, Comparable, CustomStringConvertible {
    /// All the jobs asked for may run.
    case run
    /// Fewer tokens than asked for.
    case withhold
    /// Past the budget: on cgroup v2 the kernel throttles the build's growth there (memory.high is the budget).
    case throttle
    /// Jobs are frozen, newest first, never the oldest.
    case freezeJobs
    /// The whole build is frozen while the machine as a whole runs out of memory.
    case freezeBuild

    public static func < (a: Rung, b: Rung) -> Bool { a.rawValue < b.rawValue }
    public var description: String {
        switch self {
        case .run: "run"
        case .withhold: "withhold"
        case .throttle: "throttle"
        case .freezeJobs: "freeze-jobs"
        case .freezeBuild: "freeze-build"
        }
    }
}

public struct GovernorDecision: Sendable, Equatable {
    /// Jobs allowed at once (tokens + the implicit slot).
    public var targetJobs: Int
    public var rung: Rung
    public var freeze: [JobID] = []
    public var thaw: [JobID] = []
    /// Frozen jobs (or jobs frozen by this decision) whose memory is to be paged out.
    public var pageOut: [JobID] = []
    /// Jobs to end now and run again later (their recipe asks; see `admits`).
    public var evict: [JobID] = []
    /// Whether the whole build should be frozen (nil: leave it as it is).
    public var buildFrozen: Bool
    /// Memory is past the budget, where cgroup v2's memory.high throttles the build.
    public var throttle: Bool
    /// Why, in a few words, for the trace and for messages.
    public var reason: String
    /// Nothing is near a limit: even if every job allowed ran at its predicted peak, memory would stay under half
    /// the budget. The caller may then look less often (reading /proc costs CPU the build could use).
    public var calm: Bool = false
}

/// The feedback loop's policy: sample in, decision out. Pure; its clock is the input's `now`.
///
/// Memory admission is Buck2's headroom rule applied to tokens: running jobs are expected to reach their predicted
/// peaks, and a new job is admitted while what is in use, plus what the running jobs still need, plus the next job's
/// predicted peak stays under `memoryThreshold` of the budget. PSI is not the memory signal, because without swap a
/// cgroup at its limit shows almost no memory stall (kernel-facts.md); it warns too late. Lowering acts at once,
/// raising waits `raiseHoldSeconds` after the last lowering and needs a margin, so the target does not oscillate.
/// Freezing stops growth but frees nothing, so it starts while room is left (freezeThreshold < 1), with the newest
/// job, so that older jobs finish and release memory; the oldest job always runs so the build always progresses.
public struct Governor: Sendable {
    public let settings: GovernorSettings
    public private(set) var target: Int
    /// The most jobs now: `-jN`, or what `jobgov ctl jobs N` set since.
    public private(set) var ceiling: Int
    private var lastLowered: Double = -.infinity
    private var lastFreeze: Double = -.infinity
    private var lastThaw: Double = -.infinity
    private var lastEvict: Double = -.infinity
    public private(set) var buildFrozen = false

    public init(settings: GovernorSettings, initialTarget: Int? = nil) {
        self.settings = settings
        self.ceiling = settings.maxJobs
        self.target = max(1, min(settings.maxJobs, initialTarget ?? settings.maxJobs))
    }

    /// How many jobs fit: the running ones oldest first, then new ones, while the memory plan's highest point stays
    /// under `limit` bytes. Memory outside the running jobs (make, page cache, frozen jobs) is held as it is.
    static func jobsThatFit(_ input: GovernorInput, running: [GovernorInput.RunningJob], limit: Double, maxJobs: Int,
                            horizon: Double, slack: Double = 1.25, cautious: Bool = false,
                            youngSeconds: Double = 1, undoable: Bool = false) -> Int {
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
        var index = 0
        // Slow start while nothing can take memory back: one job of unknown size at a time.
        let probing = cautious && running.contains { !$0.peakKnown && $0.ranSeconds < youngSeconds }
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
                                      youngSeconds: s.youngSeconds, undoable: s.canPageOut || s.canEvict)
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
        if let busy = input.cpuBusy, busy > s.cpuThreshold, wanted > max(jobs.count, s.cpus) {
            wanted = max(jobs.count, s.cpus)
            reasons.append("cpu")
        }
        if let latency = input.ioLatencySeconds, latency > s.ioLatencyThreshold, wanted > max(jobs.count, s.cpus) {
            wanted = max(jobs.count, s.cpus)
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
                                              undoable: s.canPageOut || s.canEvict) + frozen.count
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
        if let oldest = jobs.first, oldest.frozen {
            // The jobs older than it have ended: the oldest job always runs, whatever memory says, or the build
            // would wait for nothing (memory in use may sit above the freeze threshold with every job frozen).
            decision.thaw = [oldest.id]
            lastThaw = input.now
            reasons.append("thaw oldest")
        } else if overUsed || nearFuture > budget || plan.peakBytes > budget {
            if running.count >= 2 && input.now - lastFreeze >= s.freezeIntervalSeconds {
                // The newest first, never the oldest; several at once when together they grow faster than the
                // room left (a phase of heavy jobs that all started together), each of them while still small.
                var ahead = nearFuture
                var usedSettled = !overUsed
                var kept = running
                var toFreeze: [JobID] = []
                for job in running.dropFirst().reversed() {
                    let pressing = ahead > budget || !usedSettled
                    let overPlan = Self.runningPlan(input, running: kept, horizon: h, slack: slack).peakBytes > budget
                    if !pressing && !overPlan { break }
                    if !pressing && !job.isYoungSurprise(horizon: h) { continue }
                    toFreeze.append(job.id)
                    kept.removeAll { $0.id == job.id }
                    ahead -= job.growth(within: s.freezeHorizonSeconds, horizon: h)
                    usedSettled = usedSettled || used - Double(job.rssBytes) <= s.freezeThreshold * budget
                }
                if !toFreeze.isEmpty {
                    decision.freeze = toFreeze
                    lastFreeze = input.now
                    reasons.append(toFreeze.count == 1 ? "freeze newest" : "freeze \(toFreeze.count) newest")
                }
            }
        } else if !frozen.isEmpty, input.now - lastThaw >= s.thawIntervalSeconds,
                  input.now - lastFreeze >= s.thawIntervalSeconds {
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
            }
        }
        resolveHeldMemory(input, jobs: jobs, decision: &decision, reasons: &reasons)
        if !frozen.isEmpty || !decision.freeze.isEmpty { decision.rung = .freezeJobs }
        else if decision.throttle { decision.rung = .throttle }
        decision.targetJobs = target
        decision.reason = reasons.joined(separator: ",")
        // Calm is judged with the prior as well: the next job may belong to a heavier phase than any seen yet.
        let unstarted = Double(max(0, target - running.count)) * Double(max(input.nextJobPeakBytes, s.priorJobPeakBytes))
        decision.calm = frozen.isEmpty && decision.rung == .run && predictedRunning + unstarted < 0.5 * budget
        return decision
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
            held += running.dropFirst().reversed()
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
}
