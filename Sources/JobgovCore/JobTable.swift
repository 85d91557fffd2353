/// One process of the build as read at one instant (from /proc, or from BPF events).
public struct ProcessObservation: Sendable, Equatable {
    public var pid: Int32
    public var parent: Int32
    /// The kernel's short name (`comm`), e.g. `make`, `cc1plus`, `sh`.
    public var name: String
    /// Its start time in clock ticks since boot: with the pid, it tells a process from a later one that reused
    /// the pid.
    public var startTicks: UInt64
    /// Resident memory now and its high-water mark.
    public var rssBytes: UInt64
    public var peakRSSBytes: UInt64
    /// The argument vector; only needed for processes that start a job (read once per new job).
    public var arguments: [String]?
    /// Memory of it paged out to swap (read only for jobs jobgov paged out): still the job's memory.
    public var swapBytes: UInt64 = 0

    public init(pid: Int32, parent: Int32, name: String, startTicks: UInt64 = 0, rssBytes: UInt64 = 0,
                peakRSSBytes: UInt64 = 0, arguments: [String]? = nil) {
        self.pid = pid
        self.parent = parent
        self.name = name
        self.startTicks = startTicks
        self.rssBytes = rssBytes
        self.peakRSSBytes = max(peakRSSBytes, rssBytes)
        self.arguments = arguments
    }
}

/// Which job is which: a job is a process tree started by a jobserver client (make, ninja, cargo) that holds no
/// client itself. A recipe `cd sub && $(MAKE)` is therefore not a job, the sub-make's own recipes are.
public struct JobID: Hashable, Sendable, CustomStringConvertible {
    public var pid: Int32
    public var startTicks: UInt64
    public init(pid: Int32, startTicks: UInt64) {
        self.pid = pid
        self.startTicks = startTicks
    }
    public var description: String { "\(pid)" }
}

public struct Job: Sendable, Equatable {
    public var id: JobID
    /// What the job runs: the shell's command for `sh -c CMD`, else the argument vector joined. The memory model's key.
    public var command: String
    public var startedAt: Double
    /// The short name of its first process (`jobgov-shell` when make runs its recipes through jobgov's shell).
    public var rootName: String = ""
    /// The processes of the job now (its root first).
    public var pids: [Int32]
    /// Resident memory of all its processes now, and the most seen (also from each process's own high-water mark).
    public var rssBytes: UInt64
    public var peakBytes: UInt64
    /// When its memory last grew by more than a little: a job still growing will grow further.
    public var lastGrowthAt: Double
    /// How fast its memory grows, bytes per second (a moving average over readings; kept while it is frozen).
    public var growthRate: Double = 0
    var lastReadingAt: Double
    public var frozen: Bool = false
    /// Seconds spent frozen so far (the current freeze not included).
    public var frozenSeconds: Double = 0
    public var frozenSince: Double?
    /// Its memory was paged out while frozen: what it held before (it comes back as the job touches it after a thaw).
    public var pagedOutBytes: UInt64 = 0
    /// When its page-out was asked for; nil once it is thawed (the page-out stops there).
    public var pageOutAskedAt: Double?
    /// Of its memory, how much is in swap now; and whether any ever was seen there.
    public var swappedBytes: UInt64 = 0
    var sawSwap = false
    /// When its memory first reached each new high (seconds run, frozen time not counted), for its memory shape.
    public var readings: [MemoryReading] = []
    /// Whether it compiles on a distcc, icecc or sccache helper (see `RemoteEvidence`).
    public var remote = RemoteEvidence()

    /// Seconds spent frozen by `now`, the current freeze included.
    public func frozenTime(at now: Double) -> Double { frozenSeconds + (frozenSince.map { now - $0 } ?? 0) }
    /// Seconds it has run by `now`, frozen time not counted.
    public func activeSeconds(at now: Double) -> Double { max(0, now - startedAt - frozenTime(at: now)) }

    /// Notes a new high: kept when it is 3% above the last one kept (a few dozen points for any job).
    mutating func noteReading(bytes: UInt64, now: Double) {
        if let last = readings.last, bytes < last.bytes + last.bytes / 33 + 1 { return }
        readings.append(MemoryReading(seconds: activeSeconds(at: now), bytes: bytes))
    }
}

public struct MemoryReading: Sendable, Equatable {
    public var seconds: Double
    public var bytes: UInt64
    public init(seconds: Double, bytes: UInt64) {
        self.seconds = seconds
        self.bytes = bytes
    }
}

