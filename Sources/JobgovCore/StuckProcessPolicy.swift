/// What `jobgov guard` sees of one process at one moment (from /proc, and eBPF where it runs).
public struct ProcessSnapshot: Sendable, Equatable {
    public var pid: Int32
    public var parent: Int32
    public var command: String
    /// Clock ticks since boot at which it started: with the pid, names the process across pid reuse.
    public var startTicks: UInt64
    public var residentBytes: UInt64
    /// User + system time of all its threads, in seconds.
    public var cpuSeconds: Double
    /// Time its threads waited in the run queue (per-task schedstat, summed), in seconds.
    public var runQueueWaitSeconds: Double
    public var majorFaults: UInt64
    /// Time spent in direct and cgroup reclaim, in seconds, from the eBPF observers (nil without them).
    public var reclaimSeconds: Double?
    /// Its cgroup v2 path, relative to the v2 mount.
    public var cgroup: String
    public var isKernelThread: Bool
    /// Threads in uninterruptible sleep (state D) now, with their context-switch counts.
    public var blockedTasks: [BlockedTask]

    public struct BlockedTask: Sendable, Equatable {
        public var tid: Int32
        public var switches: UInt64
        /// Where it sleeps (/proc/PID/task/TID/wchan), when the kernel tells.
        public var waitChannel: String?
        public init(tid: Int32, switches: UInt64, waitChannel: String? = nil) {
            self.tid = tid
            self.switches = switches
            self.waitChannel = waitChannel
        }
    }

    public init(pid: Int32, parent: Int32, command: String, startTicks: UInt64, residentBytes: UInt64,
                cpuSeconds: Double, runQueueWaitSeconds: Double = 0, majorFaults: UInt64 = 0,
                reclaimSeconds: Double? = nil, cgroup: String = "/", isKernelThread: Bool = false,
                blockedTasks: [BlockedTask] = []) {
        self.pid = pid
        self.parent = parent
        self.command = command
        self.startTicks = startTicks
        self.residentBytes = residentBytes
        self.cpuSeconds = cpuSeconds
        self.runQueueWaitSeconds = runQueueWaitSeconds
        self.majorFaults = majorFaults
        self.reclaimSeconds = reclaimSeconds
        self.cgroup = cgroup
        self.isKernelThread = isKernelThread
        self.blockedTasks = blockedTasks
    }
}

/// One look at the machine: pressure totals (PSI `total=`, microseconds) and every process.
public struct GuardObservation: Sendable {
    public var time: Double
    public var memoryStallMicroseconds: UInt64
    public var cpuStallMicroseconds: UInt64
    /// memory.pressure `some` totals of the cgroups the processes are in, by cgroup path.
    public var cgroupMemoryStallMicroseconds: [String: UInt64]
    public var processes: [ProcessSnapshot]
    public var cpus: Int

    public init(time: Double, memoryStallMicroseconds: UInt64, cpuStallMicroseconds: UInt64,
                cgroupMemoryStallMicroseconds: [String: UInt64] = [:], processes: [ProcessSnapshot], cpus: Int) {
        self.time = time
        self.memoryStallMicroseconds = memoryStallMicroseconds
        self.cpuStallMicroseconds = cpuStallMicroseconds
        self.cgroupMemoryStallMicroseconds = cgroupMemoryStallMicroseconds
        self.processes = processes
        self.cpus = cpus
    }
}

/// A process found making the machine unresponsive, and why.
public struct StuckProcessFinding: Sendable, Equatable {
    public enum Cause: String, Sendable { case memory, cpu, uninterruptible }
    public var cause: Cause
    public var pid: Int32
    public var startTicks: UInt64
    public var command: String
    /// One line each: the numbers that point at it.
    public var evidence: [String]
    /// Whether a process on the protected list (or a kernel thread) was found: reported, never acted on.
    public var isProtected: Bool
    /// Consecutive windows it has been the one found for this cause.
    public var windows: Int
}

/// Finds, from two looks at the machine a window apart, which process drives memory pressure, which starves the
/// others of CPU, and which task has slept uninterruptibly too long. Pure: the caller reads /proc and acts.
public struct StuckProcessPolicy: Sendable {
    public struct Settings: Sendable, Equatable {
        /// Memory PSI `some` share of the window above which the memory culprit is looked for.
        public var memoryPressure: Double = 0.10
        /// CPU PSI `some` share of the window above which the CPU culprit is looked for.
        public var cpuPressure: Double = 0.50
        /// A process must use at least this many CPUs to be the CPU culprit.
        public var minimumCPUs: Double = 0.5
        /// A process must grow by this much in a window (or stall in reclaim) to be the memory culprit.
        public var minimumGrowthBytes: UInt64 = 8 << 20
        /// Report a task asleep in state D, not woken once, for this long.
        public var uninterruptibleSeconds: Double = 10
        /// Act only on a process found for the same cause this many windows in a row.
        public var confirmWindows: Int = 3
        /// Command names (/proc/PID/comm) never acted on.
        public var protectedCommands: Set<String> = Self.defaultProtectedCommands
        /// Process ids never acted on (init, jobgov itself and its ancestors: the caller adds them).
        public var protectedPIDs: Set<Int32> = [1]

