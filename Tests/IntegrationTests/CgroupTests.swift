import Foundation
import LinuxSystem
import Testing

private let isRoot = geteuid() == 0

/// The build's own cgroup on this kernel: placement before exec, freezing, the watchdog, limits, the OOM brake
/// and pressure. Everything created is removed, also when a test fails.
@Suite("Cgroups on the real kernel", .serialized, .enabled(if: isRoot, "needs root to create cgroups"))
struct CgroupTests {
    /// A job that appends a line every 50 ms, so the test can see whether the build makes progress.
    private static let counterMakefile = """
        all:
        \t@i=0; while [ $$i -lt 120 ]; do echo $$i >> counter; i=$$((i+1)); sleep 0.05; done

        """

    private func lines(_ s: Scratch, _ name: String) -> Int { s.read(name).split(separator: "\n").count }

    @Test("the build runs in jobgov-PID/build in every hierarchy, and the cgroups are gone afterwards")
    func placement() throws {
        try Clients.require(Clients.make44)
        let s = try Scratch()
        try s.write("Makefile", "all:\n\t@cat /proc/self/cgroup > cg.txt\n")
        let run = try Running(Clients.jobgov, [Clients.make44, "-j2"], in: s)
        let r = run.finish()
        #expect(r.status == 0, "\(r.stderr)")
        let cg = s.read("cg.txt")
        let layout = CgroupLayout.detect()
        if layout.unifiedMount != nil {
            #expect(cg.split(separator: "\n").contains { $0.hasPrefix("0::") && $0.hasSuffix("/jobgov-\(run.pid)/build") }, "\(cg)")
        }
        if layout.v1Mounts["memory"] != nil {
            #expect(cg.split(separator: "\n").contains { $0.contains(":memory:") && $0.hasSuffix("/jobgov-\(run.pid)/build") }, "\(cg)")
        }
        #expect(r.stderr.contains("in cgroup "))
        #expect(buildCgroupDirectories(jobgov: run.pid).isEmpty, "removed at exit")
    }

    @Test("freezing stops the build's progress; thawing resumes it")
    func freezeAndThaw() throws {
        try Clients.require(Clients.make44)
        let s = try Scratch()
        try s.write("Makefile", Self.counterMakefile)
        let run = try Running(Clients.jobgov, [Clients.make44], in: s)
        defer { if run.process.isRunning { kill(run.pid, SIGTERM) }; _ = run.finish(timeout: 20) }
        waitUntil("the counter to start") { lines(s, "counter") >= 5 }
        let freeze = try Running(Clients.jobgov, ["ctl", "freeze", "--pid", String(run.pid)], in: s, tag: "f").finish()
        #expect(freeze.status == 0, "\(freeze.stderr)")
        #expect(freeze.stdout.contains("frozen"))
        usleep(200_000)
        let atFreeze = lines(s, "counter")
        usleep(700_000)
        #expect(lines(s, "counter") == atFreeze, "no progress while frozen")
        let status = try Running(Clients.jobgov, ["ctl", "status", "--json", "--pid", String(run.pid)], in: s, tag: "st").finish()
        #expect(status.stdout.contains("\"frozen\":true"), "\(status.stdout)")
        let thaw = try Running(Clients.jobgov, ["ctl", "thaw", "--pid", String(run.pid)], in: s, tag: "t").finish()
        #expect(thaw.status == 0, "\(thaw.stderr)")
        waitUntil("progress after thawing", timeout: 5) { lines(s, "counter") > atFreeze + 3 }
        let r = run.finish()
        #expect(r.status == 0, "\(r.stderr)")
        #expect(lines(s, "counter") == 120)
    }

