import Foundation
import LinuxSystem
import Testing

private let isRoot = geteuid() == 0

/// Builds that share one memory-limited cgroup through `jobgov daemon`: the example memory-hungry build under make
/// and under ninja, started together in a box each fits alone, with the daemon SIGKILLed and started again while
/// they run.
@Suite("Builds sharing a budget through jobgov daemon", .serialized,
       .enabled(if: isRoot, "needs root to create memory-limited cgroups"))
struct DaemonBuildTests {
    static let example = Clients.repo.appendingPathComponent("examples/memory-hungry").path
    static let memjob = Clients.repo.appendingPathComponent("examples/memjob/memjob.c").path
    /// Each build alone fits in 1 GiB (the example is made for it: GovernorBuildTests); two at once do not.
    static let box: UInt64 = 1 << 30

    /// A copy of the example in `dir` of `s`.
    private func copyExample(into s: Scratch, _ dir: String) throws {
        try FileManager.default.createDirectory(atPath: s.path + "/\(dir)/mh", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: s.path + "/\(dir)/memjob", withIntermediateDirectories: true)
        for name in ["Makefile", "build.ninja"] {
            try FileManager.default.copyItem(atPath: Self.example + "/" + name, toPath: s.path + "/\(dir)/mh/" + name)
        }
        try FileManager.default.copyItem(atPath: Self.memjob, toPath: s.path + "/\(dir)/memjob/memjob.c")
    }

    /// `jobgov make -j12` (make 4.4.1) and `jobgov ninja -j12` (`--no-swap` unless `swap`), each on its own copy of the
    /// example, started together in `box`, looking for the daemon at `socket` ("none": no daemon).
    private func startBuilds(in box: GovernorBuildTests.LimitedCgroup, _ s: Scratch, socket: String,
                             swap: Bool) throws -> (make: Running, ninja: Running) {
        try Clients.require(Clients.make44)
        try Clients.require(Clients.ninja)
        try copyExample(into: s, "a")
        try copyExample(into: s, "b")
        let env = ["PATH": Clients.repo.appendingPathComponent(".deps/bin").path + ":/usr/bin:/bin",
                   "XDG_STATE_HOME": s.path + "/state", "JOBGOV_DAEMON_SOCKET": socket]
        let flags = swap ? [] : ["--no-swap"]
        let make = try Running("/bin/sh", box.wrap([Clients.jobgov] + flags + [Clients.make44, "-j12"]), in: s,
                               cwd: s.path + "/a/mh", env: env, tag: "make")
        let ninja = try Running("/bin/sh", box.wrap([Clients.jobgov] + flags + [Clients.ninja, "-j12"]), in: s,
                                cwd: s.path + "/b/mh", env: env, tag: "ninja")
        return (make, ninja)
    }

    private func startDaemon(_ box: GovernorBuildTests.LimitedCgroup, socket: String, in s: Scratch, tag: String,
                             _ extra: [String] = []) throws -> Running {
        let daemon = try Running("/bin/sh", box.wrap([Clients.jobgov, "daemon", "--socket", socket] + extra), in: s, tag: tag)
        waitUntil("the daemon's socket", timeout: 10) { access(socket, F_OK) == 0 }
        return daemon
    }

