import GovernorRuntime
import JobgovCore

/// A build on a simulated machine: a cgroup with a hard limit (v1 with the OOM killer held off, as here: a job that
/// would pass the limit waits), freezing that frees nothing, optional swap that paged-out memory goes to, an OOM
/// killer that ends the largest process when let loose, CPUs shared by the running jobs, and a jobserver client
/// that starts ready jobs while it holds tokens. It is the `BuildSensing` and `BuildActuating` of a real
/// `BuildGovernor`; time advances only in `step`.
public final class SimulatedBuild: BuildSensing, BuildActuating {
    public struct Outcome: Sendable {
        public var succeeded: Bool
        public var makespan: Double
        public var oomKills: Int
        /// Memory in the cgroup never passed this.
        public var peakBytes: Double
        public var freezes: Int
        public var pageOuts: Int
        public var evictions: Int
        public var reruns: Int
        /// The longest time (seconds) during which work remained and no job made progress.
        public var longestStall: Double
        /// The most ticks in a row with jobs in the build and every one of them frozen.
        public var allFrozenTicks: Int
        public var history: MemoryHistoryFormat.Contents
        public var note: String
    }

    enum State { case waiting, running, done }

    final class Run {
        let index: Int
        let pid: Int32
        var progress = 0.0          // seconds of its own time done
        var bytes = 0.0             // resident
        var swapped = 0.0           // paged out
        var outgoing = 0.0          // still to page out (the page-out runs at `pageOutRate`)
        var frozen = false
        var blocked = false         // waiting at the hard limit
        var killed = false          // its process ended; the root waits to run it again (make)
        var askingSince: Double?
        let stretch: Double
        init(index: Int, pid: Int32, stretch: Double) {
            self.index = index
            self.pid = pid
            self.stretch = stretch
        }
    }

    public let jobs: [SimulatedJob]
    public let tool: SimulatedTool
    public let cpus: Int
    public let hardLimit: Double
    public let swapAvailable: Bool
    /// The loop's tick.
    public let tick = 0.1
    public private(set) var now = 0.0
    private var state: [State]
    private var runs: [Int32: Run] = [:]
    /// The runs by pid: every sum and every choice over them goes in this order, so that a seed replays the same
    /// build in another process (a dictionary's order, and so a sum of doubles over it, changes from one to the next).
    /// Pids only grow, so appending keeps it in order.
    private var orderedRuns: [Run] = []
    private var startOrder: [Int] = []
    private var nextPID: Int32 = 100
    private var pendingEvents: [BuildEvent] = []
    private var oomKillerEnabled = false
    private var kills = 0
    private var peak = 0.0
    private var failed = false
    private var stalledSince: Double?
    private var allFrozen = 0, mostAllFrozen = 0
    private var longestStall = 0.0
    private var freezes = 0, pageOuts = 0, evictions = 0
    private let clientPID: Int32 = 10
    private var rng: SplitMix
    /// Memory outside the jobs (the build tool).
    static let baseBytes = 8.0 * 1_048_576
    /// Paging out as measured with lz4 zram on this project's 2-CPU machine: about 160 MB/s of wall time, about
    /// 3 ms of CPU per MiB (half a CPU taken from the jobs while it runs), and a quarter of what is paged out stays
    /// in memory, compressed (counted in the build's memory as jobgov counts its device, not in the cgroup's limit).
    /// One job at a time, in the order asked, as jobgov's serial page-out queue does; a job thawed or ended stops its
    /// own page-out.
    public static let pageOutRate = 160.0 * 1_048_576
    public static let pageOutCPU = 0.48
    public static let compressionRatio = 4.0
    private var pageOutQueue: [Int32] = []
    private var compressedBytes = 0.0
    public var loop: BuildGovernor!

