import Foundation
import LinuxSystem
import Testing

private let isRoot = geteuid() == 0

/// `jobgov daemon`'s socket against its clients: who may connect (credentials and group), and hostile ones
/// (malformed, huge, thousands of connections, never reading), which get an error or are dropped while the daemon
/// goes on answering everyone else.
@Suite("jobgov daemon's socket", .serialized, .enabled(if: isRoot, "needs root to act as other users"))
struct DaemonSocketTests {
    /// A connected client socket, or nil when the daemon is not reachable.
    private func connectTo(_ path: String) -> Int32? {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(path.utf8)
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if rc != 0 {
            close(fd)
            return nil
        }
        return fd
    }

    private func send(_ fd: Int32, _ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// The reply line (empty when the daemon closed without one), within `timeout` seconds.
    private func reply(_ fd: Int32, timeout: Double = 2) -> String? {
        var out: [UInt8] = []
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 50) > 0 else { continue }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { return String(decoding: out, as: UTF8.self) }
            out += chunk[0..<n]
            if out.contains(UInt8(ascii: "\n")) { return String(decoding: out.prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self) }
        }
        return nil
    }

    /// One request, one reply.
    private func ask(_ path: String, _ line: String) -> String? {
        guard let fd = connectTo(path) else { return nil }
        defer { close(fd) }
        send(fd, Array((line + "\n").utf8))
        return reply(fd)
    }

    private func report(pid: Int32) -> String {
        "report {\"pid\":\(pid),\"started_at\":1,\"command\":\"make -j4\",\"cgroup\":\"\",\"weight\":10,\"alone_budget_bytes\":1,"
            + "\"demand\":{\"held_bytes\":0,\"floor_bytes\":1048576,\"need_bytes\":1048576,\"want_bytes\":4194304,"
            + "\"running_jobs\":1,\"frozen_jobs\":0}}"
    }

    private func startDaemon(_ s: Scratch, _ extra: [String] = []) throws -> (Running, String) {
        // The socket's directory must be reachable by the other users the tests act as.
        chmod(s.path, 0o711)
        let socket = s.path + "/daemon.sock"
        let daemon = try Running(Clients.jobgov, ["daemon", "--socket", socket, "--memory-budget", "1G"] + extra,
                                 in: s, tag: "daemon")
        waitUntil("the daemon's socket", timeout: 10) { access(socket, F_OK) == 0 }
        return (daemon, socket)
    }

    private func stop(_ daemon: Running) -> RunResult {
        kill(daemon.pid, SIGTERM)
        return daemon.finish(timeout: 10)
    }

    /// `jobgov daemon --status` (or other arguments) run as `uid`/`gid` with the supplementary `groups`.
    private func asUser(_ uid: Int, _ gid: Int, groups: [Int] = [], _ arguments: [String], in s: Scratch) throws -> RunResult {
        let groupFlag = groups.isEmpty ? ["--clear-groups"] : ["--groups=" + groups.map(String.init).joined(separator: ",")]
        return try Running("/usr/bin/setpriv", ["--reuid=\(uid)", "--regid=\(gid)"] + groupFlag + [Clients.jobgov] + arguments,
                           in: s, tag: "as\(uid)-\(gid)-\(groups.count)").finish(timeout: 20)
    }

    @Test("root and the daemon's group only, by the peer's credentials; a user sees and changes only their own builds")
    func peersByCredentials() throws {
        let s = try Scratch()
        let nogroup = 65534
        let (daemon, socket) = try startDaemon(s, ["--group", "nogroup"])
        var st = stat()
        #expect(stat(socket, &st) == 0 && st.st_mode & 0o777 == 0o660 && Int(st.st_gid) == nogroup)
        // A build of root's (this test process stands for it).
        #expect(ask(socket, report(pid: getpid()))?.hasPrefix("share ") == true)

        let member = try asUser(65534, nogroup, ["daemon", "--status", "--json", "--socket", socket], in: s)
        #expect(member.status == 0, "\(member.stderr)")
        #expect(member.stdout.contains("\"builds\":[]"), "root's build is not the group member's: \(member.stdout)")
        let change = try asUser(65534, nogroup, ["daemon", "--priority", "\(getpid()):90", "--socket", socket], in: s)
        #expect(change.status == 1 && change.stderr.contains("no build of yours"), "\(change.stderr)")
        // Member through a supplementary group (which SO_PEERCRED does not carry).
        let supplementary = try asUser(1000, 1000, groups: [nogroup], ["daemon", "--status", "--socket", socket], in: s)
        #expect(supplementary.status == 0, "\(supplementary.stderr)")
        #expect(supplementary.stdout.hasPrefix("budget 1 GiB"), "\(supplementary.stdout)")
        // Not a member: the socket's mode already stops it; the daemon's own check is behind it.
        let outsider = try asUser(1000, 1000, ["daemon", "--status", "--socket", socket], in: s)
        #expect(outsider.status == 1, "\(outsider.stdout)")
        #expect(outsider.stderr.contains("cannot reach") || outsider.stderr.contains("serves root and the members"))

        let all = ask(socket, "builds") ?? ""
        #expect(all.contains("\"pid\":\(getpid())"), "root sees every build: \(all)")
        #expect(ask(socket, "priority \(getpid()) 90") == "ok weight=90")
        #expect(ask(socket, "leave") == "ok")
        let end = stop(daemon)
        #expect(end.status == 0, "\(end.stderr)")
    }

    /// A build of another user, with its runtime directory where root's `jobgov ctl` does not look, is reached
    /// through the daemon it joined; a control path a build reports is used only if it is that build's user's socket.
    @Test("jobgov ctl --pid reaches another user's build through the daemon; a reported path that is not the build's is not used")
    func ctlThroughTheDaemon() throws {
        let s = try Scratch()
        let (daemon, socket) = try startDaemon(s, ["--group", "nogroup"])
        let home = s.path + "/nobody"
        try FileManager.default.createDirectory(atPath: home + "/tmp", withIntermediateDirectories: true)
        chmod(home, 0o777)
        chmod(home + "/tmp", 0o777)
        let makefile = "all: " + (1...8).map { "j\($0)" }.joined(separator: " ") + "\nj%:\n\t@sleep 1\n.PHONY: all\n"
        try makefile.write(toFile: home + "/Makefile", atomically: true, encoding: .utf8)
        chmod(home + "/Makefile", 0o644)
        let build = try Running("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", Clients.jobgov,
                                                     "--no-history", Clients.make44, "-j2"],
                                in: s, cwd: home, env: ["TMPDIR": home + "/tmp", "JOBGOV_DAEMON_SOCKET": socket], tag: "nobody")
        var buildPID: Int32?
        waitUntil("the build to join the daemon", timeout: 20) {
            guard let json = ask(socket, "builds"), let status = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
                  let builds = status["builds"] as? [[String: Any]], let b = builds.first(where: { ($0["uid"] as? Int) == 65534 }) else { return false }
            buildPID = (b["pid"] as? Int).map(Int32.init)
            return b["control"] is String
        }
        let pid = try #require(buildPID)
        let viaDaemon = ["JOBGOV_DAEMON_SOCKET": socket]
        let status = try Running(Clients.jobgov, ["ctl", "status", "--json", "--pid", String(pid)], in: s, env: viaDaemon, tag: "st").finish()
        #expect(status.status == 0, "\(status.stderr)")
        #expect(status.stdout.contains("\"pid\":\(pid)") && status.stdout.contains("\"ceiling\":2"), "\(status.stdout)")
        let raise = try Running(Clients.jobgov, ["ctl", "jobs", "3", "--pid", String(pid)], in: s, env: viaDaemon, tag: "raise").finish()
        #expect(raise.status == 0 && raise.stdout.hasPrefix("jobs=3 was="), "\(raise.stdout)\(raise.stderr)")
        // Without the daemon, root's ctl does not find it: its directory is not root's.
        let alone = try Running(Clients.jobgov, ["ctl", "status", "--pid", String(pid)], in: s,
                                env: ["JOBGOV_DAEMON_SOCKET": "none"], tag: "alone").finish()
        #expect(alone.status == 1 && alone.stderr.contains("no jobgov with pid \(pid)"), "\(alone.stderr)")
        // A build (this test process, root) that reports the other user's socket as its own is not believed.
        let control = try #require(FileManager.default.contentsOfDirectory(atPath: home + "/tmp")
            .first { $0.hasPrefix("jobgov-") }.map { home + "/tmp/" + $0 + "/control" })
        let fake = report(pid: getpid()).replacingOccurrences(of: "\"weight\":10,", with: "\"weight\":10,\"control\":\"\(control)\",")
        #expect(ask(socket, fake)?.hasPrefix("share ") == true)
        let lie = try Running(Clients.jobgov, ["ctl", "status", "--pid", String(getpid())], in: s, env: viaDaemon, tag: "lie").finish()
        #expect(lie.status == 1 && lie.stderr.contains("no jobgov with pid"), "\(lie.stdout)\(lie.stderr)")
        #expect(ask(socket, "leave") == "ok")
        #expect(build.finish(timeout: 60).status == 0)
        #expect(stop(daemon).status == 0)
    }

    @Test("malformed, huge, never-read and thousands of connections: an error or a dropped connection, and the daemon answers on")
    func hostileClients() throws {
        let s = try Scratch()
        let (daemon, socket) = try startDaemon(s)

        #expect(ask(socket, "hello")?.hasPrefix("error unknown request") == true)
        #expect(ask(socket, "report {\"pid\":")?.hasPrefix("error report: not a build report") == true)
        #expect(ask(socket, report(pid: 1))?.hasPrefix("error a build reports for itself") == true,
                "a report for another process is refused")
        #expect(ask(socket, String(repeating: "\u{0}", count: 100))?.hasPrefix("error") == true)

        // A megabyte without a newline: cut off after the limit.
        if let fd = connectTo(socket) {
            send(fd, [UInt8](repeating: UInt8(ascii: "x"), count: 20_000))
            let answer = reply(fd)
            #expect(answer == "error request longer than 16384 bytes" || answer == "", "\(answer ?? "nil")")
            close(fd)
        }

        // A client that asks and never reads, and one that connects and never sends.
        let silent = connectTo(socket)
        let deaf = connectTo(socket)
        if let deaf { send(deaf, Array("builds\n".utf8)) }
        #expect(ask(socket, "builds")?.hasPrefix("{\"budget_bytes\"") == true)

        // A thousand connections that send nothing: older ones are dropped to make room, and a request is answered.
        var flood: [Int32] = []
        for _ in 0..<1000 { if let fd = connectTo(socket) { flood.append(fd) } }
        let started = Date()
        var answered: String?
        for _ in 0..<20 where answered?.hasPrefix("{") != true {
            answered = ask(socket, "builds")
        }
        #expect(answered?.hasPrefix("{\"budget_bytes\"") == true, "\(answered ?? "nil")")
        #expect(Date().timeIntervalSince(started) < 5)
        for fd in flood { close(fd) }
        if let silent {
            // Idle connections are closed within the daemon's idle time (2 s) plus its housekeeping second.
            #expect(reply(silent, timeout: 5) == "", "an idle connection is dropped")
            close(silent)
        }
        if let deaf { close(deaf) }
        #expect(ask(socket, report(pid: getpid()))?.hasPrefix("share ") == true)
        let end = stop(daemon)
        #expect(end.status == 0, "\(end.stderr)")
    }

    @Test("started for jobgov.socket (systemd's socket activation): it serves the socket handed over and leaves it")
    func socketActivation() throws {
        let activate = "/usr/bin/systemd-socket-activate"
        try #require(FileManager.default.isExecutableFile(atPath: activate), "\(activate) is missing (Debian's systemd)")
        let s = try Scratch()
        let socket = s.path + "/daemon.sock"
        // What systemd does for jobgov.socket: listen, start the daemon at the first connection, hand the socket over.
        let daemon = try Running(activate, ["-l", socket, Clients.jobgov, "daemon", "--socket", socket,
                                            "--memory-budget", "1G"], in: s, tag: "daemon")
        waitUntil("the socket", timeout: 10) { access(socket, F_OK) == 0 }
        let status = ask(socket, "builds") ?? "no reply"
        #expect(status.contains("\"budget_bytes\":1073741824"), "\(status)")
        #expect(ask(socket, report(pid: getpid()))?.hasPrefix("share ") == true)
        #expect(ask(socket, "builds")?.contains("\"pid\":\(getpid())") == true)
        var fifo = stat()
        #expect(stat(s.path + "/jobserver", &fifo) == 0 && (fifo.st_mode & S_IFMT) == S_IFIFO, "the pool, next to the socket")
        let end = stop(daemon)
        #expect(end.status == 0, "\(end.stderr)")
        #expect(end.stderr.contains("daemon listening at \(socket) (a socket from systemd)"), "\(end.stderr)")
        #expect(access(socket, F_OK) == 0, "systemd's socket outlives the daemon")

        // A descriptor that is not a listening socket gets one line that says what the unit needs.
        let wrong = try Running("/bin/sh", ["-c", "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" daemon --socket \"$1\" 3</dev/null",
                                            Clients.jobgov, s.path + "/other.sock"], in: s, tag: "wrong").finish(timeout: 20)
        #expect(wrong.status == 1)
        #expect(wrong.stderr.contains("not a listening socket") && wrong.stderr.contains("ListenStream="), "\(wrong.stderr)")
    }

    @Test("plain clients share the daemon's pool through MAKEFLAGS=--jobserver-auth=fifo:PATH; tokens lost with a SIGKILLed make come back")
    func plainClientsShareThePool() throws {
        try Clients.require(Clients.make44)
        let s = try Scratch()
        let (daemon, socket) = try startDaemon(s, ["--pool", "2"])
        let fifo = s.path + "/jobserver"
        var st = stat()
        #expect(stat(fifo, &st) == 0 && st.st_mode & S_IFMT == S_IFIFO && st.st_mode & 0o777 == 0o600)
        try s.write("a/Makefile", flatMakefile(count: 6, seconds: 0.6, prefix: "a"))
        try s.write("b/Makefile", flatMakefile(count: 6, seconds: 0.6, prefix: "b"))
        // Two makes at once, each a plain client (no -j: the pool decides): 2 tokens and each one's implicit slot.
        let env = ["MAKEFLAGS": "--jobserver-auth=fifo:\(fifo)"]
        let a = try Running(Clients.make44, [], in: s, cwd: s.path + "/a", env: env, tag: "a")
        let b = try Running(Clients.make44, [], in: s, cwd: s.path + "/b", env: env, tag: "b")
        for r in [a.finish(timeout: 60), b.finish(timeout: 60)] { #expect(r.status == 0, "\(r.stderr)") }
        let log = JobLog(s.read("job.log"))
        #expect(log.count == 12)
        #expect(log.peak() <= 4, "two clients, two tokens: at most 4 jobs at once, saw \(log.peak())")
        #expect(log.peak() >= 3, "the pool's tokens were used: \(log.peak())")

        // A make SIGKILLed while it holds both tokens: the daemon writes them back.
        try s.write("c/Makefile", flatMakefile(count: 3, seconds: 30, prefix: "c"))
        // Foundation starts it as the leader of a process group of its own, which its jobs join: they end with it.
        let c = try Running(Clients.make44, [], in: s, cwd: s.path + "/c", env: env, tag: "c")
        try #require(getpgid(c.pid) == c.pid)
        var status: [String: Any] = [:]
        func poolStatus() -> [String: Any] {
            let r = try? jobgov(["daemon", "--status", "--json", "--socket", socket], in: s, timeout: 10)
            let object = (try? JSONSerialization.jsonObject(with: Data((r?.stdout ?? "").utf8))) as? [String: Any]
            return object?["pool"] as? [String: Any] ?? [:]
        }
        waitUntil("both tokens taken", timeout: 10) { poolStatus()["free"] as? Int == 0 }
        kill(-c.pid, SIGKILL)
        _ = c.finish(timeout: 10)
        waitUntil("the tokens re-created", timeout: 10) {
            status = poolStatus()
            return status["free"] as? Int == 2
        }
        #expect(status["recreated"] as? Int == 2, "\(status)")
        let end = stop(daemon)
        #expect(end.status == 0, "\(end.stderr)")
        #expect(end.stderr.contains("re-created 2 tokens"), "\(end.stderr)")
        #expect(access(fifo, F_OK) != 0, "the daemon removes its FIFO")
    }
}
