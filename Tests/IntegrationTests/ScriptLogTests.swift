import Foundation
import Testing

/// The scripts' output must survive `script > log 2>&1`: a script that reopens /dev/stderr for writing truncates the
/// redirected file and writes over it from its start (scripts/quickstart lost everything printed before its
/// memory-hungry example that way, through scripts/bench/cgrun).
@Suite("Script logs survive redirection", .enabled(if: geteuid() == 0, "cgrun needs root to create its cgroup"))
struct ScriptLogTests {
    @Test("scripts/bench/cgrun writes the command's output after what the log already holds")
    func cgrunAppendsToRedirectedStderr() throws {
        let s = try Scratch()
        let cgrun = Clients.repo.appendingPathComponent("scripts/bench/cgrun").path
        let log = s.url.appendingPathComponent("quickstart.log").path
        // As scripts/quickstart does, with its whole output in one file: lines before, the command's own output
        // (stdout and stderr, which cgrun sends to its stderr), lines after.
        let script = """
            exec > "$LOG" 2>&1
            echo 'line 1 before cgrun'
            echo 'line 2 before cgrun' >&2
            "$CGRUN" --limit 256M -- sh -c 'echo command-stdout; echo command-stderr >&2' > /dev/null
            echo 'line after cgrun'
            """
        let r = try Running("/bin/sh", ["-c", script], in: s, env: ["LOG": log, "CGRUN": cgrun]).finish(timeout: 60)
        #expect(r.status == 0, "\(s.read("quickstart.log"))")
        let lines = s.read("quickstart.log").split(separator: "\n").map(String.init)
        #expect(lines == ["line 1 before cgrun", "line 2 before cgrun", "command-stdout", "command-stderr",
                          "line after cgrun"], "\(lines)")
    }
}