    private func daemonStatus(_ socket: String, in s: Scratch) throws -> [String: Any] {
        let r = try jobgov(["daemon", "--status", "--json", "--socket", socket], in: s, timeout: 10)
        return (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]) ?? [:]
    }

    /// What the daemon is for: the same two builds in the same box, each jobgov planning as if alone.
    @Test("without the daemon, the same two builds together meet the box's OOM killer")
    func withoutTheDaemonTheBoxOOMKills() throws {
        let s = try Scratch()
        let box = try GovernorBuildTests.LimitedCgroup("alone", limit: Self.box)
        let watch = OOMKillWatch(box)
        let (make, ninja) = try startBuilds(in: box, s, socket: "none", swap: false)
        let results = [make.finish(timeout: 240), ninja.finish(timeout: 240)]
        // Usually they do (5 OOM kills in the benchmark's run), not always: two jobgovs that each plan for the whole
        // box can still miss each other's peaks (none in one full test run, 2026-11-27). Recorded as intermittent.
        let kills = watch.stop()
        withKnownIssue("two jobgovs without a daemon do not always meet the OOM killer", isIntermittent: true) {
            #expect(kills > 0, "two builds that each plan for the whole box met no OOM kill this time (\(results.map(\.status)))")
        }
        #expect(!results.contains { $0.jobgovLines.first?.contains("joined jobgov daemon") == true })
    }

    @Test("make and ninja builds together in one box: 0 OOM kills; the daemon SIGKILLed mid-build, builds finish and rejoin")
    func twoBuildsShareOneBox() throws {
        let s = try Scratch()
        let box = try GovernorBuildTests.LimitedCgroup("daemon", limit: Self.box)
        let watch = OOMKillWatch(box)
        let socket = s.path + "/daemon.sock"
        var daemon = try startDaemon(box, socket: socket, in: s, tag: "daemon1")
        // With page-out (the default as root): without it, both builds' oldest jobs can be 450 MiB links at once,
        // and on a first build (no history) no link's peak is predicted, so the daemon cannot tell the newer build
        // to yield its link (aNewerBuildYieldsItsOldestJob), and frozen links keep their memory.
        let (make, ninja) = try startBuilds(in: box, s, socket: socket, swap: true)
        waitUntil("both builds joined", timeout: 20) {
            (try? daemonStatus(socket, in: s)["builds"] as? [Any])??.count == 2
        }
        let status = try daemonStatus(socket, in: s)
        let budget = status["budget_bytes"] as? UInt64 ?? 0
        let shares = (status["builds"] as? [[String: Any]] ?? []).compactMap { $0["share_bytes"] as? UInt64 }
        #expect(shares.count == 2 && shares.reduce(0, +) <= budget && budget < Self.box, "\(status)")

        // Mid-build, the daemon dies; the builds keep their shares and run on. A new daemon is found again.
        sleep(6)
        kill(daemon.pid, SIGKILL)
        _ = daemon.finish(timeout: 10)
        sleep(2)
        #expect(make.process.isRunning && ninja.process.isRunning, "the builds run on without the daemon")
        daemon = try startDaemon(box, socket: socket, in: s, tag: "daemon2")
        waitUntil("both builds rejoined", timeout: 20) {
            (try? daemonStatus(socket, in: s)["builds"] as? [Any])??.count == 2
                || !make.process.isRunning || !ninja.process.isRunning
        }

        let madeResult = make.finish(timeout: 240)
        let ninjaResult = ninja.finish(timeout: 240)
        kill(daemon.pid, SIGTERM)
        let daemonEnd = daemon.finish(timeout: 10)
        let kills = watch.stop()
        for (name, r) in [("make", madeResult), ("ninja", ninjaResult)] {
            #expect(r.status == 0, "\(name): \(r.jobgovLines.joined(separator: "\n"))\n\(r.stderr.suffix(1500))")
            let lines = r.jobgovLines
            #expect(lines.first?.contains("joined jobgov daemon at \(socket)") == true, "\(name): \(lines.first ?? "")")
            #expect(lines.contains { $0.contains("jobgov daemon at \(socket) is out of reach") }, "\(name)")
            #expect(lines.contains { $0.contains("rejoined jobgov daemon") }, "\(name): \(lines.joined(separator: "\n"))")
            #expect(lines.contains { $0.contains(" 0 OOM kills") }, "\(name)")
        }
        #expect(kills == 0, "OOM kills in the box: \(kills)")
        #expect(FileManager.default.fileExists(atPath: s.path + "/a/mh/out/bin/app"))
        #expect(FileManager.default.fileExists(atPath: s.path + "/b/mh/out/bin/app"))
        #expect(daemonEnd.status == 0, "\(daemonEnd.stderr)")
        #expect(daemonEnd.stderr.contains("joined"), "the new daemon saw the builds come back: \(daemonEnd.stderr)")
        #expect(access(socket, F_OK) != 0, "the daemon removes its socket when it stops")
    }

    /// Three ninja builds whose one job is a 400 MiB "link" (memjob, 3 s to its peak), started half a second apart
    /// in one 1 GiB box, `--no-swap`, with the history of one earlier build of each: two links fit beside each other,
    /// three do not. Each link is its build's oldest job, started on ninja's own implicit slot, which no share can
    /// hold back; without the daemon the box's OOM killer ends one. With it, a newer build whose link cannot grow
    /// beside the older ones' is told to yield: it freezes its link while the link is small and runs it once the
    /// room is there.
    @Test("three builds whose oldest jobs are large links: a newer build yields its link until there is room; 0 OOM kills")
    func aNewerBuildYieldsItsOldestJob() throws {
        try Clients.require(Clients.ninja)
        let s = try Scratch()
        let cc = try Running("/usr/bin/cc", ["-O2", "-o", s.path + "/memjob", Self.memjob], in: s, tag: "cc")
            .finish(timeout: 60)
        try #require(cc.status == 0, "\(cc.stderr)")
        let dirs = ["a", "b", "c"]
        for d in dirs {
            try FileManager.default.createDirectory(atPath: s.path + "/" + d, withIntermediateDirectories: true)
            try s.write(d + "/build.ninja", """
                rule link
                  command = \(s.path)/memjob --name link --peak 400 --ramp 3 --hold 0.5 --cpu 0.1 --out $out
                build out: link

                """)
        }
        func env(_ socket: String) -> [String: String] {
            ["PATH": "/usr/bin:/bin", "XDG_STATE_HOME": s.path + "/state", "JOBGOV_DAEMON_SOCKET": socket]
        }
        // The history: each build once, alone.
        for d in dirs {
            let box = try GovernorBuildTests.LimitedCgroup("yield-" + d, limit: Self.box)
            let r = try Running("/bin/sh", box.wrap([Clients.jobgov, "--no-swap", Clients.ninja, "-j4"]), in: s,
                                cwd: s.path + "/" + d, env: env("none"), tag: "history-" + d).finish(timeout: 60)
            #expect(r.status == 0, "\(r.stderr)")
            try FileManager.default.removeItem(atPath: s.path + "/" + d + "/out")
        }
        /// The three builds, half a second apart, in a fresh box; their results and the box's OOM kills.
        func together(socket: String, tag: String) throws -> ([RunResult], UInt64) {
            let box = try GovernorBuildTests.LimitedCgroup(tag, limit: Self.box)
            let watch = OOMKillWatch(box)
            let daemon = socket == "none" ? nil : try startDaemon(box, socket: socket, in: s, tag: tag + "-daemon")
            var builds: [Running] = []
            for d in dirs {
                try? FileManager.default.removeItem(atPath: s.path + "/" + d + "/out")
                builds.append(try Running("/bin/sh", box.wrap([Clients.jobgov, "--no-swap", "--trace",
                                                               s.path + "/\(tag)-\(d).trace", Clients.ninja, "-j4"]),
                                          in: s, cwd: s.path + "/" + d, env: env(socket), tag: tag + "-" + d))
                usleep(500_000)
            }
            let results = builds.map { $0.finish(timeout: 120) }
            if let daemon {
                kill(daemon.pid, SIGTERM)
                _ = daemon.finish(timeout: 10)
            }
            return (results, watch.stop())
        }
        let (alone, aloneKills) = try together(socket: "none", tag: "yield-alone")
        #expect(aloneKills > 0, "three 400 MiB links in 1 GiB, each jobgov planning alone: \(alone.map(\.status))")

        let (shared, kills) = try together(socket: s.path + "/daemon.sock", tag: "yield-daemon")
        #expect(kills == 0, "OOM kills in the box: \(kills)")
        for (d, r) in zip(dirs, shared) {
            #expect(r.status == 0, "\(d): \(r.jobgovLines.joined(separator: "\n"))")
            #expect(r.jobgovLines.first?.contains("joined jobgov daemon") == true, "\(d)")
        }
        // The newest build yielded: told so in its trace, its link frozen at least once.
        let trace = (try? String(contentsOfFile: s.path + "/yield-daemon-c.trace", encoding: .utf8)) ?? ""
        #expect(trace.contains("\"yields\":true"), "the third build was never told to yield")
        #expect(shared[2].jobgovLines.contains { $0.contains("memory:") && !$0.contains(" 0 job freezes") },
                "\(shared[2].jobgovLines.joined(separator: "\n"))")
        #expect(dirs.allSatisfy { FileManager.default.fileExists(atPath: s.path + "/" + $0 + "/out") })
    }

    /// The plain client's build: `count` jobs of 16 MiB (memjob, 1.5 s each) that record their start and end in
    /// `log`, for make without `-j`.
    private func plainBuild(into s: Scratch, count: Int, log: String) throws {
        try FileManager.default.createDirectory(atPath: s.path + "/p/memjob", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Self.memjob, toPath: s.path + "/p/memjob/memjob.c")
        let names = (1...count).map { "p\($0)" }
        try s.write("p/Makefile", """
            all: \(names.joined(separator: " "))
            memjob/memjob: memjob/memjob.c
            \tcc -O2 -o $@ $<
            \(names.joined(separator: " ")): memjob/memjob
            \t@echo "S $$(date +%s%N) $@" >> \(log)
            \t@memjob/memjob --name $@ --peak 16 --ramp 1 --hold 0.5 --out $@
            \t@echo "E $$(date +%s%N) $@" >> \(log)

            """)
    }

    /// Three builds started together in one 1 GiB box: `jobgov make -j12`, `jobgov ninja -j12` (the whole example
    /// each, with page-out as in the test above) and a plain `make` (4.4.1, no `-j`) that joined the daemon's pool
    /// with `MAKEFLAGS=--jobserver-auth=fifo:PATH`; the daemon is SIGKILLed mid-build and started again.
    ///
    /// The daemon cannot see the plain client's memory: it has no governor and no cgroup of jobgov's, so no share
    /// counts it and nothing shrinks when it grows. What keeps the box safe from it is its size, which the test
    /// holds to and checks: a pool of 2 tokens plus make's own implicit slot is at most 3 jobs of 16 MiB at once
    /// (the job log says how many ran at once), and the daemon is given that much less than the 889 MiB it would
    /// derive from the box (1 GiB less 32 MiB and a reserve of a tenth), as an administrator who runs plain
    /// builds beside governed ones would. A plain client with large jobs could still meet the OOM killer here.
    @Test("make, ninja and a plain make on the daemon's pool together in one box: 0 OOM kills; the daemon SIGKILLed mid-build")
    func threeBuildsWithAPlainClient() throws {
        let s = try Scratch()
        let box = try GovernorBuildTests.LimitedCgroup("three", limit: Self.box)
        let watch = OOMKillWatch(box)
        let socket = s.path + "/daemon.sock"
        let daemonFlags = ["--pool", "2", "--memory-budget", "825M"]
        var daemon = try startDaemon(box, socket: socket, in: s, tag: "daemon1", daemonFlags)
        let plainLog = s.path + "/plain.log"
        try plainBuild(into: s, count: 36, log: plainLog)
        let (make, ninja) = try startBuilds(in: box, s, socket: socket, swap: true)
        let plain = try Running("/bin/sh", box.wrap([Clients.make44]), in: s, cwd: s.path + "/p",
                                env: ["MAKEFLAGS": "--jobserver-auth=fifo:\(s.path)/jobserver"], tag: "plain")
        waitUntil("both governed builds joined", timeout: 20) {
            (try? daemonStatus(socket, in: s)["builds"] as? [Any])??.count == 2
        }
        let status = try daemonStatus(socket, in: s)
        let shares = (status["builds"] as? [[String: Any]] ?? []).compactMap { $0["share_bytes"] as? UInt64 }
        #expect(status["budget_bytes"] as? UInt64 == 825 << 20 && shares.count == 2 && shares.reduce(0, +) <= 825 << 20,
                "\(status)")

        sleep(6)
        kill(daemon.pid, SIGKILL)
        _ = daemon.finish(timeout: 10)
        // Without the daemon, all three go on: the governed builds on their last shares, the plain one on the pool's
        // FIFO, which it holds open.
        let endedBefore = JobLog(s.read("plain.log")).count
        sleep(3)
        #expect(JobLog(s.read("plain.log")).count > endedBefore || !plain.process.isRunning,
                "the plain build stopped while the daemon was gone")
        #expect(make.process.isRunning && ninja.process.isRunning, "the governed builds run on without the daemon")
        daemon = try startDaemon(box, socket: socket, in: s, tag: "daemon2", daemonFlags)
        waitUntil("the governed builds rejoined", timeout: 20) {
            (try? daemonStatus(socket, in: s)["builds"] as? [Any])??.count == 2
                || !make.process.isRunning || !ninja.process.isRunning
        }

        let results = [("make", make.finish(timeout: 180)), ("ninja", ninja.finish(timeout: 180))]
        let plainResult = plain.finish(timeout: 180)
        kill(daemon.pid, SIGTERM)
        let daemonEnd = daemon.finish(timeout: 10)
        let kills = watch.stop()
        for (name, r) in results {
            #expect(r.status == 0, "\(name): \(r.jobgovLines.joined(separator: "\n"))\n\(r.stderr.suffix(1500))")
            #expect(r.jobgovLines.first?.contains("joined jobgov daemon at \(socket)") == true, "\(name)")
            #expect(r.jobgovLines.contains { $0.contains("rejoined jobgov daemon") }, "\(name): \(r.jobgovLines)")
            #expect(r.jobgovLines.contains { $0.contains(" 0 OOM kills") }, "\(name)")
        }
        #expect(plainResult.status == 0, "plain make: \(plainResult.stderr.suffix(1500))")
        let jobs = JobLog(s.read("plain.log"))
        #expect(jobs.count == 36, "the plain build's jobs that ran: \(jobs.count)")
        // It used the pool (more than its implicit slot) and no more than the pool allows: the bound on its memory.
        #expect((2...3).contains(jobs.peak()), "the plain build ran \(jobs.peak()) jobs at once")
        #expect(kills == 0, "OOM kills in the box: \(kills)")
        #expect(FileManager.default.fileExists(atPath: s.path + "/a/mh/out/bin/app"))
        #expect(FileManager.default.fileExists(atPath: s.path + "/b/mh/out/bin/app"))
        #expect(daemonEnd.status == 0, "\(daemonEnd.stderr)")
        // Nothing frozen is left, and no cgroup: every build's cgroup below the box's leaf is gone.
        #expect(!box.cgroup.isFrozen)
        for dir in box.cgroup.topDirectories {
            #expect(BuildCgroup.subdirectories(dir + "/" + box.cgroup.leafName).isEmpty, "left below \(dir)")
        }
    }

    /// An unprivileged user's build cannot make a cgroup, so alone it has no memory limit and cannot freeze a job.
    /// `jobgov daemon --cgroups` (root, in the box as a service is in its unit's cgroup) makes one below its own and
    /// moves the build's jobgov there: the build runs with the delegated tier, its budget from the box, its jobs in
    /// its own leaf, and the daemon removes what it made once the build has ended.
    @Test("an unprivileged build gets a cgroup from jobgov daemon --cgroups: delegated tier, jobs in its leaf, 0 OOM kills, nothing left")
    func unprivilegedBuildGetsACgroup() throws {
        try Clients.require(Clients.make44)
        let s = try Scratch()
        chmod(s.path, 0o711)
        let box = try GovernorBuildTests.LimitedCgroup("cgroups", limit: Self.box)
        let socket = s.path + "/daemon.sock"
        let daemon = try startDaemon(box, socket: socket, in: s, tag: "daemon", ["--cgroups", "--group", "nogroup", "--pool", "0"])
        try copyExample(into: s, "u")
        // Every job writes where it ran; the tree is the user's.
        let makefile = try String(contentsOfFile: s.path + "/u/mh/Makefile", encoding: .utf8)
        try (makefile + "\nwhere:\n\t@cat /proc/self/cgroup > where.txt\n")
            .write(toFile: s.path + "/u/mh/Makefile", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: s.path + "/u/tmp", withIntermediateDirectories: true)
        for dir in ["/u", "/u/mh", "/u/memjob", "/u/tmp"] { chmod(s.path + dir, 0o777) }
        let watch = OOMKillWatch(box)
        let env = ["PATH": Clients.repo.appendingPathComponent(".deps/bin").path + ":/usr/bin:/bin",
                   "TMPDIR": s.path + "/u/tmp", "XDG_STATE_HOME": s.path + "/u/tmp", "JOBGOV_DAEMON_SOCKET": socket]
        let build = try Running("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", Clients.jobgov,
                                                     Clients.make44, "-j12", "all", "where"],
                                in: s, cwd: s.path + "/u/mh", env: env, tag: "nobody")
        let r = build.finish(timeout: 240)
        let kills = watch.stop()
        #expect(r.status == 0, "\(r.stderr)")
        let lines = r.jobgovLines
        #expect(lines.first?.contains("from jobgov daemon at \(socket)") == true, "\(lines.first ?? "")")
        #expect(lines.first?.contains("(cgroup limit)") == true, "the budget comes from the box: \(lines.first ?? "")")
        #expect(lines.contains { $0.hasPrefix("jobgov: tier: delegated cgroup") && $0.contains("freezing single jobs") },
                "\(lines.joined(separator: "\n"))")
        #expect(kills == 0, "\(r.stderr)")
        let where_ = (try? String(contentsOfFile: s.path + "/u/mh/where.txt", encoding: .utf8)) ?? ""
        #expect(where_.contains("/build-") && where_.contains("/jobgov-") && where_.contains("/build\n"),
                "a job ran in the build's leaf below the daemon's grant: \(where_)")
        // The daemon removes the grant within its next housekeeping (every second) once the build's jobgov is gone.
        let own = box.cgroup.topDirectories.map { $0 + "/" + box.cgroup.leafName }
        waitUntil("the daemon to remove the cgroups it made", timeout: 10) {
            own.allSatisfy { dir in BuildCgroup.subdirectories(dir).allSatisfy { !$0.hasPrefix("build-") } }
        }
        kill(daemon.pid, SIGTERM)
        let end = daemon.finish(timeout: 10)
        #expect(end.stderr.contains("made cgroups for process"), "\(end.stderr)")
        #expect(end.stderr.contains("removed the cgroups of build"), "\(end.stderr)")
    }
}