    /// - Parameters:
    ///   - durationJitter: each job runs this much longer or shorter at random (0.5: ±50%) than its `seconds`.
    public init(jobs: [SimulatedJob], tool: SimulatedTool, cpus: Int, hardLimit: Double, swap: Bool, seed: UInt64,
                durationJitter: Double = 0) {
        self.jobs = jobs
        self.tool = tool
        self.cpus = cpus
        self.hardLimit = hardLimit
        self.swapAvailable = swap
        self.state = Array(repeating: .waiting, count: jobs.count)
        self.rng = SplitMix(seed: seed)
        self.stretches = jobs.map { _ in 1 }
        if durationJitter > 0 {
            var r = SplitMix(seed: seed ^ 0x5eed)
            stretches = jobs.map { _ in 1 + durationJitter * (2 * r.unit() - 1) }
        }
        order = Self.order(jobs, tool: tool)
    }
    private var stretches: [Double]
    private let order: [Int]

    /// make: the makefile's order; ninja: the longest path to the end first.
    static func order(_ jobs: [SimulatedJob], tool: SimulatedTool) -> [Int] {
        guard tool == .ninja else { return Array(jobs.indices) }
        var users: [[Int]] = Array(repeating: [], count: jobs.count)
        for (i, j) in jobs.enumerated() { for d in j.inputs { users[d].append(i) } }
        var path = Array(repeating: 0.0, count: jobs.count)
        for i in jobs.indices.reversed() {
            path[i] = jobs[i].seconds + (users[i].map { path[$0] }.max() ?? 0)
        }
        return jobs.indices.sorted { (path[$0], -$0) > (path[$1], -$1) }
    }

    // MARK: running it

    /// Runs the build under `loop` until it ends or `timeLimit` passes.
    public func run(timeLimit: Double) -> Outcome {
        var lastGovern = -1.0
        var target = loop.initialTarget
        while now < timeLimit && !failed && state.contains(where: { $0 != .done }) {
            let interval = loop.lastDecision?.calm == true ? 5 * tick : tick
            if now - lastGovern >= interval - 1e-9 {
                lastGovern = now
                target = loop.tick(now: now)
            }
            answerReruns()
            let live = orderedRuns.filter { !$0.killed }
            allFrozen = !live.isEmpty && live.allSatisfy(\.frozen) ? allFrozen + 1 : 0
            mostAllFrozen = max(mostAllFrozen, allFrozen)
            startJobs(target: target)
            let progressed = advance(by: tick)
            now += tick
            if progressed || !state.contains(where: { $0 != .done }) {
                stalledSince = nil
            } else {
                let since = stalledSince ?? now - tick
                stalledSince = since
                longestStall = max(longestStall, now - since)
            }
        }
        let history = loop.finish(now: now)
        let done = !failed && !state.contains { $0 != .done }
        let stats = loop.stats
        return Outcome(succeeded: done, makespan: now, oomKills: kills, peakBytes: peak, freezes: freezes,
                       pageOuts: pageOuts, evictions: evictions, reruns: stats.reruns, longestStall: longestStall, allFrozenTicks: mostAllFrozen,
                       history: history,
                       note: failed ? "a job was OOM-killed and the build failed" : done ? "" : "did not finish in \(timeLimit) s")
    }

    private func ready(_ i: Int) -> Bool {
        state[i] == .waiting && jobs[i].inputs.allSatisfy { state[$0] == .done }
    }

    /// The client starts ready jobs while it holds fewer than `target` (tokens plus its implicit slot). Jobs waiting
    /// to run again keep their slot.
    private func startJobs(target: Int) {
        var active = runs.count
        for i in order where active < target && ready(i) {
            let pid = nextPID
            nextPID += 1
            let run = Run(index: i, pid: pid, stretch: stretches[i])
            runs[pid] = run
            orderedRuns.append(run)
            state[i] = .running
            startOrder.append(i)
            active += 1
        }
    }

    /// jobgov-shell asks every 0.2 s after its recipe was killed.
    private func answerReruns() {
        for run in orderedRuns where run.killed {
            guard let since = run.askingSince, now - since >= 0.2 - 1e-9 else { continue }
            run.askingSince = now
            let reply = loop.rerunVerdict(shellPID: run.pid, status: .signaled(9), now: now)
            if reply == "go" {
                run.killed = false
                run.askingSince = nil
                run.progress = 0
            } else if reply.hasPrefix("no") {
                failed = true
            }
        }
    }