    /// jobgov is SIGKILLed while the build is frozen and limited: its watchdog thaws the build, lifts the limits,
    /// removes the FIFO's directory, and removes the cgroups once the build has ended.
    @Test("the watchdog thaws a frozen build when jobgov is killed with SIGKILL")
    func watchdog() throws {
        try Clients.require(Clients.make44)
        let s = try Scratch()
        try s.write("Makefile", Self.counterMakefile)
        let run = try Running(Clients.jobgov, ["--memory-budget", "256M", Clients.make44], in: s)
        waitUntil("the counter to start") { lines(s, "counter") >= 5 }
        let dirs = buildCgroupDirectories(jobgov: run.pid)
        #expect(!dirs.isEmpty)
        let memoryDir = dirs.first { $0.contains("/memory/") }
        if let memoryDir {
            let limit = (try? String(contentsOfFile: memoryDir + "/memory.limit_in_bytes", encoding: .utf8)) ?? ""
            #expect(UInt64(limit.trimmingCharacters(in: .whitespacesAndNewlines)) == (256 + 64) << 20, "budget + reserve")
        }
        let freeze = try Running(Clients.jobgov, ["ctl", "freeze", "--pid", String(run.pid)], in: s, tag: "f").finish()
        #expect(freeze.status == 0, "\(freeze.stderr)")
        usleep(300_000)
        let atFreeze = lines(s, "counter")
        kill(run.pid, SIGKILL)
        _ = run.finish()
        waitUntil("the watchdog to thaw the build", timeout: 5) { lines(s, "counter") > atFreeze + 3 }
        waitUntil("the runtime directory to go", timeout: 5) { s.runtimeLeftovers.isEmpty }
        if let memoryDir, FileManager.default.fileExists(atPath: memoryDir) {
            let limit = (try? String(contentsOfFile: memoryDir + "/memory.limit_in_bytes", encoding: .utf8)) ?? "0"
            #expect((UInt64(limit.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0) > 1 << 60, "limit lifted")
        }
        waitUntil("the build to finish", timeout: 20) { lines(s, "counter") == 120 }
        waitUntil("the cgroups to be removed", timeout: 10) { dirs.allSatisfy { !FileManager.default.fileExists(atPath: $0) } }
    }

    /// A build that thrashes file pages in a 100 MiB budget stalls on memory; the kernel's PSI trigger on the build's
    /// cgroup wakes jobgov (counted in `ctl status`), without waiting for a tick.
    @Test("a memory stall of the build fires jobgov's PSI trigger")
    func pressureTrigger() throws {
        try Clients.require(Clients.make44)
        let s = try Scratch()
        try s.write("Makefile", """
            all:
            \t@head -c 250M /dev/urandom > thrash.dat
            \t@timeout 5 python3 -c 'import mmap, random; f = open("thrash.dat", "rb"); m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ); n = len(m) // 4096; [m[random.randrange(n) * 4096] for _ in iter(int, 1)]' || true
            \t@sleep 2.5; $(JOBGOV) ctl status --json > status.json; rm -f thrash.dat

            """)
        let r = try jobgov(["--memory-budget", "100M", Clients.make44], in: s, timeout: 60)
        #expect(r.status == 0, "\(r.stderr)")
        let status = PoolStatusFields(s.read("status.json"))
        #expect(status["memory_budget"] == String(100 << 20))
        #expect(status["memory_budget_source"] == "--memory-budget")
        #expect(Int(status["pressure_events"] ?? "0") ?? 0 >= 1, "\(s.read("status.json"))")
    }

    @Test("without --memory-budget the budget is derived from the machine")
    func derivedBudget() throws {
        let s = try Scratch()
        let r = try jobgov(["--", "/bin/sh", "-c", "\"$JOBGOV\" ctl status --json > status.json"], in: s)
        #expect(r.status == 0, "\(r.stderr)")
        let status = PoolStatusFields(s.read("status.json"))
        let total = UInt64(sysconf(Int32(_SC_PHYS_PAGES))) * UInt64(sysconf(Int32(_SC_PAGESIZE)))
        let budget = UInt64(status["memory_budget"] ?? "0") ?? 0
        #expect(["total memory", "cgroup limit"].contains(status["memory_budget_source"] ?? ""), "\(status)")
        #expect(budget > 0 && budget < total)
    }

