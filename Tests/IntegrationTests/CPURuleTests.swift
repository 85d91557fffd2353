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
}
