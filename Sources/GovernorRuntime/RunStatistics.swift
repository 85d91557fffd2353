import JobgovCore

/// What the end-of-run summary reports.
public struct RunStatistics: Sendable {
    public var targetMin = Int.max
    public var targetMax = 0
    public var targetChanges = 0
    private var lastTarget: Int?
    private var lastAt: Double = 0
    /// Target × seconds, for the time-weighted average.
    private var targetSeconds: Double = 0
    public var highestRung: Rung = .run
    public var peakMemory: UInt64 = 0
    public var oomKills = 0
    public var jobFreezes = 0
    public var buildFreezes = 0
    public var pageOuts = 0
    public var pagedOutBytes: UInt64 = 0
    /// Jobs jobgov ended early to run them again.
    public var evictions = 0
    public var frozenSeconds: Double = 0
    public var jobsFinished = 0
    /// Finished jobs that compiled on a helper, and those that ran here (fallbacks included); the fallbacks.
    public var remoteJobs = 0
    public var localJobs = 0
    public var fellBackJobs = 0
    public var largest: [FinishedJob] = []
    public var oomVictims: [String] = []
    public var reruns = 0
    /// Time the build's tasks spent in memory reclaim (eBPF), nil without the observers.
    public var reclaimStallSeconds: Double?
    public var events: [String] = []

    public init() {}

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

    public var averageTarget: Double? { lastAt > 0 ? targetSeconds / lastAt : nil }

    mutating func record(_ job: FinishedJob) {
        jobsFinished += 1
        if job.ranRemotely { remoteJobs += 1 } else { localJobs += 1 }
        if job.fellBack { fellBackJobs += 1 }
        frozenSeconds += job.frozenSeconds
        largest.append(job)
        largest.sort { $0.peakBytes > $1.peakBytes }
        if largest.count > 5 { largest.removeLast() }
    }
}