    /// Each running job's memory and state, for a log line.
    public var memoryLine: String {
        orderedRuns.map { r in
            let flag = r.killed ? "k" : r.frozen ? (r.swapped > 0 ? "p" : "f") : r.blocked ? "b" : ""
            return "\(r.pid):\(Int(r.bytes / 1_048_576))/\(Int(jobs[r.index].peakBytes / 1_048_576))\(flag)"
        }.joined(separator: " ") + " = \(Int(used / 1_048_576))"
    }

    /// What the cgroup's limit counts, and what jobgov reads as the build's memory (its compressed device too).
    private var used: Double { Self.baseBytes + orderedRuns.reduce(0) { $0 + $1.bytes } }
    private var usedWithDevice: Double { used + compressedBytes }

    /// The page-out queue moves memory from the head job to swap for `dt`.
    private func pageOut(for dt: Double) {
        var budget = Self.pageOutRate * dt
        while budget > 0, let pid = pageOutQueue.first {
            guard let run = runs[pid], !run.killed, run.outgoing > 0 else {
                pageOutQueue.removeFirst()
                continue
            }
            let moved = min(budget, run.outgoing, run.bytes)
            run.bytes -= moved
            run.swapped += moved
            run.outgoing -= moved
            compressedBytes += moved / Self.compressionRatio
            budget -= moved
            if run.outgoing <= 1 || run.bytes <= 0 {
                run.outgoing = 0
                pageOutQueue.removeFirst()
            }
        }
    }

    /// Moves every running job on by `dt`; whether any made progress.
    private func advance(by dt: Double) -> Bool {
        var progressed = false
        let paging = !pageOutQueue.isEmpty
        pageOut(for: dt)
        let active = orderedRuns.filter { !$0.frozen && !$0.killed && !$0.blocked }
        let demand = active.reduce(0.0) { $0 + jobs[$1.index].cpuShare } + (paging ? Self.pageOutCPU : 0)
        let contention = max(1, demand / Double(cpus))
        // Oldest first: a job that cannot grow waits at the limit (the OOM killer held off).
        for run in orderedRuns where !run.frozen && !run.killed {
            let job = jobs[run.index]
            let length = job.seconds * run.stretch
            let rate = 1 / ((1 - job.cpuShare) + job.cpuShare * contention)
            let progress = min(length, run.progress + dt * rate)
            // Paged-out memory comes back first.
            let want = max(job.peakBytes * job.shape.level(at: progress / length), run.bytes + run.swapped)
            let grow = want - run.bytes
            if grow > 0 && used + grow > hardLimit {
                if oomKillerEnabled {
                    oomKill()
                    if failed { return progressed }
                    continue
                }
                run.blocked = true
                continue
            }
            run.blocked = false
            run.bytes = want
            compressedBytes = max(0, compressedBytes - run.swapped / Self.compressionRatio)
            run.swapped = 0
            run.progress = progress
            progressed = true
            peak = max(peak, used)
            if progress >= length - 1e-9 {
                pendingEvents.append(.exited(pid: run.pid + Self.childOffset, peakBytes: UInt64(job.peakBytes)))
                runs[run.pid] = nil
                orderedRuns.removeAll { $0 === run }
                state[run.index] = .done
            }
        }
        return progressed
    }

    /// The job's own process (the compiler) is its root's child: pid + this.
    static let childOffset: Int32 = 1_000_000

    /// The kernel's OOM killer: the largest process goes.
    private func oomKill() {
        guard let victim = orderedRuns.filter({ !$0.killed }).max(by: { $0.bytes < $1.bytes }) else { return }
        kills += 1
        oomKillerEnabled = false
        pendingEvents.append(.oomVictim(pid: victim.pid + Self.childOffset, command: jobs[victim.index].command))
        victim.bytes = 0
        compressedBytes = max(0, compressedBytes - victim.swapped / Self.compressionRatio)
        victim.swapped = 0
        victim.outgoing = 0
        victim.blocked = false
        if tool == .ninja {
            failed = true
            return
        }
        victim.killed = true
        victim.askingSince = now - 1
    }