public struct FinishedJob: Sendable, Equatable {
    public var command: String
    public var startedAt: Double
    public var endedAt: Double
    public var peakBytes: UInt64
    public var frozenSeconds: Double
    /// Its memory at the last reading before it ended (what an OOM kill found it at).
    public var lastRSSBytes: UInt64 = 0
    /// How its memory grew, when the readings tell.
    public var shape: MemoryShape?
    /// It compiled on a helper to its end (`ranRemotely`), or started as a remote job and compiled here (`fellBack`).
    public var ranRemotely = false
    public var fellBack = false
    public var seconds: Double { endedAt - startedAt }

    public init(command: String, startedAt: Double, endedAt: Double, peakBytes: UInt64, frozenSeconds: Double,
                lastRSSBytes: UInt64 = 0, shape: MemoryShape? = nil) {
        self.lastRSSBytes = lastRSSBytes
        self.shape = shape
        self.command = command
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.peakBytes = peakBytes
        self.frozenSeconds = frozenSeconds
    }
}

public struct JobTable: Sendable {
    public private(set) var jobs: [JobID: Job] = [:]
    /// Short names of jobserver clients: their children are jobs.
    public var clientNames = Set(ClientKind.jobserverClients.keys)
    /// A remote job holding more than this here is taken to compile here (a fallback).
    public var remoteFootprintLimit: UInt64 = 512 << 20
    /// Whether a compiler proper (by pid and start time) compiles, from its arguments: read once per process.
    var compilerCompiles: [JobID: Bool] = [:]

    public init() {}

    /// Running jobs, oldest first.
    public var running: [Job] { jobs.values.sorted { ($0.startedAt, $0.id.pid) < ($1.startedAt, $1.id.pid) } }

    /// Takes one reading of the build's processes; returns the jobs that ended since the last one.
    /// - Parameters:
    ///   - launched: the process jobgov started (a client even if its name is not a known one, e.g. a wrapper script).
    ///   - arguments: called for a process that starts a new job, to read its argument vector.
    public mutating func update(_ processes: [ProcessObservation], launched: Int32, now: Double,
                                arguments: (Int32) -> [String]? = { _ in nil }) -> [FinishedJob] {
        var byPID: [Int32: ProcessObservation] = [:]
        var kids: [Int32: [Int32]] = [:]
        for p in processes {
            byPID[p.pid] = p
            kids[p.parent, default: []].append(p.pid)
        }
        // Names are hashed once per process per reading, not at every question.
        var clients = Set<Int32>()
        for p in processes where p.pid == launched || clientNames.contains(p.name) { clients.insert(p.pid) }
        func isClient(_ p: ProcessObservation) -> Bool { clients.contains(p.pid) }
        // A subtree that holds a client is not a job: memoized bottom-up over the (acyclic) parent links.
        var holdsClient: [Int32: Bool] = [:]
        func containsClient(_ pid: Int32) -> Bool {
            if let known = holdsClient[pid] { return known }
            var stack = [pid]
            var found = false
            while let next = stack.popLast(), !found {
                if let p = byPID[next], isClient(p) { found = true }
                stack.append(contentsOf: kids[next] ?? [])
            }
            holdsClient[pid] = found
            return found
        }
        func subtree(_ pid: Int32) -> [Int32] {
            var out: [Int32] = []
            var stack = [pid]
            while let next = stack.popLast() {
                out.append(next)
                stack.append(contentsOf: kids[next] ?? [])
            }
            return out
        }

        var seen = Set<JobID>()
        for p in processes {
            guard let parent = byPID[p.parent], isClient(parent), !isClient(p), !containsClient(p.pid) else { continue }
            let id = JobID(pid: p.pid, startTicks: p.startTicks)
            seen.insert(id)
            let members = subtree(p.pid)
            var rss: UInt64 = 0
            var swapped: UInt64 = 0
            var peakOfOne: UInt64 = 0
            for m in members {
                guard let o = byPID[m] else { continue }
                rss += o.rssBytes
                swapped += o.swapBytes
                peakOfOne = max(peakOfOne, o.peakRSSBytes)
            }
            // What the job holds, resident or paged out: its size for the model (a paged-out job that is thawed
            // faults its pages back in only as it touches them).
            let held = rss + swapped
            if var job = jobs[id] {
                // Growth is new demand: a thawed job faulting its paged-out memory back in grows its resident set
                // but asks for nothing it did not hold before (taken for growth, it was frozen again at once).
                let before = max(job.rssBytes + job.swappedBytes, job.pagedOutBytes)
                let demand = max(held, job.pagedOutBytes)
                if demand > before + max(before / 50, 1 << 20) { job.lastGrowthAt = now }
                let dt = now - job.lastReadingAt
                if dt > 0 && !job.frozen {
                    let rate = (Double(demand) - Double(before)) / dt
                    // Weighted towards the latest reading: a compiler's growth comes in bursts.
                    job.growthRate = max(0, 0.5 * job.growthRate + 0.5 * rate)
                }
                job.lastReadingAt = now
                job.rssBytes = rss
                job.swappedBytes = swapped
                job.peakBytes = max(job.peakBytes, held, peakOfOne)
                job.pids = members
                // A paged-out job is whole again once nothing of it is left in swap (or, where swap is not read,
                // once it holds what it held before).
                if job.pagedOutBytes > 0 && !job.frozen && (rss >= job.pagedOutBytes || (swapped == 0 && job.sawSwap)) {
                    job.pagedOutBytes = 0
                }
                if swapped > 0 { job.sawSwap = true }
                if !job.frozen { job.noteReading(bytes: held, now: now) }
                observeRemote(&job, members: members.compactMap { byPID[$0] }, arguments: arguments)
                jobs[id] = job
            } else {
                let command = Self.command(of: p.arguments ?? arguments(p.pid) ?? [p.name])
                var job = Job(id: id, command: command, startedAt: now, pids: members, rssBytes: rss,
                              peakBytes: max(rss, peakOfOne), lastGrowthAt: now, lastReadingAt: now)
                job.rootName = p.name
                job.noteReading(bytes: rss, now: now)
                job.remote = RemoteEvidence(client: RemoteClient.named(in: command))
                observeRemote(&job, members: members.compactMap { byPID[$0] }, arguments: arguments)
                jobs[id] = job
            }
        }
        var finished: [FinishedJob] = []
        // In the order they started (pid for a tie), not the dictionary's, which changes from one process to the next.
        let gone = jobs.filter { !seen.contains($0.key) }.sorted {
            ($0.value.startedAt, $0.key.pid) < ($1.value.startedAt, $1.key.pid)
        }
        for (id, job) in gone {
            jobs[id] = nil
            let frozen = job.frozenTime(at: now)
            let ran = job.activeSeconds(at: now)
            let shape = MemoryShape.measured(job.readings.map { ($0.seconds, $0.bytes) }, peak: job.peakBytes,
                                             runSeconds: ran)
            var ended = FinishedJob(command: job.command, startedAt: job.startedAt, endedAt: now,
                                    peakBytes: job.peakBytes, frozenSeconds: frozen, lastRSSBytes: job.rssBytes,
                                    shape: shape)
            ended.ranRemotely = job.remote.isRemote
            ended.fellBack = job.remote.fellBack && job.remote.wasRemote
            finished.append(ended)
        }
        if !compilerCompiles.isEmpty {
            let alive = Set(processes.map { JobID(pid: $0.pid, startTicks: $0.startTicks) })
            compilerCompiles = compilerCompiles.filter { alive.contains($0.key) }
        }
        return finished
    }

