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

    /// A stand-in for jobgov's control socket: answers each `rerun PID` with the next of `replies`.
    final class FakeControl: @unchecked Sendable {
        let path: String
        private let fd: Int32
        private let lock = NSLock()
        private var requests: [String] = []
        var asked: [String] { lock.withLock { requests } }

        init(path: String, replies: [String]) throws {
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
            let listener = fd
            Thread.detachNewThread { [self] in
                for reply in replies {
                    let client = accept(listener, nil, nil)
                    if client < 0 { return }
                    var buffer = [UInt8](repeating: 0, count: 256)
                    let n = read(client, &buffer, buffer.count)
                    lock.withLock { requests.append(String(decoding: buffer.prefix(max(n, 0)), as: UTF8.self)) }
                    _ = (reply + "\n").withCString { write(client, $0, strlen($0)) }
                    close(client)
                }
            }
        }
        deinit { shutdown(fd, Int32(SHUT_RDWR)); close(fd) }
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
        let wrapped = try Running(Clients.make43, ["-k", "-j1", "SHELL=" + shell], in: s, env: env, tag: "wrapped")
            .finish(timeout: 60)
        #expect(wrapped.stdout == plain.stdout && reports(wrapped.stderr) == reports(plain.stderr),
                "\(wrapped.stderr.suffix(3000))")
        #expect(reports(wrapped.stderr).contains { $0.hasSuffix("signal] Terminated") })

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

        // Killed: jobgov is asked (`rerun PID`), answers "wait" twice, then "go", and the recipe runs again.
        let control = try FakeControl(path: s.path + "/control", replies: ["wait", "wait", "go"])
        let line = "if [ -e once ]; then echo again; exit 4; fi; touch once; kill -KILL $$"
        let rerun = try Running(shell, ["-c", line], in: s, env: ["JOBGOV_CONTROL": control.path], tag: "rerun")
        let r = rerun.finish(timeout: 30)
        #expect(r.status == 4 && r.stdout == "again\n", "\(r.stderr)")
        #expect(control.asked == Array(repeating: "rerun \(rerun.pid)\n", count: 3), "\(control.asked)")
        // "no", or JOBGOV_NO_RERUN: it ends by the same SIGKILL.
        unlink(s.path + "/once")
        let refused = try FakeControl(path: s.path + "/control2", replies: ["no not an OOM kill"])
        #expect(try run(line, ["JOBGOV_CONTROL": refused.path]).status == 128 + SIGKILL)
        unlink(s.path + "/once")
        #expect(try run(line, ["JOBGOV_CONTROL": control.path, "JOBGOV_NO_RERUN": "1"]).status == 128 + SIGKILL)
    }
}
