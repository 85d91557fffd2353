import Foundation
import Testing

@Suite("Token accounting", .serialized)
struct TokenAccountingTests {
    /// Twenty builds in a row under one jobgov; afterwards the pool holds exactly jobs-1 tokens, whatever bytes the
    /// clients wrote back (make writes '+', ninja echoes what it read).
    @Test("after many builds the pool holds exactly the expected tokens",
          arguments: [Clients.make43, Clients.make44, Clients.ninja])
    func manyBuilds(tool: String) throws {
        try Clients.require(tool)
        let s = try Scratch()
        let build: String
        if tool == Clients.ninja {
            try s.write("build.ninja", flatNinja(count: 8, seconds: 0.01).replacingOccurrences(of: " && : > $out", with: ""))
            build = "\(tool) -C \(s.path) >/dev/null"
        } else {
            try s.write("Makefile", flatMakefile(count: 8, seconds: 0.01))
            build = "\(tool) -s -C \(s.path)"
        }
        let script = "for i in $(seq 20); do \(build) || exit 1; done; \"$JOBGOV\" ctl status --json > status.json"
        let style = tool == Clients.make43 ? "pipe" : "fifo"
        let r = try jobgov(["-j4", "--jobserver-style", style, "--", "/bin/sh", "-c", script], in: s)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(JobLog(s.read("job.log")).count == 160)
        let status = s.read("status.json")
        #expect(status.contains("\"tokens_created\":3"), "\(status)")
        #expect(status.contains("\"tokens_in_pool\":3"), "\(status)")
        #expect(status.contains("\"tokens_recreated\":0"), "\(status)")
        #expect(!r.stderr.contains("still out at exit"))
    }

    /// A sub-make that holds tokens is SIGKILLed. Its jobs run on as orphans; once they are gone jobgov re-creates
    /// the tokens, and the rest of the build runs at full parallelism again.
    @Test("tokens of a client killed with SIGKILL come back", arguments: [Clients.make43, Clients.make44])
    func killedClient(make: String) throws {
        try Clients.require(make)
        let s = try Scratch()
        try s.write("Makefile", """
            all: phase2
            phase1:
            \t-@$(MAKE) -s -f victim.mk
            phase2: phase1
            \t@$(MAKE) -s -f work.mk
            .PHONY: all phase1 phase2

            """)
        try s.write("victim.mk", """
            all: v1 v2 v3 v4
            v1 v2 v3 v4:
            \t@p=$$PPID; [ "$$(cat /proc/$$p/comm)" = make ] || p=$$(cut -d' ' -f4 /proc/$$p/stat); echo $$p > victim.pid; $(JOB) $@ 2
            .PHONY: all v1 v2 v3 v4

            """)
        // Long enough to outlast the orphans (2 s) and the lost-token check (three looks 0.5 s apart): jobgov answers
        // the killed recipe's question at once, so phase2 starts while the orphans still run.
        try s.write("work.mk", flatMakefile(count: 80, seconds: 0.4, prefix: "w"))
        let run = try Running(Clients.jobgov, [make, "-j4"], in: s)
        waitUntil("the victim's four jobs to start") {
            s.read("job.log").split(separator: "\n").filter { $0.hasPrefix("S ") }.count >= 4
        }
        let victim = try #require(Int32(s.read("victim.pid").trimmingCharacters(in: .whitespacesAndNewlines)))
        let killedAt = realtimeNanoseconds()
        #expect(kill(victim, SIGKILL) == 0)
        let r = run.finish()
        #expect(r.status == 0, "\(r.stderr)")
        let log = JobLog(s.read("job.log"))
        let victims = log.intervals.filter { $0.name.hasPrefix("v") }
        #expect(victims.count == 4, "the victim held 3 tokens plus its implicit slot")
        // The victim's jobs run on as orphans after it dies, outside any token; count the later jobs only.
        var work = log
        work.intervals.removeAll { $0.name.hasPrefix("v") }
        let orphansGone = victims.map(\.end).max() ?? killedAt
        #expect(work.peak(from: orphansGone + 2_500_000_000) == 4, "full parallelism after the tokens come back")
        #expect(work.peak() <= 4)
        #expect(r.stderr.contains("re-created 3 tokens"), "\(r.stderr)")
        #expect(r.stderr.contains("3 lost tokens re-created"))
    }
}