/// OOM kills anywhere in a v1 memory subtree while builds run. v1 counts a kill only in the victim's own cgroup, and
/// a build's cgroup goes when its jobgov ends: so each cgroup's count is watched while it exists, its highest kept.
final class OOMKillWatch: @unchecked Sendable {
    private let lock = NSLock()
    private var seen: [String: UInt64] = [:]
    private var running = true
    private let thread: Thread

    /// v2's memory.events is hierarchical and outlives the builds' cgroups: read once at the end.
    private let hierarchical: GovernorBuildTests.LimitedCgroup?

    init(_ limited: GovernorBuildTests.LimitedCgroup) {
        let memoryDirectory = limited.cgroup.directories.memory ?? ""
        hierarchical = limited.cgroup.directories.memory == nil ? limited : nil
        let box = WatchBox()
        thread = Thread { box.watch?() }
        box.watch = { [unowned self] in
            while !memoryDirectory.isEmpty, lock.withLock({ running }) {
                for (dir, n) in Self.counts(below: memoryDirectory) {
                    lock.withLock { seen[dir] = max(seen[dir] ?? 0, n) }
                }
                usleep(50_000)
            }
        }
        thread.start()
    }

    private final class WatchBox: @unchecked Sendable { var watch: (() -> Void)? }

    private static func counts(below dir: String) -> [(String, UInt64)] {
        var out: [(String, UInt64)] = []
        if let text = readSmallFile(dir + "/memory.oom_control"),
           let line = text.split(separator: "\n").first(where: { $0.hasPrefix("oom_kill ") }),
           let n = UInt64(line.dropFirst("oom_kill ".count)) {
            out.append((dir, n))
        }
        for child in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: dir + "/" + child, isDirectory: &isDir), isDir.boolValue {
                out += counts(below: dir + "/" + child)
            }
        }
        return out
    }

    /// Stops watching; the kills seen.
    func stop() -> UInt64 {
        lock.withLock { running = false }
        while thread.isExecuting { usleep(10_000) }
        if let hierarchical { return hierarchical.oomKills }
        return lock.withLock { seen.values.reduce(0, +) }
    }
}
