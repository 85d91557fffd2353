#if canImport(Glibc)
import Glibc
#endif

/// A failure of the BPF layer, with what a person can do about it.
public struct ProbeError: Error, CustomStringConvertible, Sendable, Equatable {
    public var message: String
    public var errno: Int32?

    public init(_ message: String, errno: Int32? = nil) {
        self.message = message
        self.errno = errno
    }

    public var description: String {
        guard let errno else { return message }
        return message + ": " + String(cString: strerror(errno))
    }
}

/// The observers and actuators, as reported in `BuildProbes.unavailable`.
public enum ProbeObserver: String, Sendable, CaseIterable {
    case processes = "process lifecycle"
    case memory = "per-process RSS"
    case reclaim = "reclaim stalls"
    case oom = "OOM victims"
    case blockIO = "block I/O latency"
    case runQueue = "run-queue latency"
    case execGate = "exec gate"

    /// The BPF programs (function names in bpf/jobgov.bpf.c) each one needs.
    var programs: [String] {
        switch self {
        case .processes: ["jg_fork", "jg_exec", "jg_exit"]
        // kmem:rss_stat's per-CPU cache relies on fork, exec and exit to say when an address space may be new
        // (jg_gen), and the exact peak at exit comes from jg_exit.
        case .memory: ["jg_rss", "jg_fork", "jg_exec", "jg_exit"]
        case .reclaim: ["jg_dreclaim_beg", "jg_dreclaim_end", "jg_mreclaim_beg", "jg_mreclaim_end"]
        case .oom: ["jg_oom"]
        case .blockIO: ["jg_rq_issue", "jg_rq_done"]
        case .runQueue: ["jg_wakeup", "jg_wakeup_new", "jg_switch"]
        case .execGate: ["jg_exec", "jg_exit"]
        }
    }

    /// The tracepoint a program attaches to, for messages.
    static func tracepoint(of program: String) -> String {
        [
            "jg_fork": "sched:sched_process_fork", "jg_exec": "sched:sched_process_exec",
            "jg_exit": "sched:sched_process_exit", "jg_rss": "kmem:rss_stat",
            "jg_dreclaim_beg": "vmscan:mm_vmscan_direct_reclaim_begin",
            "jg_dreclaim_end": "vmscan:mm_vmscan_direct_reclaim_end",
            "jg_mreclaim_beg": "vmscan:mm_vmscan_memcg_reclaim_begin",
            "jg_mreclaim_end": "vmscan:mm_vmscan_memcg_reclaim_end", "jg_oom": "oom:mark_victim",
            "jg_rq_issue": "block:block_rq_issue", "jg_rq_done": "block:block_rq_complete",
            "jg_wakeup": "sched:sched_wakeup", "jg_wakeup_new": "sched:sched_wakeup_new",
            "jg_switch": "sched:sched_switch",
        ][program] ?? program
    }
}
