import Foundation
import Testing

/// jobgov-shell (shell/jobgov-shell.c): make's SHELL under jobgov, started once per recipe line. It must not be
/// seen: make reports every recipe's end under jobgov as it does without it. On x86_64 and aarch64 it is a small
/// static program without libc; the same source built against libc (the other architectures' build) is tested here
/// too.
@Suite("jobgov-shell", .serialized)
struct JobgovShellTests {
    /// Recipes that end in every way make tells apart, run by the makefile's /bin/sh, both with and without a shell
    /// (simple lines run directly, as make does).
    static let makefile: String = {
        let many = (0..<5000).map { "a\($0)" }.joined(separator: " ")  // a simple line of 29 KB
        let tooMany = Array(repeating: "w", count: 20000).joined(separator: " ")  // more words than run directly
        return """
            export FROM_MAKE = made
            all: status simple signal killed missing script env quoted long longer
            status: ; @exit 3
            simple: ; ls -d /nonexistent-jobgov-test
            signal: ; @kill -TERM $$$$
            killed: ; @kill -KILL $$$$
            missing: ; @nonexistent-jobgov-command arg
            script: ; @./noshebang
            env: ; @printenv FROM_MAKE FROM_CALLER
            quoted: ; @echo "$$FROM_MAKE"  'two  spaces' && echo ok
            long: ; @/bin/echo \(many)
            longer: ; @/bin/echo \(tooMany)
            shellpath: ; @cp $(SHELL) copied-shell && echo $(SHELL)

            """
    }()

    /// make's own report lines (`make: *** [Makefile:3: status] Error 3`), sorted: the messages before them may
    /// differ (make says "No such file or directory" for a command it ran itself, sh says "not found").
    private func reports(_ stderr: String) -> [String] {
        stderr.split(separator: "\n").map(String.init).filter { $0.contains("***") || $0.contains("not remade") }.sorted()
    }

    private func project(in scratch: Scratch? = nil) throws -> Scratch {
        let s = try scratch ?? Scratch()
        try s.write("Makefile", Self.makefile)
        try s.write("noshebang", "echo script ran\n")
        chmod(s.path + "/noshebang", 0o755)
        return s
    }

    @Test("make reports exit statuses, signals, missing commands and output as without jobgov", arguments: ["make43", "make44"])
    func makeReportsTheSame(_ which: String) throws {
        let make = which == "make43" ? Clients.make43 : Clients.make44
        try Clients.require(make)
        let s = try project()
        let env = ["FROM_CALLER": "caller"]
        let plain = try Running(make, ["-k", "-j1"], in: s, env: env, tag: "plain").finish(timeout: 60)
        let governed = try jobgov([make, "-k", "-j1"], in: s, env: env, timeout: 60)
        #expect(plain.status == 2 && governed.status == 2)
        #expect(governed.stdout == plain.stdout)
        #expect(reports(governed.stderr) == reports(plain.stderr), "\(governed.stderr.suffix(3000))")
        #expect(reports(plain.stderr).count == 6, "\(plain.stderr.suffix(3000))")  // 5 failures and "not remade"
        #expect(plain.stdout.contains("a4999\n") && plain.stdout.contains("made\ncaller\n"))
        #expect(governed.stderr.contains("nonexistent-jobgov-command: not found"))

        // The recipes above did run under jobgov-shell.
        let shell = try jobgov([make, "-s", "shellpath"], in: s)
        #expect(shell.status == 0 && shell.stdout.hasSuffix("/jobgov-shell\n"), "\(shell.stdout)\(shell.stderr)")
    }

    @Test("the makefile's own SHELL and .SHELLFLAGS are honoured", arguments: ["make43", "make44"])
    func makefileShell(_ which: String) throws {
        let make = which == "make43" ? Clients.make43 : Clients.make44
        try Clients.require(make)
        let s = try Scratch()
        try s.write("Makefile", """
            SHELL := /bin/bash
            .SHELLFLAGS := -ec
            all: bash flags simple
            bash: ; @[[ -n $$BASH_VERSION ]] && echo "bash as $$0"
            flags: ; @false; echo not reached
            simple: ; @true

            """)
        let plain = try Running(make, ["-k", "-j1"], in: s, tag: "plain").finish(timeout: 60)
        let governed = try jobgov([make, "-k", "-j1"], in: s, timeout: 60)
        #expect(governed.stdout == "bash as /bin/bash\n" && governed.stdout == plain.stdout, "\(governed.stderr)")
        #expect(reports(governed.stderr) == reports(plain.stderr) && reports(plain.stderr).count == 2)
    }

