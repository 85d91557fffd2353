/// The CPU signals of one governor tick that say whether the build is CPU-bound.
public struct CPUSignals: Sendable, Equatable {
    /// The build's CPU time since the last tick, in CPUs (2.0: two CPUs' worth).
    public var cpusBusy: Double?
    /// Jobs of the build that can run (not frozen).
    public var runningJobs: Int
    /// Share of the interval (0...1) in which some task of the build waited for a CPU (its cgroup's CPU PSI `some`).
    public var cpuStall: Double?
    /// The build's run-queue wait since the last tick, 90th percentile, in seconds (eBPF; nil without it).
    public var runQueueP90Seconds: Double?

    public init(cpusBusy: Double?, runningJobs: Int, cpuStall: Double? = nil, runQueueP90Seconds: Double? = nil) {
        self.cpusBusy = cpusBusy
        self.runningJobs = runningJobs
        self.cpuStall = cpuStall
        self.runQueueP90Seconds = runQueueP90Seconds
    }
}

/// When to raise the CPU's performance for a build and when to give it back. Pure: signals and a clock in, an action
/// out; the caller writes cpufreq.
///
/// A build is CPU-bound when the CPU is what its jobs wait for: the jobs that can run keep about one CPU each busy
/// (a single-threaded link counts as much as sixteen compiles on sixteen CPUs), or they are on a CPU or queued for
/// one most of the time (other work shares the CPUs and the build gets less than it could use: its cgroup's CPU PSI
/// says how long it queued, the run-queue latency that it did). A build waiting on memory (frozen jobs do not
/// count), I/O or a slow tool is not, and a higher clock would only cost power. It is raised after `raiseAfterSeconds` of being bound and lowered after `lowerAfterSeconds` of not being
/// bound, so that the short gaps between a build's steps do not switch it back and forth.
public struct BoostPolicy: Sendable {
    public struct Settings: Sendable, Equatable {
        /// CPUs busy per runnable job (up to one per CPU) at or above which the build is CPU-bound.
        public var busyPerJob = 0.80
        /// With the run-queue latency alone (no PSI share), the share per job that is enough while tasks queue.
        public var contendedBusyPerJob = 0.25
        public var stallThreshold = 0.10
        public var runQueueThresholdSeconds = 0.004
        public var raiseAfterSeconds = 2.0
        public var lowerAfterSeconds = 10.0
        public var cpus: Int

        public init(cpus: Int) { self.cpus = max(1, cpus) }
    }

    public enum Action: Sendable, Equatable {
        case raise
        case lower
    }

    public let settings: Settings
    public private(set) var raised = false
    /// Since when the build has been bound (or not bound) without a break; nil when it is not (or is).
    private var boundSince: Double?
    private var freeSince: Double?

    public init(settings: Settings) { self.settings = settings }

    /// Whether these signals say the build is CPU-bound now.
    public static func isCPUBound(_ s: CPUSignals, settings: Settings) -> Bool {
        guard let busy = s.cpusBusy, s.runningJobs > 0 else { return false }
        let perJob = busy / Double(min(s.runningJobs, settings.cpus))
        if perJob >= settings.busyPerJob { return true }
        // On a shared machine a CPU-bound build of 2 jobs got 0.2 to 0.5 of a CPU each here, its tasks queued 75-100%
        // of the time: time on a CPU plus time queued for one is what counts then.
        if let stall = s.cpuStall, stall >= settings.stallThreshold, perJob + stall >= settings.busyPerJob { return true }
        return (s.runQueueP90Seconds ?? 0) >= settings.runQueueThresholdSeconds && perJob >= settings.contendedBusyPerJob
    }

    /// One tick at time `now` (seconds, monotonic): nil, or what to do.
    public mutating func observe(_ s: CPUSignals, now: Double) -> Action? {
        // No reading (the first tick): neither bound nor free; the timers keep running.
        guard s.cpusBusy != nil else { return nil }
        if Self.isCPUBound(s, settings: settings) {
            freeSince = nil
            let since = boundSince ?? now
            boundSince = since
            if !raised && now - since >= settings.raiseAfterSeconds {
                raised = true
                return .raise
            }
        } else {
            boundSince = nil
            let since = freeSince ?? now
            freeSince = since
            if raised && now - since >= settings.lowerAfterSeconds {
                raised = false
                return .lower
            }
        }
        return nil
    }

    /// The build ended: give back whatever is raised.
    public mutating func finish() -> Action? {
        boundSince = nil
        freeSince = nil
        guard raised else { return nil }
        raised = false
        return .lower
    }
}
