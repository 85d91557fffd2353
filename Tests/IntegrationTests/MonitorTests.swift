import Foundation
import Testing

@Suite("jobgov monitor", .serialized)
struct MonitorTests {
    @Test("plain lines when stdout is not a terminal, one per update")
    func plainLines() throws {
        let s = try Scratch()
        let r = try jobgov(["monitor", "--count", "3", "--interval", "0.2"], in: s, timeout: 20)
        #expect(r.status == 0, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n")
        #expect(lines.count == 3)
        for line in lines {
            #expect(line.contains("psi(some/full) cpu "))
            #expect(line.contains("mem avail "))
            #expect(line.contains("wmark min "))
            #expect(!line.contains("\u{1B}["), "no terminal escapes in a pipe")
        }
    }

    @Test("--json prints one object per update with the system's numbers")
    func jsonLines() throws {
        let s = try Scratch()
        let r = try jobgov(["monitor", "--json", "--count", "2", "--interval", "0.2"], in: s, timeout: 20)
        #expect(r.status == 0, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n")
        #expect(lines.count == 2)
        for line in lines {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            for key in ["psi_memory_some", "psi_cpu_some", "psi_io_some", "mem_total", "mem_available", "cpu_busy", "wmark_min"] {
                #expect(object[key] != nil, "\(key) in \(line)")
            }
            #expect((object["mem_total"] as? Int ?? 0) > 0)
        }
    }

    @Test("--pid watches a running build's cgroup", .enabled(if: geteuid() == 0))
    func buildCgroup() throws {
        try Clients.require(Clients.make44)
        let s = try Scratch()
        try s.write("Makefile", flatMakefile(count: 2, seconds: 3))
        let run = try Running(Clients.jobgov, [Clients.make44, "-j2"], in: s)
        waitUntil("the build to start") { s.read("job.log").contains("S ") }
        let m = try Running(Clients.jobgov, ["monitor", "--pid", String(run.pid), "--json", "--count", "2",
                                             "--interval", "0.2"], in: s, tag: "mon").finish(timeout: 20)
        #expect(m.status == 0, "\(m.stderr)")
        for line in m.stdout.split(separator: "\n") {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            #expect((object["cgroup_usage"] as? Int ?? 0) > 0, "the build's memory use: \(line)")
            #expect(object["cgroup_psi_memory_some"] != nil, "the build's own pressure: \(line)")
            // eBPF per-job view: both running jobs, with their commands and memory.
            let jobs = try #require(object["jobs"] as? [[String: Any]], "no per-job view: \(m.stderr)")
            #expect(jobs.count == 2, "\(jobs)")
            #expect(jobs.allSatisfy { ($0["command"] as? String ?? "").contains(Clients.jobScript) }, "\(jobs)")
            #expect(jobs.allSatisfy { ($0["rss_bytes"] as? Int ?? 0) > 0 }, "\(jobs)")
        }
        #expect(run.finish().status == 0)
    }

    @Test("the builds a jobgov daemon serves: each one's pid, uid, share, held, need, want and jobs")
    func daemonBuilds() throws {
        try Clients.require(Clients.make44)
        let s = try Scratch()
        let socket = s.path + "/daemon.sock"
        let daemon = try Running(Clients.jobgov, ["daemon", "--socket", socket, "--memory-budget", "1G", "--pool", "0"],
                                 in: s, tag: "daemon")
        waitUntil("the daemon's socket") { access(socket, F_OK) == 0 }
        try s.write("Makefile", flatMakefile(count: 4, seconds: 3))
        let run = try Running(Clients.jobgov, [Clients.make44, "-j2"], in: s, env: ["JOBGOV_DAEMON_SOCKET": socket],
                              tag: "build")
        waitUntil("the build to start") { s.read("job.log").contains("S ") }

        let m = try jobgov(["monitor", "--json", "--count", "2", "--interval", "0.3", "--daemon-socket", socket],
                           in: s, timeout: 20)
        #expect(m.status == 0, "\(m.stderr)")
        for line in m.stdout.split(separator: "\n") {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            let served = try #require(object["daemon"] as? [String: Any], "no daemon in \(line)")
            #expect(served["budget_bytes"] as? Int == 1 << 30, "\(served)")
            let builds = served["builds"] as? [[String: Any]] ?? []
            let build = try #require(builds.first { $0["pid"] as? Int == Int(run.pid) }, "\(builds)")
            #expect(build["uid"] as? Int == Int(geteuid()))
            #expect((build["share_bytes"] as? Int ?? 0) > 0, "\(build)")
            let demand = build["demand"] as? [String: Any] ?? [:]
            for key in ["held_bytes", "need_bytes", "want_bytes", "running_jobs"] {
                #expect(demand[key] is Int, "\(key) in \(demand)")
            }
        }
        // In a pipe, through JOBGOV_DAEMON_SOCKET as builds find it; and none with --daemon-socket none.
        let plain = try jobgov(["monitor", "--count", "1", "--interval", "0.2"], in: s,
                               env: ["JOBGOV_DAEMON_SOCKET": socket], timeout: 20)
        #expect(plain.stdout.contains(" | daemon 1 GiB, 1 build; \(run.pid) uid \(geteuid()) share "), "\(plain.stdout)")
        let without = try jobgov(["monitor", "--json", "--count", "1", "--interval", "0.2", "--daemon-socket", "none"],
                                 in: s, env: ["JOBGOV_DAEMON_SOCKET": socket], timeout: 20)
        #expect(without.status == 0 && !without.stdout.contains("\"daemon\""), "\(without.stdout)")
        #expect(run.finish().status == 0)
        kill(daemon.pid, SIGTERM)
        #expect(daemon.finish(timeout: 10).status == 0)
    }

    @Test("an unknown cgroup or a bad interval gets one line")
    func mistakes() throws {
        let s = try Scratch()
        let unknown = try jobgov(["monitor", "--cgroup", "no-such-cgroup-here", "--count", "1"], in: s, timeout: 20)
        #expect(unknown.status == 1)
        #expect(unknown.stderr.split(separator: "\n").count == 1 && unknown.stderr.contains("no cgroup"), "\(unknown.stderr)")
        let interval = try jobgov(["monitor", "--interval", "0", "--count", "1"], in: s, timeout: 20)
        #expect(interval.status == 2)
        #expect(interval.stderr.split(separator: "\n").count == 1 && interval.stderr.contains("--interval"), "\(interval.stderr)")
    }

    @Test("sensors work for an unprivileged user", .enabled(if: geteuid() == 0, "needs root to switch to nobody"))
    func unprivileged() throws {
        let s = try Scratch()
        chmod(s.path, 0o777)
        let r = try Running("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "--",
                                                 Clients.jobgov, "monitor", "--json", "--count", "1", "--interval", "0.2"],
                            in: s).finish(timeout: 20)
        #expect(r.status == 0, "\(r.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        #expect(object["psi_memory_some"] != nil && object["mem_available"] != nil, "\(r.stdout)")
    }
}
