import Foundation
import Testing

private let isRoot = geteuid() == 0

/// The governor's CPU rule (no job beyond those running while the build keeps the CPUs busy) on a real CPU-bound
/// make build, in each tier the CPU reading comes from: the machine's /proc/stat (no cgroup for the build: an
/// unprivileged user), v1 (the build has a memory cgroup but no CPU accounting of its own, so /proc/stat again),
/// and the build's v2 `cpu.stat`.
///
/// The build starts at -j4, four recipes that each keep a CPU busy for 3 s on this 2-CPU machine; two seconds in, a
/// recipe raises the ceiling to 12 with `jobgov ctl jobs 12`. With the CPU rule the count stays at the four
/// running; without it (no CPU reading) up to 12 run at once. The threshold is 5%, not the default 90%, because the
/// test machine is shared: the rule counts the build's own CPU time where the build has a cgroup, and with a load
/// of 14 beside it (measured while writing this test) four busy recipes got a fifth of the two CPUs.
@Suite("The CPU rule in each tier", .serialized, .enabled(if: isRoot, "needs root to switch users and to make a v1-only mount namespace"))
struct CPURuleTests {
    static let makefile = """
    CPU := 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16
    all: raise $(addprefix c,$(CPU))
    raise:
    \t@sleep 2; $(JOBGOV) ctl jobs 12 >/dev/null
    c%:
    \t@echo "S $$(date +%s%N) $@" >> "$(JOBLOG)"; timeout 3 sh -c 'while :; do :; done' || :; echo "E $$(date +%s%N) $@" >> "$(JOBLOG)"
    .PHONY: all raise

    """

