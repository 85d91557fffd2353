// Attaches jobgov's BPF observers to a cgroup from the command line, for scripts/bench/bpf-overhead and by hand.
//   jobgov-probe-bench CGROUP_V2_DIR [--print] [--verbose] [--without=memory,runQueue,...] [--stats]
// Prints "ready" (and what is unavailable) once attached, consumes events until SIGINT or SIGTERM, then prints one
// summary line: events by kind, drops, reclaim stall, histogram counts.
import BPFProbes
#if canImport(Glibc)
import Glibc
#endif

nonisolated(unsafe) var stopRequested: sig_atomic_t = 0

func say(_ text: String, fd: Int32 = 1) {
    let line = text + "\n"
    _ = line.withCString { write(fd, $0, strlen($0)) }
}

func run() -> Int32 {
    let args = Array(CommandLine.arguments.dropFirst())
    guard let dir = args.first(where: { !$0.hasPrefix("-") }) else {
        say("usage: jobgov-probe-bench CGROUP_V2_DIR [--print] [--verbose]", fd: 2)
        return 2
    }
    let printEvents = args.contains("--print")
    let probes: BuildProbes
    do {
        // --without=memory,runQueue,...: leave observers out (to measure what each one costs)
        let without = args.first { $0.hasPrefix("--without=") }.map { $0.dropFirst("--without=".count) } ?? ""
        var leaveOut: Set<ProbeObserver> = []
        for name in without.split(separator: ",") {
            guard let observer = ProbeObserver.allCases.first(where: { "\($0)" == name }) else {
                say("unknown observer \(name); known: \(ProbeObserver.allCases.map { "\($0)" }.joined(separator: ","))", fd: 2)
                return 2
            }
            leaveOut.insert(observer)
        }
        probes = try BuildProbes.open(cgroupV2Path: dir, leaveOut: leaveOut, verbose: args.contains("--verbose"))
    } catch {
        say("jobgov-probe-bench: \(error)", fd: 2)
        return 1
    }
    for (observer, reason) in probes.unavailable { say("unavailable: \(observer): \(reason)") }
    var mask = sigset_t()
    sigemptyset(&mask)
    for sig in [SIGINT, SIGTERM] {
        signal(sig) { _ in stopRequested = 1 }
        sigaddset(&mask, sig)
    }
    // A parent may have started us with them blocked (Foundation's Process passes its mask on).
    sigprocmask(SIG_UNBLOCK, &mask, nil)
    say("ready")

    let stats = args.contains("--stats") ? BuildProbes.enableRunTimeStatistics() : -1
    var counts: [String: Int] = [:]
    func consume(_ event: ProbeEvent) {
        let kind = switch event {
        case .fork: "fork"
        case .exec: "exec"
        case .exit: "exit"
        case .oomVictim: "oomVictim"
        case .stall: "stall"
        case .gateStopped: "gateStopped"
        }
        counts[kind, default: 0] += 1
        if printEvents { say("\(event)") }
    }
    while stopRequested == 0 {
        probes.poll(milliseconds: 100, consume)
    }
    probes.drain(consume)
    let stall = probes.totalStall
    say("events " + counts.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        + " dropped=\(probes.droppedEvents) stall_direct_ns=\(stall.direct) stall_cgroup_ns=\(stall.cgroup)"
        + " blockio=\(probes.histogram(.blockIO).count) runq=\(probes.histogram(.runQueue).count)")
    if stats >= 0 {
        // One line per program that ran: runs and mean nanoseconds per run.
        for (name, runs, ns) in probes.programStatistics() where runs > 0 {
            say("program \(name) runs=\(runs) mean_ns=\(ns / runs) total_ms=\(ns / 1_000_000)")
        }
        close(stats)
    }
    probes.close()
    return 0
}

exit(run())
