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
        /// No job of its kind has finished, in this build or the history, while jobs of other kinds have: its memory
        /// is not even guessed from others like it (`CommandKind`).
        public var newKind = false
        /// It compiles on a helper (distcc, icecc, sccache): what it holds here is a client's and a preprocessor's,
        /// predicted as remote jobs' footprint; it is never frozen (that would stall a helper, and free little).
        public var remote = false
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
    /// The jobs started lately compile remotely and none fell back: new jobs are expected to be remote too, each
    /// planned at `remoteJobPeakBytes`, while the helpers have slots free.
    public var nextJobRemote = false
    public var remoteJobPeakBytes: UInt64 = 0

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
