import Foundation
#if canImport(Glibc)
import Glibc
#endif
import LinuxSystem
import Testing

private let isRoot = geteuid() == 0
private let distccd = "/usr/bin/distccd"
private let distcc = "/usr/bin/distcc"

/// Distributed builds with real distcc: two `distccd` helpers on loopback ports, each in a memory- and CPU-limited
/// cgroup of its own beside the build's (their compiles are not the build's memory), and `make -j16` with
/// `CXX = distcc g++` in a box of 640 MiB. The 12 compiles are C++ template grids (RealCompilerRerunTests.templateGrid
/// of 220) of about 230 MiB each with g++ -O2 (n = 206 measured alone: 199 MiB, 2.5 s of CPU), whose preprocessing,
/// the part distcc runs here, takes ~20 MiB. distcc runs at most 4 fallback compiles here at once (its local slots on
/// this 2-CPU machine, measured: 4 local cc1plus at most after the helpers were killed), which is still 900 MiB.
@Suite("distcc builds", .serialized, .enabled(if: isRoot, "needs root to create memory-limited cgroups"))
struct DistccBuildTests {
    static let files = 12
    static let box: UInt64 = 640 << 20

    /// A `distccd` on a loopback port in a cgroup of its own (1 GiB, one CPU).
    final class Helper {
        let daemon: HelperDaemon
        let port: Int

        init(_ index: Int, in s: Scratch) throws {
            port = try HelperDaemon.freePort()
            // distccd compiles as an unprivileged user, in TMPDIR: not the test's private scratch directory.
            daemon = try HelperDaemon("distccd-\(index)",
                                      [distccd, "--no-detach", "--daemon", "--listen", "127.0.0.1", "--port", "\(port)",
                                       "--allow", "127.0.0.1", "--jobs", "4", "--log-stderr"],
                                      env: ["TMPDIR": "/tmp"], in: s)
            let port = port
            try daemon.waitReady("listening on \(port)") { HelperDaemon.accepts(port: port) }
        }

        var hostSpec: String { "127.0.0.1:\(port)/4" }

        /// Compiles this helper finished (distccd logs one `COMPILE_OK` line for each).
        var compiles: Int { daemon.log.components(separatedBy: "COMPILE_OK").count - 1 }

        /// Kills every process of the helper, as when its machine goes away.
        func kill() { daemon.kill() }
    }

    /// The project: `t1.cpp` ... `tN.cpp` (template grids, RealCompilerRerunTests.templateGrid with a function of
    /// their own) and a main that links them.
    private func project() throws -> Scratch {
        let s = try Scratch()
        for k in 1...Self.files {
            let grid = RealCompilerRerunTests.templateGrid(220 + k % 3)
                .replacingOccurrences(of: "grid_value()", with: "grid_value_\(k)()")
            try s.write("t\(k).cpp", grid)
        }
        let decls = (1...Self.files).map { "unsigned grid_value_\($0)();" }.joined(separator: "\n")
        let sum = (1...Self.files).map { "grid_value_\($0)()" }.joined(separator: " + ")
        try s.write("main.cpp", "\(decls)\nint main() { return (\(sum)) == 0; }\n")
        try s.write("Makefile", """
            CXX = distcc g++
            OBJS = $(patsubst %.cpp,%.o,$(wildcard t*.cpp))
            prog: $(OBJS) main.o
            \tg++ -o $@ $^
            %.o: %.cpp
            \t$(CXX) -O2 -c $< -o $@

            """)
        try FileManager.default.createDirectory(atPath: s.path + "/distcc", withIntermediateDirectories: true)
        return s
    }

    private func env(_ s: Scratch, _ helpers: [Helper]) -> [String: String] {
        ["DISTCC_HOSTS": helpers.map(\.hostSpec).joined(separator: " "), "DISTCC_DIR": s.path + "/distcc",
         "PATH": "/usr/bin:/bin", "XDG_STATE_HOME": s.path + "/state"]
    }

    /// A point of the build at which helpers are killed: once `when` holds (checked every 20 ms).
    struct Kill {
        var what: String
        var helpers: [Helper]
        var when: () -> Bool
    }

    /// Kills the helpers once `count` objects exist (the first compiles are done, the others are in flight).
    private func afterObjects(_ count: Int, in s: Scratch, kill helpers: [Helper]) -> Kill {
        Kill(what: "\(count) objects", helpers: helpers) {
            ((try? FileManager.default.contentsOfDirectory(atPath: s.path)) ?? []).filter { $0.hasSuffix(".o") }
                .count >= count
        }
    }

