import JobgovCore

/// One reading of the build, everything the governor's loop needs from the kernel in one tick.
public struct BuildReading: Sendable {
    /// The build's memory that cannot simply be dropped: usage less inactive page cache.
    public var memoryUsedBytes: UInt64 = 0
    /// The cgroup's usage, its high-water mark and its hard limit, when known.
    public var memoryUsageBytes: UInt64 = 0
    public var memoryPeakBytes: UInt64?
    public var memoryLimitBytes: UInt64?
    /// The build's OOM kills since its cgroup was made (nil: not known).
    public var oomKills: UInt64?
    /// Tasks of the build wait at the hard limit with the OOM killer held off (cgroup v1's `under_oom`).
    public var underOOM = false
    /// The machine's available and total memory.
    public var systemAvailableBytes: UInt64?
    public var systemTotalBytes: UInt64?
    /// The build's CPU use since the last reading as a share of all CPUs; the slowest disk's request latency.
    public var cpuBusy: Double?
    public var ioLatencySeconds: Double?
    /// PSI some avg10 of memory and CPU, for the trace.
    public var memoryPressure: Double = 0
    public var cpuPressure: Double = 0
    /// The build's processes.
    public var processes: [ProcessObservation] = []

    public init() {}
}

/// What the kernel tells between readings (eBPF events).
public enum BuildEvent: Sendable, Equatable {
    /// A process of the build ended; its exact high-water mark.
    case exited(pid: Int32, peakBytes: UInt64)
    /// The OOM killer chose a process of the build; `ancestors` are its parent, grandparent and so on as far as
    /// known (a compiler proper started by its driver after the last reading is found through them).
    case oomVictim(pid: Int32, command: String, ancestors: [Int32] = [])
}

/// The sensing side of the loop: the kernel in `jobgov run`, a simulated build in the simulator.
public protocol BuildSensing: AnyObject {
    func read() -> BuildReading
    /// Events since the last call (empty without eBPF).
    func events() -> [BuildEvent]
    /// The argument vector of a process that starts a new job.
    func arguments(of pid: Int32) -> [String]?
    /// The build's OOM kills so far, read now (nil: not known).
    func oomKills() -> UInt64?
    /// Whether OOM victims are reported as events (then a failure without one is not an OOM kill).
    var namesOOMVictims: Bool { get }
}

/// The acting side of the loop. Every method reports a problem as a message and leaves the build as it was.
public protocol BuildActuating: AnyObject {
    /// The OOM killer is held off for the build (cgroup v1's memory.oom_control), so the loop decides when to let it act.
    var holdsOOMKiller: Bool { get }
    func freeze(_ job: Job) -> String?
    func thaw(_ job: Job) -> String?
    /// Processes a frozen job started while it was being frozen join it.
    func keepFrozen(_ job: Job)
    /// The job ended: whatever was made for it goes.
    func jobEnded(_ id: JobID)
    /// Freezes or thaws the whole build; returns what was done beside it, for a message, or the problem.
    func setBuildFrozen(_ frozen: Bool) -> Result<String, ActuatorProblem>
    func setOOMKiller(enabled: Bool) -> Bool
    /// Pages a frozen job's memory out; the bytes it held before, or the problem.
    func pageOut(_ job: Job) -> Result<UInt64, ActuatorProblem>
    /// Ends a job's processes but its root (jobgov-shell, which asks to run it again) and lets the root run.
    func end(_ job: Job) -> String?
    /// Thaws everything and gives back what was changed, at the end of the build.
    func finish()
}

public struct ActuatorProblem: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