    /// The shell jobgov embeds, copied out of a build (a recipe copies its `$(SHELL)`).
    private static func embeddedShell(into s: Scratch) throws -> String {
        try s.write("Makefile", "shellpath: ; @cp $(SHELL) copied-shell\n")
        let r = try jobgov([Clients.make43, "-s"], in: s)
        try #require(r.status == 0, "\(r.stderr)")
        return s.path + "/copied-shell"
    }

    /// The same source against libc, as on architectures other than x86_64 and aarch64.
    private static func libcShell(into s: Scratch) throws -> String {
        try Clients.require("/usr/bin/cc")
        let source = Clients.repo.appendingPathComponent("shell/jobgov-shell.c").path
        let r = try Running("/usr/bin/cc", ["-O2", "-Wall", "-Werror", "-DFREESTANDING=0", "-o", "libc-shell", source],
                            in: s, tag: "cc").finish(timeout: 60)
        try #require(r.status == 0, "\(r.stderr)")
        return s.path + "/libc-shell"
    }

    @Test("on x86_64 and aarch64 the embedded shell is a small static program: no dynamic loader per recipe")
    func embeddedIsStatic() throws {
        var machine = utsname()
        uname(&machine)
        let arch = withUnsafeBytes(of: machine.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let s = try Scratch()
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: try Self.embeddedShell(into: s))))
        try #require(bytes.count > 64 && bytes[0..<4] == [0x7f, 0x45, 0x4c, 0x46] && bytes[4] == 2, "not a 64-bit ELF")
        func u16(_ at: Int) -> Int { Int(bytes[at]) | Int(bytes[at + 1]) << 8 }
        func u32(_ at: Int) -> Int { u16(at) | u16(at + 2) << 16 }
        let phoff = u32(32), phentsize = u16(54), phnum = u16(56)
        let types = (0..<phnum).map { u32(phoff + $0 * phentsize) }
        guard arch == "x86_64" || arch == "aarch64" else { return }
        #expect(!types.contains(3), "PT_INTERP: dynamically linked")
        #expect(bytes.count < 32 << 10, "\(bytes.count) bytes")
    }

    /// A stand-in for jobgov's control socket: answers each request with the next of `replies`, then with
    /// `otherwise` (so that a question nobody expected is recorded, never left hanging), until it is released.
    final class FakeControl: @unchecked Sendable {
        let path: String
        private let fd: Int32
        private let log = Log()
        /// The requests, in the order they came.
        var asked: [String] { log.lock.withLock { log.requests } }

        final class Log: @unchecked Sendable {
            let lock = NSLock()
            var requests: [String] = []
            var stopped = false
        }

        init(path: String, replies: [String], otherwise: String = "no not expected by the test") throws {
            self.path = path
            fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &addr.sun_path) { raw in
                for (i, b) in path.utf8.enumerated() { raw[i] = b }
            }
            let bound = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard fd >= 0, bound == 0, listen(fd, 8) == 0 else { throw POSIXError(.EIO) }
            let listener = fd, log = log
            Thread.detachNewThread {
                var next = replies[...]
                while !log.lock.withLock({ log.stopped }) {
                    var p = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
                    guard poll(&p, 1, 50) > 0 else { continue }
                    let client = accept(listener, nil, nil)
                    if client < 0 { continue }
                    // One line: jobgov-shell writes its request at once and waits for the reply.
                    var request = [UInt8]()
                    var buffer = [UInt8](repeating: 0, count: 256)
                    while request.last != 10 {
                        let n = read(client, &buffer, buffer.count)
                        if n <= 0 { break }
                        request += buffer.prefix(n)
                    }
                    log.lock.withLock { log.requests.append(String(decoding: request, as: UTF8.self)) }
                    let reply = next.popFirst() ?? otherwise
                    _ = (reply + "\n").withCString { write(client, $0, strlen($0)) }
                    close(client)
                }
                close(listener)
            }
        }
        deinit {
            log.lock.withLock { log.stopped = true }
            unlink(path)
        }
    }

    /// The wait status in a request `rerun PID STATUS`, when it is one.
    private static func askedStatus(_ request: String) -> Int32? {
        let words = request.split(separator: " ")
        guard request.hasSuffix("\n"), words.count == 3, words[0] == "rerun", Int32(words[1]) != nil else { return nil }
        return Int32(words[2].dropLast())
    }

    @Test("run directly: statuses, signals, environment, JOBGOV_SHELL, scripts and the re-run protocol",
          arguments: ["embedded", "libc"])
    func direct(_ build: String) throws {
        let s = try Scratch()
        let shell = build == "embedded" ? try Self.embeddedShell(into: s) : try Self.libcShell(into: s)

        // As make's SHELL, without jobgov: make reports every end as with its own shell. (Signals are tested
        // here, through make, which unblocks them for its recipes; the threads of this test may not.)
        _ = try project(in: s)
        let env = ["FROM_CALLER": "caller"]
        let plain = try Running(Clients.make43, ["-k", "-j1"], in: s, env: env, tag: "plain").finish(timeout: 60)
        // Every failure asks jobgov (here a stand-in that says "no"), with its wait status; the answer "no" leaves
        // the status as it was. In order: exit 3, ls's exit 2, SIGTERM, SIGKILL, and the shell's 127 for a command
        // not found; the successes ask nothing.
        let refusing = try FakeControl(path: s.path + "/refusing", replies: [], otherwise: "no not an OOM kill")
        let wrapped = try Running(Clients.make43, ["-k", "-j1", "SHELL=" + shell], in: s,
                                  env: env.merging(["JOBGOV_CONTROL": refusing.path]) { $1 }, tag: "wrapped")
            .finish(timeout: 60)
        #expect(wrapped.stdout == plain.stdout && reports(wrapped.stderr) == reports(plain.stderr),
                "\(wrapped.stderr.suffix(3000))")
        #expect(reports(wrapped.stderr).contains { $0.hasSuffix("signal] Terminated") })
        #expect(refusing.asked.map(Self.askedStatus) == [3 << 8, 2 << 8, SIGTERM, SIGKILL, 127 << 8], "\(refusing.asked)")

        func run(_ line: String, _ env: [String: String] = [:]) throws -> RunResult {
            try Running(shell, ["-c", line], in: s, env: env, tag: "direct").finish(timeout: 30)
        }
        #expect(try run("true").status == 0)
        #expect(try run("false").status == 1)
        #expect(try run("exit 255").status == 255)
        #expect(try run("kill -KILL $$").status == 128 + SIGKILL)  // no control socket: nothing to ask
        #expect(try run("printenv FOO", ["FOO": "bar"]).stdout == "bar\n")
        #expect(try run("echo $0").stdout == "/bin/sh\n")
        #expect(try run("echo $0 ${BASH_VERSION:+bash}", ["JOBGOV_SHELL": "/bin/bash"]).stdout == "/bin/bash bash\n")
        #expect(try run("true", ["PATH": "/nonexistent:/usr/bin:/bin"]).status == 0)
        let missing = try run("nonexistent-jobgov-command arg")
        #expect(missing.status == 127 && missing.stderr.contains("not found"), "\(missing.stderr)")
        #expect(try run("/etc/passwd").status == 126)  // not executable: the shell's own status
        try s.write("noshebang", "echo script ran $1\n")
        chmod(s.path + "/noshebang", 0o755)
        #expect(try run("./noshebang arg").stdout == "script ran arg\n")
        let words = (0..<20000).map { "w\($0)" }
        #expect(try run("/bin/echo " + words.joined(separator: " ")).stdout == words.joined(separator: " ") + "\n")

        // Killed: jobgov is asked (`rerun PID 9`), answers "wait" twice, then "go", and the recipe runs again; its
        // second failure is asked about too (jobgov may have ended it early again), and "no" keeps that status.
        let control = try FakeControl(path: s.path + "/control", replies: ["wait", "wait", "go"])
        let line = "if [ -e once ]; then echo again; exit 4; fi; touch once; kill -KILL $$"
        let rerun = try Running(shell, ["-c", line], in: s, env: ["JOBGOV_CONTROL": control.path], tag: "rerun")
        let r = rerun.finish(timeout: 30)
        #expect(r.status == 4 && r.stdout == "again\n", "\(r.stderr)")
        #expect(control.asked == Array(repeating: "rerun \(rerun.pid) \(SIGKILL)\n", count: 3) + ["rerun \(rerun.pid) \(4 << 8)\n"],
                "\(control.asked)")
        // "no", or JOBGOV_NO_RERUN: it ends by the same SIGKILL.
        unlink(s.path + "/once")
        let refused = try FakeControl(path: s.path + "/control2", replies: ["no not an OOM kill"])
        #expect(try run(line, ["JOBGOV_CONTROL": refused.path]).status == 128 + SIGKILL)
        #expect(refused.asked.count == 1)
        unlink(s.path + "/once")
        let off = try FakeControl(path: s.path + "/control3", replies: [])
        #expect(try run(line, ["JOBGOV_CONTROL": off.path, "JOBGOV_NO_RERUN": "1"]).status == 128 + SIGKILL)
        #expect(try run("exit 1", ["JOBGOV_CONTROL": off.path, "JOBGOV_NO_RERUN": "1"]).status == 1)
        #expect(off.asked.isEmpty, "\(off.asked)")
    }

    /// A recipe that fails without a signal (a compiler driver whose cc1plus the OOM killer ended exits 1) asks too;
    /// "go" runs it again, "no" keeps its status, a success asks nothing, and an unreachable jobgov changes nothing.
    @Test("any failure asks jobgov with its wait status; go runs the line again; no keeps the status",
          arguments: ["embedded", "libc"])
    func asksOnAnyFailure(_ build: String) throws {
        let s = try Scratch()
        let shell = build == "embedded" ? try Self.embeddedShell(into: s) : try Self.libcShell(into: s)
        func run(_ line: String, _ control: FakeControl?, _ env: [String: String] = [:]) throws -> (RunResult, Int32) {
            var env = env
            if let control { env["JOBGOV_CONTROL"] = control.path }
            let running = try Running(shell, ["-c", line], in: s, env: env, tag: "direct")
            return (running.finish(timeout: 30), running.pid)
        }

        // "no": the status as it was, asked once with it; quickly (nothing waits between the failure and the end).
        let refusing = try FakeControl(path: s.path + "/refusing", replies: [], otherwise: "no the job failed")
        for (line, code) in [("exit 1", 1), ("exit 2", 2), ("exit 255", 255), ("nonexistent-jobgov-command", 127)] {
            let before = refusing.asked.count
            let started = Date()
            let (r, pid) = try run(line, refusing)
            #expect(r.status == Int32(code), "\(line): \(r.stderr)")
            #expect(Date().timeIntervalSince(started) < 2)
            #expect(refusing.asked.dropFirst(before) == ["rerun \(pid) \(code << 8)\n"], "\(line): \(refusing.asked)")
        }
        // A simple line runs without a shell: a command that exits 1 is the recipe.
        let (simple, simplePID) = try run("ls -d /nonexistent-jobgov-test", refusing)
        #expect(simple.status == 2 && refusing.asked.last == "rerun \(simplePID) \(2 << 8)\n", "\(refusing.asked)")
        // A success asks nothing.
        let count = refusing.asked.count
        #expect(try run("true", refusing).0.status == 0)
        #expect(try run("echo fine; exit 0", refusing).0.stdout == "fine\n")
        #expect(refusing.asked.count == count)

        // "go" after a plain failure: the line runs again, and its second status is the one that counts. A second
        // failure is asked about again (a job jobgov ended early twice is run a third time, measured on a real
        // build); here the answer runs out and the status stays.
        let going = try FakeControl(path: s.path + "/going", replies: ["go", "wait", "go", "go"])
        let again = "if [ -e twice ]; then echo again; exit 0; fi; touch twice; echo first; exit 1"
        let (r1, pid1) = try run(again, going)
        #expect(r1.status == 0 && r1.stdout == "first\nagain\n", "\(r1.stderr)")
        #expect(going.asked == ["rerun \(pid1) 256\n"])
        let (r2, pid2) = try run("echo try >> tries; exit 3", going)
        #expect(r2.status == 3 && s.read("tries") == "try\ntry\ntry\n", "ran three times, the third failure is final")
        #expect(Array(going.asked.dropFirst()) == Array(repeating: "rerun \(pid2) 768\n", count: 4), "\(going.asked)")

        // jobgov cannot be reached (gone, or not a socket): the status as it was.
        #expect(try run("exit 5", nil, ["JOBGOV_CONTROL": s.path + "/nonexistent"]).0.status == 5)
        #expect(try run("exit 6", nil, ["JOBGOV_CONTROL": ""]).0.status == 6)
        // A reply it does not know (or an empty one) counts as "no".
        let odd = try FakeControl(path: s.path + "/odd", replies: ["maybe", ""])
        #expect(try run("exit 7", odd).0.status == 7)
        #expect(try run("exit 8", odd).0.status == 8)
        #expect(odd.asked.count == 2)
    }

    /// jobgov ends jobs early when the build is at its hard limit, and on cgroup v1, where jobgov holds the OOM
    /// killer off meanwhile, the kernel then refuses what it would charge to the build: the ended recipe's socket()
    /// fails with ENFILE (measured on Linux 6.18) until memory is freed. Here socket() is made to fail so
    /// (Fixtures/failsockets.c, a seccomp user notification), five times, then works.
    @Test("short of memory to ask (socket() fails with ENFILE): it asks again until it can; jobgov gone: the failure stands, and says why",
          arguments: ["embedded", "libc"])
    func waitsOutAShortage(_ build: String) throws {
        let s = try Scratch()
        let shell = build == "embedded" ? try Self.embeddedShell(into: s) : try Self.libcShell(into: s)
        let failsockets = try Self.compileFixture("failsockets", into: s)
        let control = try FakeControl(path: s.path + "/control", replies: ["go"])
        let line = "if [ -e once ]; then echo again; exit 0; fi; touch once; exit 1"
        let running = try Running(failsockets, ["5", shell, "-c", line], in: s, env: ["JOBGOV_CONTROL": control.path],
                                  tag: "short")
        let r = running.finish(timeout: 30)
        #expect(r.status == 0 && r.stdout == "again\n", "\(r.stderr)")
        #expect(control.asked == ["rerun \(running.pid) 256\n"], "\(control.asked)")
        #expect(!r.stderr.contains("cannot ask jobgov"), "\(r.stderr)")

        // Nobody listens: the status as it was, at once, and a line that says why (make's report cannot).
        let gone = try Running(shell, ["-c", "exit 5"], in: s, env: ["JOBGOV_CONTROL": s.path + "/nonexistent"],
                               tag: "gone").finish(timeout: 30)
        #expect(gone.status == 5)
        #expect(gone.stderr == "jobgov-shell: cannot ask jobgov whether to run the failed line again (connect: errno \(ENOENT))\n",
                "\(gone.stderr)")
    }

    /// A C program of Fixtures/, compiled.
    private static func compileFixture(_ name: String, into s: Scratch) throws -> String {
        try Clients.require("/usr/bin/cc")
        let source = Clients.repo.appendingPathComponent("Tests/IntegrationTests/Fixtures/\(name).c").path
        let r = try Running("/usr/bin/cc", ["-O2", "-Wall", "-Werror", "-o", name, source], in: s, tag: "cc")
            .finish(timeout: 60)
        try #require(r.status == 0, "\(r.stderr)")
        return s.path + "/" + name
    }

    /// The real jobgov takes both forms of the request: `rerun PID STATUS` from this jobgov-shell and `rerun PID`
    /// from an older one; anything else is an error, not a verdict.
    @Test("jobgov's control socket accepts rerun PID and rerun PID STATUS")
    func jobgovParsesTheRequest() throws {
        let s = try Scratch()
        try s.write("Makefile", """
            all: ; @echo "$$JOBGOV_CONTROL" > control-path; i=0; while [ ! -e done ] && [ $$i -lt 600 ]; do sleep 0.1; i=$$((i+1)); done

            """)
        let build = try Running(Clients.jobgov, [Clients.make43, "-s"], in: s)
        defer { _ = FileManager.default.createFile(atPath: s.path + "/done", contents: nil) }
        waitUntil("the recipe to say where the control socket is") { s.read("control-path").hasSuffix("\n") }
        let path = s.read("control-path").trimmingCharacters(in: .whitespacesAndNewlines)
        try #require(!path.isEmpty, "jobgov sets JOBGOV_CONTROL for make and its recipes")
        func ask(_ line: String) -> String {
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &addr.sun_path) { raw in
                for (i, b) in path.utf8.enumerated() { raw[i] = b }
            }
            let connected = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard connected == 0 else { return "cannot connect" }
            _ = (line + "\n").withCString { write(fd, $0, strlen($0)) }
            var reply = [UInt8]()
            var buffer = [UInt8](repeating: 0, count: 512)
            while reply.last != 10 {
                let n = read(fd, &buffer, buffer.count)
                if n <= 0 { break }
                reply += buffer.prefix(n)
            }
            return String(decoding: reply, as: UTF8.self)
        }
        // Process 1 ran no recipe of this build: a verdict ("no", or "wait" while jobgov makes sure), not an error.
        for line in ["rerun 1 256", "rerun 1 9", "rerun 1"] {
            let reply = ask(line)
            #expect(reply.hasPrefix("no ") || reply == "wait\n", "\(line): \(reply)")
        }
        for line in ["rerun 1 x", "rerun 1 -1", "rerun 1 65536", "rerun 1 256 7", "rerun x 256", "rerun"] {
            #expect(ask(line).hasPrefix("error "), "\(line)")
        }
        _ = FileManager.default.createFile(atPath: s.path + "/done", contents: nil)
        let r = build.finish(timeout: 60)
        #expect(r.status == 0, "\(r.stderr)")
    }
}