    /// Runs `command` in the box, killing helpers at each of `kills` in turn; says for each whether the build was
    /// still running when its helpers were killed.
    private func build(_ command: [String], tag: String, in s: Scratch, helpers: [Helper],
                       kills: [Kill] = []) throws -> (RunResult, UInt64, midBuild: [Bool]) {
        let box = try GovernorBuildTests.LimitedCgroup("distcc-\(tag)", limit: Self.box)
        let run = try Running("/bin/sh", box.wrap(command), in: s, env: env(s, helpers), tag: tag)
        var midBuild: [Bool] = []
        for k in kills {
            waitUntil(k.what, timeout: 180) { k.when() || !run.process.isRunning }
            midBuild.append(run.process.isRunning)
            for h in k.helpers { h.kill() }
        }
        let r = run.finish(timeout: 300)
        return (r, box.oomKills, midBuild)
    }

    private func summary(_ s: Scratch, _ name: String) throws -> [String: Any] {
        let data = try #require(FileManager.default.contents(atPath: s.path + "/" + name))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    /// A jobgov build whose helpers were killed: distcc fell back, the build succeeded, nothing was OOM-killed (by
    /// the box's count and jobgov's). Returns jobgov's summary.
    private func expectFellBackAndFinished(_ r: RunResult, oomKills: UInt64, summary name: String,
                                           in s: Scratch) throws -> [String: Any] {
        #expect(r.status == 0, "\(r.jobgovLines.joined(separator: "\n"))\n\(r.stderr.suffix(2000))")
        #expect(oomKills == 0)
        #expect(r.stderr.contains("running locally instead"), "nothing fell back: \(r.stderr.suffix(2000))")
        let j = try summary(s, name)
        #expect(j["oom_kills"] as? Int == 0)
        return j
    }

    @Test("jobgov make -j16 with distcc helpers up: the compiles run remotely, counted so, local memory within budget")
    func helpersUp() throws {
        try Clients.require(distccd)
        try Clients.require(distcc)
        let s = try project()
        let helpers = try (1...2).map { try Helper($0, in: s) }
        let (r, kills, _) = try build([Clients.jobgov, "--summary-json", s.path + "/up.json", "make", "-j16"],
                                      tag: "up", in: s, helpers: helpers)
        #expect(r.status == 0, "\(r.jobgovLines.joined(separator: "\n"))\n\(r.stderr.suffix(2000))")
        #expect(kills == 0)
        #expect(!r.stderr.contains("failed to distribute"), "\(r.stderr.suffix(2000))")
        let j = try summary(s, "up.json")
        let remote = j["remote_jobs"] as? Int ?? -1
        let local = j["local_jobs"] as? Int ?? -1
        // 13 compiles through distcc (the grids and main.cpp) and the link, which runs here (and may be too short
        // to be seen as a job: a tick is 100 ms).
        #expect(remote >= Self.files, "remote_jobs \(remote), local_jobs \(local)")
        #expect(remote + local == j["jobs_finished"] as? Int)
        #expect(j["oom_kills"] as? Int == 0)
        let peak = j["peak_memory_bytes"] as? Int ?? .max
        #expect(peak < Int(Self.box), "peak \(peak) of the \(Self.box)-byte box")
    }

    @Test("helpers killed mid-build: plain make -j16 is OOM-killed; jobgov make -j16 falls back and finishes, 0 OOM kills")
    func helpersKilled() throws {
        try Clients.require(distccd)
        try Clients.require(distcc)
        let s = try project()
        let plainHelpers = try (1...2).map { try Helper($0, in: s) }
        let (plain, plainKills, _) = try build(["make", "-j16"], tag: "plain", in: s, helpers: plainHelpers,
                                               kills: [afterObjects(1, in: s, kill: plainHelpers)])
        #expect(plain.stderr.contains("running locally instead"), "the helpers were not killed mid-build")
        #expect(plain.status != 0 && plainKills > 0,
                "plain make must be OOM-killed here (status \(plain.status), \(plainKills) kills), else this proves nothing: \(plain.stderr.suffix(1500))")
        _ = try? FileManager.default.contentsOfDirectory(atPath: s.path).filter { $0.hasSuffix(".o") || $0 == "prog" }
            .forEach { try FileManager.default.removeItem(atPath: s.path + "/" + $0) }

        let helpers = try (3...4).map { try Helper($0, in: s) }
        let (r, kills, _) = try build([Clients.jobgov, "--summary-json", s.path + "/killed.json", "make", "-j16"],
                                      tag: "jobgov", in: s, helpers: helpers,
                                      kills: [afterObjects(1, in: s, kill: helpers)])
        let j = try expectFellBackAndFinished(r, oomKills: kills, summary: "killed.json", in: s)
        let local = j["local_jobs"] as? Int ?? 0
        let fellBack = j["fell_back_jobs"] as? Int ?? 0
        #expect(fellBack >= 1 && local >= 4, "local_jobs \(local), fell_back_jobs \(fellBack)")
    }