    /// Runs the build with `prefix` before jobgov (a user switch, a mount namespace) and checks the rule held.
    private func check(_ prefix: [String], tier: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
        try Clients.require(Clients.make43)
        let s = try Scratch()
        chmod(s.path, 0o777)
        try s.write("Makefile", Self.makefile)
        chmod(s.path + "/Makefile", 0o644)
        let trace = s.path + "/trace.jsonl"
        // --no-swap: as root on a machine without swap jobgov would add a zram device the size of the budget (here
        // the machine's memory), which this test has no use for.
        let args = [Clients.jobgov, "--cpu-threshold", "5", "--no-history", "--no-swap", "--trace", trace,
                    Clients.make43, "-j4"]
        let r = try Running(prefix[0], Array(prefix.dropFirst()) + args, in: s).finish(timeout: 90)
        #expect(r.status == 0, "\(r.stderr)", sourceLocation: sourceLocation)
        #expect(tier.contains { r.stderr.contains($0) }, "the start line names the tier: \(r.jobgovLines)", sourceLocation: sourceLocation)
        let log = JobLog(s.read("job.log"))
        #expect(log.count == 16, sourceLocation: sourceLocation)
        #expect(log.peak() <= 4, "the CPU rule holds the count at the jobs running, not the raised ceiling of 12 (peak \(log.peak()))",
                sourceLocation: sourceLocation)
        let ticks = s.read("trace.jsonl").split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        let busy = ticks.compactMap { $0["cpu_busy"] as? Double }
        #expect(ticks.count > 20 && busy.count >= ticks.count - 1, "a CPU reading every tick but the first (\(busy.count) of \(ticks.count))",
                sourceLocation: sourceLocation)
        let held = ticks.filter { ($0["reason"] as? String)?.split(separator: ",").contains("cpu") == true }
        #expect(!held.isEmpty, "some tick holds the count for CPU", sourceLocation: sourceLocation)
    }

    @Test("no cgroup for the build (an unprivileged user): the machine's CPU use holds the count")
    func noCgroup() throws {
        try check(["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"], tier: ["tier: jobserver only"])
    }

    @Test("cgroup v1 only (the v2 tree unmounted in a mount namespace of the test's own): the count is held")
    func v1Only() throws {
        try #require(FileManager.default.fileExists(atPath: "/sys/fs/cgroup/memory/memory.limit_in_bytes"),
                     "this test needs the v1 memory controller mounted at /sys/fs/cgroup/memory")
        // The namespace is private: unmounting the v2 tree there leaves the machine's mounts as they are.
        let unified = "/sys/fs/cgroup/unified"
        let v1 = FileManager.default.fileExists(atPath: unified + "/cgroup.procs")
            ? ["/usr/bin/unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", "umount \(unified) && exec \"$@\"", "sh"]
            : ["/usr/bin/env"]
        try check(v1, tier: ["(legacy cgroups)"])
    }

    @Test("the build's v2 cgroup: its cpu.stat holds the count")
    func v2() throws {
        try #require(FileManager.default.fileExists(atPath: "/sys/fs/cgroup/unified/cgroup.procs")
                     || FileManager.default.fileExists(atPath: "/sys/fs/cgroup/cgroup.procs"),
                     "this test needs a cgroup v2 tree")
        try check(["/usr/bin/env"], tier: ["(hybrid cgroups)", "(unified cgroups)"])
    }

    /// Two CPU-bound builds side by side on this 2-CPU machine, each `make -j1` raised to 8 by `jobgov ctl` once its
    /// first recipe runs. Alone, each build measures its CPU use against both CPUs, and the CPU rule's floor is one
    /// job per CPU: each runs 2 at once, 4 recipes on 2 CPUs. Under one `jobgov daemon` each build's share is one
    /// CPU: the rule measures against that and its floor is one job, so each runs 1 at once. (Threshold 5%, as
    /// above: on a loaded machine a build gets less than its share.)
    @Test("two builds under one jobgov daemon: each counts its share of the CPUs, not all of them")
    func twoBuildsShareTheCPUs() throws {
        try Clients.require(Clients.make43)
        let s = try Scratch()
        try s.write("Makefile", """
            all: c1 c2 c3 c4
            c%:
            \t@echo "S $$(date +%s%N) $@" >> "$(JOBLOG)"; timeout 2 sh -c 'while :; do :; done' || :; echo "E $$(date +%s%N) $@" >> "$(JOBLOG)"

            """)
        let socket = s.path + "/daemon.sock"
        func run(daemon: String) throws -> [(log: JobLog, trace: [[String: Any]], stderr: String)] {
            let builds = try ["a", "b"].map { name in
                try Running(Clients.jobgov, ["--daemon-socket", daemon, "--cpu-threshold", "5", "--no-history", "--no-swap",
                                             "--trace", "\(s.path)/\(name)-\(daemon == "none" ? "alone" : "daemon").jsonl",
                                             Clients.make43, "-j1"],
                            in: s, env: ["JOBLOG": "\(s.path)/\(name).log"], tag: name)
            }
            for name in ["a", "b"] {
                waitUntil("build \(name)'s first recipe") { s.read("\(name).log").contains("S ") }
            }
            // The rule reads the CPU use of the last interval, and a build learns a share at its next report.
            usleep(800_000)
            for (b, name) in zip(builds, ["a", "b"]) {
                _ = try Running(Clients.jobgov, ["ctl", "jobs", "8", "--pid", String(b.pid)], in: s, tag: "ctl-\(name)").finish()
            }
            return zip(builds, ["a", "b"]).map { b, name in
                let r = b.finish(timeout: 60)
                #expect(r.status == 0, "\(r.stderr)")
                let log = JobLog(s.read("\(name).log"))
                try? FileManager.default.removeItem(atPath: "\(s.path)/\(name).log")
                let trace = s.read("\(name)-\(daemon == "none" ? "alone" : "daemon").jsonl").split(separator: "\n").compactMap {
                    try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
                }
                return (log, trace, r.stderr)
            }
        }
        let alone = try run(daemon: "none")
        for b in alone {
            #expect(b.log.count == 4)
            #expect(b.log.peak() == 2, "alone, the CPU rule's floor is one job per CPU (peak \(b.log.peak()))")
            #expect(!b.trace.contains { $0["cpu_share"] != nil })
        }
        let daemon = try Running(Clients.jobgov, ["daemon", "--socket", socket, "--pool", "0"], in: s, tag: "daemon")
        defer { kill(daemon.pid, SIGTERM); _ = daemon.finish(timeout: 10) }
        waitUntil("the daemon's socket", timeout: 10) { access(socket, F_OK) == 0 }
        let shared = try run(daemon: socket)
        for b in shared {
            #expect(b.stderr.contains("joined jobgov daemon at \(socket)"), "\(b.stderr)")
            #expect(b.log.count == 4)
            #expect(b.log.peak() == 1, "under the daemon each build's floor is its share, one CPU (peak \(b.log.peak()))")
            let shares = b.trace.compactMap { $0["cpu_share"] as? Double }
            #expect(shares.filter { abs($0 - 1) < 0.25 }.count > shares.count / 2,
                    "most ticks plan with a share of about one CPU: \(Set(shares).sorted())")
            #expect(b.trace.contains { ($0["reason"] as? String)?.split(separator: ",").contains("cpu") == true })
        }
    }
}