    // MARK: BuildSensing

    public func read() -> BuildReading {
        var r = BuildReading()
        r.memoryUsedBytes = UInt64(usedWithDevice)
        r.memoryUsageBytes = UInt64(used)
        r.memoryLimitBytes = UInt64(hardLimit)
        r.oomKills = UInt64(kills)
        r.underOOM = orderedRuns.contains { $0.blocked && !$0.frozen }
        r.systemAvailableBytes = 16 << 30
        r.systemTotalBytes = 24 << 30
        let active = orderedRuns.filter { !$0.frozen && !$0.killed }
        r.cpuBusy = min(1, active.reduce(0.0) { $0 + jobs[$1.index].cpuShare } / Double(cpus))
        var processes = [ProcessObservation(pid: clientPID, parent: 1, name: tool.rawValue)]
        for run in orderedRuns {
            let root = tool == .make ? "jobgov-shell" : "sh"
            processes.append(ProcessObservation(pid: run.pid, parent: clientPID, name: root, startTicks: UInt64(run.pid),
                                                rssBytes: 1 << 20, arguments: ["sh", "-c", jobs[run.index].command]))
            if !run.killed {
                // The job's process proper (the compiler), a child of its root.
                var child = ProcessObservation(pid: run.pid + Self.childOffset, parent: run.pid, name: "cc1plus",
                                               rssBytes: UInt64(run.bytes))
                child.swapBytes = UInt64(run.swapped)
                processes.append(child)
            }
        }
        return r.with(processes)
    }

    public func events() -> [BuildEvent] {
        defer { pendingEvents = [] }
        return pendingEvents
    }

    public func arguments(of pid: Int32) -> [String]? { nil }
    public func oomKills() -> UInt64? { UInt64(kills) }
    public var namesOOMVictims: Bool { true }

    // MARK: BuildActuating

    public var holdsOOMKiller: Bool { true }

    public func freeze(_ job: Job) -> String? {
        guard let run = runs[job.id.pid] else { return "no such job" }
        run.frozen = true
        run.blocked = false
        freezes += 1
        return nil
    }

    public func thaw(_ job: Job) -> String? {
        guard let run = runs[job.id.pid] else { return nil }
        // As jobgov's page-out queue: a thawed job's page-out stops (at its next batch, here at once).
        run.outgoing = 0
        pageOutQueue.removeAll { $0 == run.pid }
        run.frozen = false
        return nil
    }

    public func keepFrozen(_ job: Job) {}
    public func jobEnded(_ id: JobID) {}

    public func setBuildFrozen(_ frozen: Bool) -> Result<String, ActuatorProblem> {
        for run in orderedRuns { run.frozen = frozen }
        return .success("")
    }

    public func setOOMKiller(enabled: Bool) -> Bool {
        oomKillerEnabled = enabled
        return true
    }

    public func pageOut(_ job: Job) -> Result<UInt64, ActuatorProblem> {
        guard swapAvailable else { return .failure(ActuatorProblem("no swap")) }
        guard let run = runs[job.id.pid], run.frozen else { return .failure(ActuatorProblem("not frozen")) }
        let held = run.bytes
        run.outgoing = held
        if !pageOutQueue.contains(run.pid) { pageOutQueue.append(run.pid) }
        pageOuts += 1
        return .success(UInt64(held))
    }

    public func end(_ job: Job) -> String? {
        guard tool == .make, let run = runs[job.id.pid] else { return "cannot end it" }
        run.bytes = 0
        compressedBytes = max(0, compressedBytes - run.swapped / Self.compressionRatio)
        run.swapped = 0
        run.outgoing = 0
        run.frozen = false
        run.blocked = false
        run.killed = true
        run.askingSince = now - 1
        evictions += 1
        return nil
    }

    public func finish() {
        for run in orderedRuns { run.frozen = false }
    }
}

extension BuildReading {
    func with(_ processes: [ProcessObservation]) -> BuildReading {
        var copy = self
        copy.processes = processes
        return copy
    }
}