        public static let defaultProtectedCommands: Set<String> = [
            "systemd", "init", "sshd", "sshd-session", "jobgov", "Xorg", "Xwayland", "gnome-shell", "kwin_wayland",
            "kwin_x11", "mutter", "sway", "weston", "Hyprland", "labwc", "wayfire", "cosmic-comp", "systemd-journal",
            "systemd-logind", "dbus-daemon", "dbus-broker",
        ]

        public init() {}
    }

    public var settings: Settings
    private var previous: GuardObservation?
    /// Task id → (when first seen asleep in D, its switch count then).
    private var blockedSince: [Int32: (since: Double, switches: UInt64)] = [:]
    /// Per cause, the processes in the running for it and how many looks in a row each has been.
    private var streaks: [StuckProcessFinding.Cause: [Int32: Int]] = [:]

    public init(settings: Settings = Settings()) { self.settings = settings }

    public func isProtected(_ p: ProcessSnapshot) -> Bool {
        p.isKernelThread || settings.protectedPIDs.contains(p.pid) || settings.protectedCommands.contains(p.command)
    }

    /// Takes a new look; returns what is found in the window since the last one (nothing on the first).
    public mutating func observe(_ now: GuardObservation) -> [StuckProcessFinding] {
        defer { previous = now }
        var findings: [StuckProcessFinding] = []
        if let d = uninterruptible(now) { findings.append(d) }
        guard let before = previous else { return findings }
        let window = now.time - before.time
        guard window > 0 else { return findings }
        let earlier = Dictionary(before.processes.map { ($0.pid, $0) }, uniquingKeysWith: { a, _ in a })
        func prior(_ p: ProcessSnapshot) -> ProcessSnapshot? {
            guard let old = earlier[p.pid], old.startTicks == p.startTicks else { return nil }
            return old
        }
        let memoryShare = share(now.memoryStallMicroseconds, before.memoryStallMicroseconds, window)
        let cpuShare = share(now.cpuStallMicroseconds, before.cpuStallMicroseconds, window)
        var found: [StuckProcessFinding.Cause: (finding: StuckProcessFinding, contenders: Set<Int32>)] = [:]
        if memoryShare >= settings.memoryPressure,
           let culprit = memoryCulprit(now, before, window: window, pressure: memoryShare, prior: prior) {
            found[.memory] = (culprit, [culprit.pid])
        }
        if cpuShare >= settings.cpuPressure {
            found[.cpu] = cpuCulprit(now, window: window, pressure: cpuShare, prior: prior)
        }
        for cause in [StuckProcessFinding.Cause.memory, .cpu] {
            guard let entry = found[cause] else {
                streaks[cause] = nil
                continue
            }
            // A process keeps its streak while it stays in the running, even when another tops one look: equal
            // hogs take turns at the top, and confirming only an unbroken top would never confirm any of them.
            let earlierStreaks = streaks[cause] ?? [:]
            let streak = Dictionary(uniqueKeysWithValues: entry.contenders.map { ($0, (earlierStreaks[$0] ?? 0) + 1) })
            streaks[cause] = streak
            var finding = entry.finding
            finding.windows = streak[finding.pid] ?? 1
            findings.append(finding)
        }
        return findings
    }

    /// Whether a finding has held long enough to act on (and may be acted on at all).
    public func shouldAct(on finding: StuckProcessFinding) -> Bool {
        !finding.isProtected && finding.cause != .uninterruptible && finding.windows >= settings.confirmWindows
    }

    private func share(_ now: UInt64, _ then: UInt64, _ window: Double) -> Double {
        guard now >= then else { return 0 }  // a counter that went back (PSI reset): no evidence
        return min(1, Double(now - then) / 1e6 / window)
    }

