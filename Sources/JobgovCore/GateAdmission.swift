/// Admission for build tools that ignore the jobserver (`xargs -P`, `parallel`, a script that forks workers with
/// `&`): the exec gate holds each new job at its first program until the governor's target allows another job.
///
/// The kernel side (bpf/jobgov.bpf.c, `jg_exec`) admits a job by itself while it has credit and nothing is held;
/// otherwise the process stops itself (SIGSTOP) before its first instruction. This is the user side's part, pure:
/// which held processes to let go (oldest job first) and how much credit to leave the kernel.
public enum GateAdmission {
    /// A process the gate stopped: its pid, the job it belongs to (the pid of the job's root, the tool's child:
    /// the same as `pid` unless the root forked without executing, as a subshell does) and when it stopped
    /// (CLOCK_MONOTONIC nanoseconds).
    public struct Held: Sendable, Equatable {
        public var pid: Int32
        public var job: Int32
        public var since: UInt64
        public init(pid: Int32, job: Int32, since: UInt64) {
            self.pid = pid
            self.job = job
            self.since = since
        }
    }

    /// The held processes to let go, a whole job at a time, oldest job first, while `target` (jobs allowed at once,
    /// frozen ones included, as for tokens) leaves room beside the `admittedJobs` that already run. At least one
    /// job always runs: with none admitted, the oldest held one goes whatever the target.
    public static func release(target: Int, admittedJobs: Int, held: [Held]) -> [Held] {
        var free = max(1, target) - admittedJobs
        var byJob: [Int32: [Held]] = [:]
        for h in held { byJob[h.job, default: []].append(h) }
        let order = byJob.values.sorted {
            let a = $0.map(\.since).min() ?? 0, b = $1.map(\.since).min() ?? 0
            return (a, $0[0].job) < (b, $1[0].job)
        }
        var out: [Held] = []
        for group in order where free > 0 {
            out += group.sorted { ($0.since, $0.pid) < ($1.since, $1.pid) }
            free -= 1
        }
        return out
    }

    /// The kernel's credit: it admits a new job while the jobs it admitted, less the admitted jobs that ended
    /// (whoever admitted them), stay below this. Read the kernel's counters in the order `admits`, then
    /// `admittedJobs`, then `ends`: a job that starts or ends between two reads then errs towards admitting one
    /// job fewer until the next call, never one more.
    /// - Parameters:
    ///   - admits: jobs the kernel admitted so far; `ends`: admitted jobs that ended so far.
    ///   - admittedJobs: admitted jobs alive now (released ones included).
    public static func kernelCredit(target: Int, admittedJobs: Int, admits: UInt64, ends: UInt64) -> Int64 {
        Int64(clamping: admits) - Int64(clamping: ends) + Int64(max(0, max(1, target) - admittedJobs))
    }

    /// Whether a build launched as `argv` gets the gate: a tool that does not take jobserver tokens. Known
    /// jobserver clients (make, ninja, cargo, `cmake --build`, samu...) are governed through the pool instead.
    public static func wanted(argv: [String]) -> Bool {
        guard case .other = ClientKind.detect(argv: argv), let first = argv.first else { return false }
        let name = first.split(separator: "/").last.map(String.init) ?? first
        return ClientKind.jobserverClients[name] == nil
    }
}