    /// Without swap, ending a fallback early is all that frees memory once freezing is not enough. An ended job's
    /// recipe asks to run again while the build sits at its hard limit, where the kernel may refuse it a socket:
    /// jobgov-shell waits that out (see JobgovShellTests) instead of failing the build with make's "Killed".
    @Test("helpers killed, no swap: jobgov make -j16 ends fallbacks early and runs them again; all built, 0 OOM kills")
    func helpersKilledJobsEndedEarly() throws {
        try Clients.require(distccd)
        try Clients.require(distcc)
        let s = try project()
        let helpers = try (7...8).map { try Helper($0, in: s) }
        let (r, kills, _) = try build([Clients.jobgov, "--no-swap", "--summary-json", s.path + "/ended.json", "make", "-j16"],
                                      tag: "ended", in: s, helpers: helpers, kills: [afterObjects(1, in: s, kill: helpers)])
        let j = try expectFellBackAndFinished(r, oomKills: kills, summary: "ended.json", in: s)
        let ended = j["jobs_ended_early"] as? Int ?? 0
        let rerun = j["jobs_rerun"] as? Int ?? 0
        #expect(ended >= 1 && rerun >= ended, "jobs_ended_early \(ended), jobs_rerun \(rerun): \(r.jobgovLines.joined(separator: "\n"))")
        #expect(!r.stderr.contains("make: ***") && !r.stderr.contains("cannot ask jobgov"), "\(r.stderr.suffix(2000))")
        let built = (1...Self.files).filter { FileManager.default.fileExists(atPath: s.path + "/t\($0).o") }.count
        #expect(built == Self.files && FileManager.default.fileExists(atPath: s.path + "/prog"))
    }

    @Test("helpers killed one at a time: distcc sends work to the helper still up, then falls back; jobgov make -j16 finishes, 0 OOM kills, within budget")
    func helpersKilledOneAtATime() throws {
        try Clients.require(distccd)
        try Clients.require(distcc)
        let s = try project()
        let helpers = try (5...6).map { try Helper($0, in: s) }
        let (first, second) = (helpers[0], helpers[1])
        // The second helper goes once it has finished a compile sent to it after the first went: it had at most its
        // 4 slots' compiles in flight when the first was killed, so a fifth one done after that was sent later.
        var secondHadDone = 0
        let firstKill = afterObjects(1, in: s, kill: [first])
        let kills = [
            Kill(what: firstKill.what, helpers: [first]) {
                guard firstKill.when() else { return false }
                secondHadDone = second.compiles
                return true
            },
            Kill(what: "a compile sent to the helper still up", helpers: [second]) {
                second.compiles > secondHadDone + 4
            },
        ]
        let (r, oomKills, midBuild) = try build(
            [Clients.jobgov, "--summary-json", s.path + "/one.json", "make", "-j16"], tag: "one-at-a-time", in: s,
            helpers: helpers, kills: kills)
        #expect(midBuild == [true, true], "the build ended before the helpers were killed: \(midBuild)")
        let j = try expectFellBackAndFinished(r, oomKills: oomKills, summary: "one.json", in: s)
        let remote = j["remote_jobs"] as? Int ?? 0
        let fellBack = j["fell_back_jobs"] as? Int ?? 0
        #expect(remote >= 5 && fellBack >= 1, "remote_jobs \(remote), fell_back_jobs \(fellBack)")
        let peak = j["peak_memory_bytes"] as? Int ?? .max
        #expect(peak < Int(Self.box), "peak \(peak) of the \(Self.box)-byte box")
    }
}