    /// The process that grows while memory is short. Ranked by its own reclaim stall where eBPF measures it, else
    /// by the stall of its cgroup; ties by growth.
    private func memoryCulprit(_ now: GuardObservation, _ before: GuardObservation, window: Double, pressure: Double,
                               prior: (ProcessSnapshot) -> ProcessSnapshot?) -> StuckProcessFinding? {
        var best: (score: (Double, Double), p: ProcessSnapshot, growth: Int64, stall: Double, faults: UInt64)?
        for p in now.processes where !p.isKernelThread {
            guard let old = prior(p) else { continue }
            let growth = Int64(p.residentBytes) - Int64(old.residentBytes)
            let ownStall = p.reclaimSeconds.flatMap { r in old.reclaimSeconds.map { max(0, r - $0) / window } }
            let groupStall = share(now.cgroupMemoryStallMicroseconds[p.cgroup] ?? 0,
                                   before.cgroupMemoryStallMicroseconds[p.cgroup] ?? 0, window)
            let stall = ownStall ?? groupStall
            guard growth >= Int64(settings.minimumGrowthBytes) || (ownStall ?? 0) > 0.01 else { continue }
            // Stall shares within 5 points count as equal, so that growth decides between processes of one cgroup.
            let score = ((stall * 20).rounded(.down), Double(growth))
            if best == nil || score > best!.score {
                best = (score, p, growth, stall, p.majorFaults &- old.majorFaults)
            }
        }
        guard let best else { return nil }
        let p = best.p
        var evidence = [
            "memory pressure: tasks stalled \(percent(pressure)) of the last \(seconds(window))",
            "resident \(mebibytes(p.residentBytes)), grew \(mebibytes(UInt64(max(0, best.growth)))) in the window",
        ]
        if p.reclaimSeconds != nil {
            evidence.append("its own reclaim stall (eBPF): \(percent(best.stall)) of the window")
        } else {
            evidence.append("its cgroup \(p.cgroup) stalled on memory \(percent(best.stall)) of the window")
        }
        if best.faults > 0 { evidence.append("\(best.faults) major page faults in the window") }
        return StuckProcessFinding(cause: .memory, pid: p.pid, startTicks: p.startTicks, command: p.command,
                                   evidence: evidence, isProtected: isProtected(p), windows: 1)
    }

    /// The process using the most CPU while runnable tasks wait for one, and the processes within a fifth of it
    /// (the ones in the running: the top among equal hogs changes from look to look).
    private func cpuCulprit(_ now: GuardObservation, window: Double, pressure: Double,
                            prior: (ProcessSnapshot) -> ProcessSnapshot?)
        -> (finding: StuckProcessFinding, contenders: Set<Int32>)? {
        var used: [(p: ProcessSnapshot, cpus: Double, waited: Double)] = []
        var totalWait = 0.0
        for p in now.processes {
            guard let old = prior(p) else { continue }
            let waited = max(0, p.runQueueWaitSeconds - old.runQueueWaitSeconds)
            totalWait += waited
            if !p.isKernelThread { used.append((p, max(0, p.cpuSeconds - old.cpuSeconds) / window, waited)) }
        }
        guard let top = used.max(by: { $0.cpus < $1.cpus }), top.cpus >= settings.minimumCPUs else { return nil }
        let othersWaited = max(0, totalWait - top.waited) / window
        let evidence = [
            "CPU pressure: runnable tasks waited \(percent(pressure)) of the last \(seconds(window))",
            "it used \(format(top.cpus)) of \(now.cpus) CPUs",
            "other tasks waited \(format(othersWaited)) s per second in the run queue",
        ]
        let contenders = used.filter { $0.cpus >= max(settings.minimumCPUs, top.cpus * 0.8) }.map(\.p.pid)
        return (StuckProcessFinding(cause: .cpu, pid: top.p.pid, startTicks: top.p.startTicks, command: top.p.command,
                                    evidence: evidence, isProtected: isProtected(top.p), windows: 1),
                Set(contenders))
    }

    /// The task asleep in state D longest without being woken (its switch count unchanged), past the limit.
    private mutating func uninterruptible(_ now: GuardObservation) -> StuckProcessFinding? {
        var seen: [Int32: (since: Double, switches: UInt64)] = [:]
        var longest: (p: ProcessSnapshot, task: ProcessSnapshot.BlockedTask, seconds: Double)?
        for p in now.processes {
            for task in p.blockedTasks {
                var since = now.time
                if let old = blockedSince[task.tid], old.switches == task.switches { since = old.since }
                seen[task.tid] = (since, task.switches)
                let asleep = now.time - since
                if asleep >= settings.uninterruptibleSeconds && asleep > (longest?.seconds ?? -1) {
                    longest = (p, task, asleep)
                }
            }
        }
        blockedSince = seen
        guard let longest else { return nil }
        var evidence = ["task \(longest.task.tid) has slept uninterruptibly (state D) for at least \(seconds(longest.seconds)) without being woken"]
        if let channel = longest.task.waitChannel { evidence.append("waiting in \(channel)") }
        return StuckProcessFinding(cause: .uninterruptible, pid: longest.p.pid, startTicks: longest.p.startTicks,
                                   command: longest.p.command, evidence: evidence,
                                   isProtected: isProtected(longest.p), windows: 1)
    }
}

private func percent(_ share: Double) -> String { "\(Int((share * 100).rounded()))%" }
private func format(_ value: Double) -> String { String(Double(Int((value * 100).rounded())) / 100) }
private func seconds(_ value: Double) -> String { "\(format(value)) s" }
private func mebibytes(_ bytes: UInt64) -> String { "\(bytes >> 20) MiB" }