    /// A process's exact high-water mark at its exit (from BPF): raises the peak of the job it belonged to, even
    /// for a spike between two readings.
    public mutating func notePeak(pid: Int32, bytes: UInt64) {
        guard let id = jobs.first(where: { $0.value.pids.contains(pid) })?.key else { return }
        jobs[id]!.peakBytes = max(jobs[id]!.peakBytes, bytes)
    }

    /// The running job a process belongs to.
    public func job(containing pid: Int32) -> Job? {
        jobs.values.first { $0.pids.contains(pid) }
    }

    /// Its memory was paged out (bytes it held before), or came back (0).
    public mutating func setPagedOut(_ id: JobID, bytes: UInt64, now: Double? = nil) {
        jobs[id]?.pagedOutBytes = bytes
        jobs[id]?.pageOutAskedAt = bytes > 0 ? now : nil
    }

    public mutating func setFrozen(_ id: JobID, _ frozen: Bool, now: Double) {
        guard var job = jobs[id], job.frozen != frozen else { return }
        job.frozen = frozen
        if frozen {
            job.frozenSince = now
        } else {
            // A thaw stops a page-out where it is.
            job.pageOutAskedAt = nil
            // The rate it grew at before the freeze is stale: the thaw planned it at a quarter above what it
            // reached, and its next readings tell whether it still grows. Kept, it froze the job again at once.
            job.growthRate = 0
            if let since = job.frozenSince {
                job.frozenSeconds += now - since
                job.frozenSince = nil
            }
        }
        jobs[id] = job
    }

    /// The memory model's key for a job: `sh -c 'cc -c a.c'` is keyed by `cc -c a.c`.
    public static func command(of arguments: [String]) -> String {
        var args = arguments
        if args.count >= 3, let shell = args.first?.split(separator: "/").last,
           ["sh", "bash", "dash", "zsh", "ksh", "jobgov-shell"].contains(String(shell)),
           args[1] == "-c" || args[1] == "-ec" {
            args = [args[2]]
        }
        let joined = args.joined(separator: " ")
        return joined.count > 400 ? String(joined.prefix(400)) : joined
    }
}