    @Test("--cpu-max sets the build's CPU bandwidth")
    func cpuMax() throws {
        let s = try Scratch()
        // The build reads its own cgroup's quota: v2 cpu.max, or v1 cpu.cfs_quota_us one level up from its leaf.
        let script = """
            v2=$(sed -n 's/^0:://p' /proc/self/cgroup); v1=$(sed -n 's/^[0-9]*:cpu\\(,cpuacct\\)\\?://p' /proc/self/cgroup)
            if [ -f /sys/fs/cgroup/$v2/../cpu.max ]; then cut -d' ' -f1 /sys/fs/cgroup/$v2/../cpu.max > quota
            else cat /sys/fs/cgroup/cpu/$v1/../cpu.cfs_quota_us > quota; fi
            """
        let r = try jobgov(["--cpu-max", "0.5", "--", "/bin/sh", "-c", script], in: s)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(s.read("quota").trimmingCharacters(in: .whitespacesAndNewlines) == "50000")
        let bad = try jobgov(["--cpu-max", "lots", "--", "/bin/true"], in: s)
        #expect(bad.status == 2 && bad.stderr.contains("--cpu-max"), "\(bad.stderr)")
    }

    /// `--cgroup PATH` names a parent prepared by the user (cgcreate), relative to the cgroup mounts; the build's
    /// cgroup is made below it and removed, the parent is left alone. A parent that does not exist is one line.
    @Test("--cgroup puts the build below a parent the user prepared")
    func userParent() throws {
        let layout = CgroupLayout.detect()
        let name = "jobgov-parent-\(getpid())"
        let parents = ([layout.unifiedMount] + ["memory"].map { layout.v1Mounts[$0] }).compactMap { $0 }.map { "\($0)/\(name)" }
        for dir in parents { mkdir(dir, 0o755) }
        defer { for dir in parents { rmdir(dir) } }
        let s = try Scratch()
        let r = try jobgov(["--cgroup", name, "--", "/bin/sh", "-c", "cat /proc/self/cgroup > cg"], in: s)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(s.read("cg").split(separator: "\n").contains { $0.hasPrefix("0::/\(name)/jobgov-") && $0.hasSuffix("/build") },
                "\(s.read("cg"))")
        for dir in parents {
            #expect(FileManager.default.fileExists(atPath: dir), "the user's parent stays")
            #expect(BuildCgroup.subdirectories(dir).isEmpty, "jobgov's cgroup below it is gone")
        }
        let missing = try jobgov(["--cgroup", "no-such-parent-\(getpid())", "--", "/bin/true"], in: s)
        #expect(missing.status == 1)
        #expect(missing.stderr.split(separator: "\n").count == 1 && missing.stderr.contains("does not exist; create it first"),
                "\(missing.stderr)")
    }

    @Test("a mistake in --memory-budget gets one line")
    func badBudget() throws {
        let s = try Scratch()
        for bad in ["lots", "0", "1K", "150%"] {
            let r = try jobgov(["--memory-budget", bad, "--", "/bin/true"], in: s, timeout: 20)
            #expect(r.status == 2, "\(bad): \(r.stderr)")
            #expect(r.stderr.split(separator: "\n").count == 1 && r.stderr.contains("invalid size"), "\(r.stderr)")
        }
        let conflict = try jobgov(["--no-cgroup", "--memory-budget", "1G", "--", "/bin/true"], in: s, timeout: 20)
        #expect(conflict.status == 2 && conflict.stderr.contains("--no-cgroup"), "\(conflict.stderr)")
    }

    @Test("without privileges the build runs with the jobserver alone, and says why")
    func unprivileged() throws {
        try Clients.require(Clients.make43)
        let s = try Scratch()
        chmod(s.path, 0o777)
        try s.write("Makefile", flatMakefile(count: 4, seconds: 0.2))
        chmod(s.path + "/Makefile", 0o644)
        let asNobody = ["--reuid=65534", "--regid=65534", "--clear-groups", "--", Clients.jobgov]
        let r = try Running("/usr/bin/setpriv", asNobody + [Clients.make43, "-j2"], in: s).finish()
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("no cgroup (cannot create cgroup"), "\(r.stderr)")
        #expect(JobLog(s.read("job.log")).count == 4)
        let budget = try Running("/usr/bin/setpriv", asNobody + ["--memory-budget", "1G", Clients.make43], in: s, tag: "b").finish()
        #expect(budget.status == 1)
        #expect(budget.stderr.contains("--memory-budget needs a cgroup"), "\(budget.stderr)")
        #expect(budget.stderr.split(separator: "\n").count == 1, "\(budget.stderr)")
    }
}
