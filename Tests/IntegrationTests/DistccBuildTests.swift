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

    /// A `distccd` on a loopback port in a cgroup of its own (1 GiB, one CPU), killed by pid and removed at the end.
    final class Helper {
        let cgroup: BuildCgroup
        let port: Int
        let process: Running

        init(_ index: Int, in s: Scratch) throws {
            cgroup = try BuildCgroup.create(layout: CgroupLayout.detect(), name: "jobgov-test-\(getpid())-distccd-\(index)")
            try cgroup.apply(CgroupLimits(memoryMax: 1 << 30, cpuQuotaMicroseconds: 100_000))
            port = try Self.freePort()
            let joins = cgroup.leafProcsFiles.map { "echo $$ > \($0)" }.joined(separator: " && ")
            process = try Running("/bin/sh", ["-c", "\(joins) && exec \"$@\"", "sh", distccd, "--no-detach", "--daemon",
                                              "--listen", "127.0.0.1", "--port", "\(port)", "--allow", "127.0.0.1",
                                              "--jobs", "4", "--log-stderr"],
                                  in: s, env: ["TMPDIR": "/tmp"], tag: "distccd-\(index)")
            // distccd compiles as an unprivileged user, in TMPDIR: not the test's private scratch directory.
            let process = process
            let deadline = Date().addingTimeInterval(60)
            while !Self.accepts(port: port) && process.process.isRunning && Date() < deadline { usleep(100_000) }
            try #require(Self.accepts(port: port),
                         "distccd does not listen on \(port): \(s.read("distccd-\(index).stderr").suffix(800))")
        }

        var hostSpec: String { "127.0.0.1:\(port)/4" }

        /// Kills every process of the helper (by pid, from its cgroup), as when its machine goes away.
        func kill() {
            for _ in 0..<100 {
                let pids = cgroup.processes()
                if pids.isEmpty { break }
                for pid in pids { Glibc.kill(pid, SIGKILL) }
                usleep(20_000)
            }
            _ = process.finish(timeout: 10)
        }

        deinit {
            kill()
            for _ in 0..<100 where !cgroup.remove() { usleep(50_000) }
        }

        static func freePort() throws -> Int {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            let ok = withUnsafeMutablePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0
                }
            }
            guard ok else { throw POSIXError(.EADDRINUSE) }
            return Int(UInt16(bigEndian: addr.sin_port))
        }

        static func accepts(port: Int) -> Bool {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = in_port_t(UInt16(port).bigEndian)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            return withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
                }
            }
        }
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

    /// Runs `command` in the box; with `killAfter`, kills the helpers once that many objects exist (the first
    /// compiles are done, the others are in flight on the helpers).
    private func build(_ command: [String], tag: String, in s: Scratch, helpers: [Helper],
                       killAfter: Int? = nil) throws -> (RunResult, UInt64) {
        let box = try GovernorBuildTests.LimitedCgroup("distcc-\(tag)", limit: Self.box)
        let run = try Running("/bin/sh", box.wrap(command), in: s, env: env(s, helpers), tag: tag)
        if let killAfter {
            waitUntil("\(killAfter) objects", timeout: 180) {
                let objects = ((try? FileManager.default.contentsOfDirectory(atPath: s.path)) ?? [])
                    .filter { $0.hasSuffix(".o") }
                return objects.count >= killAfter || !run.process.isRunning
            }
            for h in helpers { h.kill() }
        }
        let r = run.finish(timeout: 300)
        return (r, box.oomKills)
    }

    private func summary(_ s: Scratch, _ name: String) throws -> [String: Any] {
        let data = try #require(FileManager.default.contents(atPath: s.path + "/" + name))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    @Test("jobgov make -j16 with distcc helpers up: the compiles run remotely, counted so, local memory within budget")
    func helpersUp() throws {
        try Clients.require(distccd)
        try Clients.require(distcc)
        let s = try project()
        let helpers = try (1...2).map { try Helper($0, in: s) }
        let (r, kills) = try build([Clients.jobgov, "--summary-json", s.path + "/up.json", "make", "-j16"],
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
        let (plain, plainKills) = try build(["make", "-j16"], tag: "plain", in: s, helpers: plainHelpers,
                                            killAfter: 1)
        #expect(plain.stderr.contains("running locally instead"), "the helpers were not killed mid-build")
        #expect(plain.status != 0 && plainKills > 0,
                "plain make must be OOM-killed here (status \(plain.status), \(plainKills) kills), else this proves nothing")
        _ = try? FileManager.default.contentsOfDirectory(atPath: s.path).filter { $0.hasSuffix(".o") || $0 == "prog" }
            .forEach { try FileManager.default.removeItem(atPath: s.path + "/" + $0) }

        let helpers = try (3...4).map { try Helper($0, in: s) }
        let (r, kills) = try build([Clients.jobgov, "--summary-json", s.path + "/killed.json", "make", "-j16"],
                                   tag: "jobgov", in: s, helpers: helpers, killAfter: 1)
        #expect(r.status == 0, "\(r.jobgovLines.joined(separator: "\n"))\n\(r.stderr.suffix(2000))")
        #expect(kills == 0)
        #expect(r.stderr.contains("running locally instead"), "the helpers were not killed mid-build")
        let j = try summary(s, "killed.json")
        #expect(j["oom_kills"] as? Int == 0)
        let local = j["local_jobs"] as? Int ?? 0
        let fellBack = j["fell_back_jobs"] as? Int ?? 0
        #expect(fellBack >= 1 && local >= 4, "local_jobs \(local), fell_back_jobs \(fellBack)")
    }
}
