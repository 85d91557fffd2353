#if canImport(Glibc)
import Glibc
#endif
import JobgovCore

/// Reads what `jobgov guard` needs from /proc and the cgroup v2 tree, below roots tests can point elsewhere:
/// system PSI, each process's stat (state, memory, CPU time, faults), its tasks' schedstat (run-queue wait) and,
/// for tasks in state D, their context-switch counts and wait channel, and the memory PSI of the processes' cgroups.
public struct StuckProcessSensor: Sendable {
    public var procRoot: String
    /// The cgroup v2 mount (`/sys/fs/cgroup` or `/sys/fs/cgroup/unified`), nil without one.
    public var cgroupV2Mount: String?
    /// Only processes in this cgroup v2 path or below it (nil: all).
    public var within: String?
    public var ticksPerSecond: Double

    public init(procRoot: String = "/proc", cgroupV2Mount: String?, within: String? = nil,
                ticksPerSecond: Double = Double(sysconf(Int32(_SC_CLK_TCK)))) {
        self.procRoot = procRoot
        self.cgroupV2Mount = cgroupV2Mount
        self.within = within
        self.ticksPerSecond = ticksPerSecond
    }

    /// One look at the machine. Throws only when system PSI cannot be read (a kernel without CONFIG_PSI).
    public func observe(time: Double, cpus: Int) throws(SensorError) -> GuardObservation {
        let memory = try pressure("memory")
        let cpu = try pressure("cpu")
        var processes: [ProcessSnapshot] = []
        var groups: [String: UInt64] = [:]
        for name in directoryEntries(procRoot, directoriesOnly: true) {
            guard let pid = Int32(name), var p = process(pid) else { continue }
            if let within, !Self.cgroup(p.cgroup, isWithin: within) { continue }
            p.blockedTasks = []
            var wait = 0.0
            for taskName in directoryEntries("\(procRoot)/\(pid)/task", directoriesOnly: true) {
                guard let tid = Int32(taskName) else { continue }
                let dir = "\(procRoot)/\(pid)/task/\(tid)"
                if let sched = readSmallFile(dir + "/schedstat")?.split(separator: " "), sched.count >= 2,
                   let ns = UInt64(sched[1]) {
                    wait += Double(ns) / 1e9
                }
                guard let stat = readSmallFile(dir + "/stat"), let fields = Self.fieldsAfterCommand(stat),
                      fields.first == "D" else { continue }
                let status = readSmallFile(dir + "/status") ?? ""
                let switches = Self.statusValue(status, "voluntary_ctxt_switches") + Self.statusValue(status, "nonvoluntary_ctxt_switches")
                let channel = readSmallFile(dir + "/wchan").flatMap { $0.isEmpty || $0 == "0" ? nil : $0 }
                p.blockedTasks.append(.init(tid: tid, switches: switches, waitChannel: channel))
            }
            p.runQueueWaitSeconds = wait
            if groups[p.cgroup] == nil, let mount = cgroupV2Mount,
               let text = readSmallFile(joinPath(mount, p.cgroup) + "/memory.pressure"),
               let parsed = try? parsePressure(text, path: "memory.pressure") {
                groups[p.cgroup] = parsed.some.totalMicroseconds
            }
            processes.append(p)
        }
        return GuardObservation(time: time, memoryStallMicroseconds: memory, cpuStallMicroseconds: cpu,
                                cgroupMemoryStallMicroseconds: groups, processes: processes, cpus: cpus)
    }

    private func pressure(_ resource: String) throws(SensorError) -> UInt64 {
        let path = "\(procRoot)/pressure/\(resource)"
        guard let text = readSmallFile(path) else {
            throw .missing(path: path)
        }
        return try parsePressure(text, path: path).some.totalMicroseconds
    }

    /// One process from /proc/PID/stat and /proc/PID/cgroup; nil when it is gone or unreadable.
    public func process(_ pid: Int32) -> ProcessSnapshot? {
        guard let stat = readSmallFile("\(procRoot)/\(pid)/stat"), let open = stat.firstIndex(of: "("),
              let close = stat.lastIndex(of: ")"), let f = Self.fieldsAfterCommand(stat), f.count >= 22 else { return nil }
        let command = String(stat[stat.index(after: open)..<close])
        func number(_ field: Int) -> UInt64 { UInt64(f[field - 3]) ?? 0 }
        let pageSize = UInt64(sysconf(Int32(_SC_PAGESIZE)))
        let cgroupText = readSmallFile("\(procRoot)/\(pid)/cgroup") ?? ""
        let v2 = cgroupText.split(separator: "\n").first { $0.hasPrefix("0::") }.map { String($0.dropFirst(3)) } ?? "/"
        return ProcessSnapshot(
            pid: pid, parent: Int32(number(4)), command: command, startTicks: number(22),
            residentBytes: number(24) * pageSize,
            cpuSeconds: Double(number(14) + number(15)) / ticksPerSecond,
            majorFaults: number(12), cgroup: v2,
            isKernelThread: number(9) & 0x0020_0000 != 0)  // PF_KTHREAD
    }

    /// The fields of a stat line after `(comm)`, starting with the state (field 3); a command may hold spaces
    /// and parentheses, so the last `)` ends it.
    static func fieldsAfterCommand(_ stat: String) -> [Substring]? {
        guard let close = stat.lastIndex(of: ")") else { return nil }
        return stat[stat.index(after: close)...].split(whereSeparator: { $0 == " " || $0 == "\n" })
    }

    static func statusValue(_ status: String, _ key: String) -> UInt64 {
        for line in status.split(separator: "\n") where line.hasPrefix(key + ":") {
            return UInt64(line.dropFirst(key.count + 1).trimmingCharacters(in: " \t")) ?? 0
        }
        return 0
    }

    static func cgroup(_ path: String, isWithin parent: String) -> Bool {
        let p = parent.count > 1 && parent.hasSuffix("/") ? String(parent.dropLast()) : parent
        return p == "/" || path == p || path.hasPrefix(p + "/")
    }
}

private extension Substring {
    func trimmingCharacters(in set: String) -> String {
        String(drop { set.contains($0) }.reversed().drop { set.contains($0) }.reversed())
    }
}
