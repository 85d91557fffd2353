/// Thresholds and pacing of the governor. The thresholds are settings of `jobgov run` (flags and config-file keys,
/// with their defaults in `RunSettings`); the rest is set by `jobgov run` from what the machine and the tool allow.
public struct GovernorSettings: Sendable, Equatable {
    /// The most jobs: the user's `-jN`.
    public var maxJobs: Int
    /// The memory jobgov plans for; the hard limit sits a reserve above it.
    public var budget: UInt64
    /// Withhold tokens when the predicted memory of the running and next jobs would pass this share of the budget.
    public var memoryThreshold: Double = RunSettings.memoryThreshold.defaultValue.share
    /// Freeze the newest job when memory in use passes this share of the budget.
    public var freezeThreshold: Double = RunSettings.freezeThreshold.defaultValue.share
    /// Do not start more jobs than running ones (nor fewer than one per CPU) while the build keeps more than this
    /// share of all CPUs busy.
    public var cpuThreshold: Double = RunSettings.cpuThreshold.defaultValue.share
    /// Do not start more jobs while block I/O takes longer than this per request, in seconds.
    public var ioLatencyThreshold: Double = RunSettings.ioLatency.defaultValue.seconds
    /// Freeze the whole build when the machine's available memory falls below this share of its total.
    public var systemFreezeThreshold: Double = 0.03
    /// Thaw it when available memory is back above this share.
    public var systemThawThreshold: Double = 0.08
    public var cpus: Int
    /// The CPUs this build may count on when `jobgov daemon` shares the machine between builds (see `CPUSharing`):
    /// the CPU rule measures the build's use against this share, not all `cpus`. nil: all of them.
    public var cpuShare: Double?
    /// `jobgov daemon` says this build must yield to an older one whose oldest job still has to grow into memory
    /// that is not free (see `BudgetSharing.yielding`): then even the build's oldest job is frozen while it is still
    /// small, and stays frozen until the daemon lifts this. Alone (false) the oldest job always runs.
    public var yieldsToOlderBuild = false
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

    /// Distributed compiles (distcc, icecc, sccache): how many remote jobs the helpers take at once (distcc's
    /// `DISTCC_HOSTS` slots); 0: as many as `maxJobs`, the remote width. Remote jobs are planned at what they hold
    /// here and do not count against the CPU rule (see `GovernorInput.RunningJob.remote`).
    public var remoteSlots = 0

    public init(maxJobs: Int, budget: UInt64, cpus: Int, hardLimit: UInt64? = nil) {
        self.maxJobs = max(1, maxJobs)
        self.budget = budget
        self.cpus = max(1, cpus)
        self.hardLimit = max(budget, hardLimit ?? budget + MemorySize.reserve(forBudget: budget))
    }
}
