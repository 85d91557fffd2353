import CJobgovBPF
import JobgovCore

/// Why a reclaim stall happened.
public enum StallKind: String, Sendable, Equatable {
    /// Direct reclaim: the machine is short of memory (`vmscan:mm_vmscan_direct_reclaim_*`).
    case direct
    /// Reclaim at a cgroup's limit or `memory.high` (`vmscan:mm_vmscan_memcg_reclaim_*`).
    case cgroup

    init(_ raw: UInt32) { self = raw == UInt32(JG_STALL_DIRECT.rawValue) ? .direct : .cgroup }
}

/// One record from the BPF ring buffer. pids are thread-group ids (what user space calls a pid).
public enum ProbeEvent: Sendable, Equatable {
    /// A process of the build forked a new process (threads are not reported).
    case fork(parent: Int32, child: Int32)
    /// A process in the build executed a program; `command` is its argv joined by spaces (at most 256 bytes).
    case exec(pid: Int32, ppid: Int32, command: String)
    /// A process of the build ended; `peakRSS` is its largest resident size in bytes (0 if it never changed).
    case exit(pid: Int32, status: ExitStatus, peakRSS: UInt64)
    /// The OOM killer chose `pid` (in any cgroup). `cgroupID` is its cgroup v2 id, 0 if not known.
    case oomVictim(pid: Int32, command: String, cgroupID: UInt64, inBuild: Bool)
    /// A build process spent `nanoseconds` in one reclaim pass (passes shorter than `minimumStall` are only summed).
    case stall(pid: Int32, nanoseconds: UInt64, kind: StallKind)
    /// The exec gate stopped `pid` (SIGSTOP) as it executed `command`; it belongs to the job whose root is `job`
    /// and waits for `admit`.
    case gateStopped(pid: Int32, command: String, job: Int32)

    /// Decodes a ring buffer record; nil for a record of an unknown kind (or an exit whose status is not an end,
    /// which the kernel never sends).
    init?(record: UnsafeRawPointer, size: Int) {
        var e = jg_event()
        withUnsafeMutableBytes(of: &e) { dst in
            dst.copyMemory(from: UnsafeRawBufferPointer(start: record, count: min(size, dst.count)))
        }
        let pid = Int32(bitPattern: e.pid)
        let comm = cString(e.comm)
        switch Int(e.kind) {
        case Int(JG_EV_FORK.rawValue):
            self = .fork(parent: pid, child: Int32(bitPattern: e.aux))
        case Int(JG_EV_EXEC.rawValue):
            let length = min(Int(e.args_len), Int(JG_ARGS_LEN.rawValue), max(0, size - MemoryLayout<jg_event>.offset(of: \jg_event.args)!))
            var command = withUnsafeBytes(of: e.args) { raw in
                raw.prefix(length).split(separator: 0, omittingEmptySubsequences: true)
                    .map { String(decoding: $0, as: UTF8.self) }.joined(separator: " ")
            }
            if command.isEmpty { command = comm }
            self = .exec(pid: pid, ppid: Int32(bitPattern: e.ppid), command: command)
        case Int(JG_EV_EXIT.rawValue):
            guard let status = ExitStatus(waitStatus: e.aux) else { return nil }
            self = .exit(pid: pid, status: status, peakRSS: e.value)
        case Int(JG_EV_OOM.rawValue):
            self = .oomVictim(pid: pid, command: comm, cgroupID: e.value, inBuild: e.aux != 0)
        case Int(JG_EV_STALL.rawValue):
            self = .stall(pid: pid, nanoseconds: e.value, kind: StallKind(e.aux))
        case Int(JG_EV_GATE.rawValue):
            self = .gateStopped(pid: pid, command: comm, job: Int32(bitPattern: e.aux))
        default:
            return nil
        }
    }
}

/// A fixed C char array (imported as a tuple) up to its first NUL.
func cString<T>(_ tuple: T) -> String {
    withUnsafeBytes(of: tuple) { raw in
        String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
    }
}
