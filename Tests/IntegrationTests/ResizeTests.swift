import Foundation
import Testing

/// Changing the target while the build runs, through `jobgov ctl jobs N`.
@Suite("Live resizing", .serialized)
struct ResizeTests {
    /// A build whose first target lowers the pool to 2; the test raises it to 6 later, from outside.
    private func startLowThenRaise(tool: String, in s: Scratch, jobs: Int, seconds: Double) throws -> Running {
        if tool == Clients.ninja {
            var text = "rule job\n  command = \(Clients.jobScript) $out \(seconds)\n"
            text += "rule lower\n  command = $$JOBGOV ctl jobs 2 >/dev/null\n"
            text += "build setup: lower\n"
            let names = (1...jobs).map { "n\($0)" }
            for n in names { text += "build \(n): job || setup\n" }
            text += "build all: phony \(names.joined(separator: " "))\ndefault all\n"
            try s.write("build.ninja", text.replacingOccurrences(of: "$$JOBGOV", with: Clients.jobgov))
            return try Running(Clients.jobgov, [tool, "-j6"], in: s)
        }
        let names = (1...jobs).map { "j\($0)" }.joined(separator: " ")
        try s.write("Makefile", """
            all: \(names)
            \(names): setup
            \t@$(JOB) $@ \(seconds)
            setup:
            \t@$(JOBGOV) ctl jobs 2 >/dev/null
            .PHONY: all setup \(names)

            """)
        return try Running(Clients.jobgov, [tool, "-j6"], in: s)
    }

    /// Runs 24 jobs of 0.5 s at 2 jobs, raises to 6 from outside after four have finished, and returns the log,
    /// the moment of the raise and how long the client took to start a third job.
    private func raise(_ tool: String) throws -> (log: JobLog, raisedAt: Int64, delay: Double) {
        try Clients.require(tool)
        let s = try Scratch()
        let run = try startLowThenRaise(tool: tool, in: s, jobs: 24, seconds: 0.5)
        waitUntil("four jobs to finish at 2 jobs") { JobLog(s.read("job.log")).count >= 4 }
        let raisedAt = realtimeNanoseconds()
        let ctl = try Running(Clients.jobgov, ["ctl", "jobs", "6", "--pid", String(run.pid)], in: s, tag: "ctl").finish()
        #expect(ctl.status == 0, "\(ctl.stderr)")
        let r = run.finish()
        #expect(r.status == 0, "\(r.stderr)")
        let log = JobLog(s.read("job.log"))
        #expect(log.count == 24)
        #expect(log.peak(to: raisedAt) <= 2, "before the raise the pool allowed 2 jobs")
        #expect(log.peak(from: raisedAt) == 6, "after the raise the client should run 6 at once")
        let pickedUp = try #require(log.firstTimeAbove(2, from: raisedAt))
        let delay = Double(pickedUp - raisedAt) / 1e9
        print("\(tool): picked up new tokens \(String(format: "%.3f", delay)) s after the raise (jobs last 0.5 s)")
        return (log, raisedAt, delay)
    }

    @Test("raising the target lets make start more jobs at once", arguments: [Clients.make43, Clients.make44])
    func raiseMake(make: String) throws {
        // make blocks in read() on the pool, so a new token is taken at once; 0.5 s is one job's length.
        #expect(try raise(make).delay < 0.5)
    }

    /// ninja 1.13 reads tokens only when one of its own jobs ends, so it picks new ones up late: measured here
    /// and reported (see README, "Changing parallelism while the build runs").
    @Test("raising the target reaches ninja at its next job completion")
    func raiseNinja() throws {
        // It waits for one of its running jobs to end: at most one job's length (plus scheduling slack).
        #expect(try raise(Clients.ninja).delay < 0.5 + 0.3)
    }

    @Test("lowering the target converges to it without deadlock",
          arguments: [Clients.make43, Clients.make44, Clients.ninja])
    func lower(tool: String) throws {
        try Clients.require(tool)
        let s = try Scratch()
        let count = 40
        if tool == Clients.ninja {
            try s.write("build.ninja", flatNinja(count: count, seconds: 0.4))
        } else {
            try s.write("Makefile", flatMakefile(count: count, seconds: 0.4))
        }
        let run = try Running(Clients.jobgov, [tool, "-j6"], in: s)
        waitUntil("six jobs to finish") { JobLog(s.read("job.log")).count >= 6 }
        let loweredAt = realtimeNanoseconds()
        let ctl = try Running(Clients.jobgov, ["ctl", "jobs", "2", "--pid", String(run.pid)], in: s, tag: "ctl").finish()
        #expect(ctl.status == 0, "\(ctl.stderr)")
        let r = run.finish(timeout: 60)
        #expect(r.status == 0, "\(r.stderr)")
        let log = JobLog(s.read("job.log"))
        #expect(log.count == count)
        #expect(log.peak(to: loweredAt) == 6)
        // The protocol cannot take back a token a client holds: jobgov reads tokens back as jobs end, racing
        // clients that re-read at once for their next job (ninja writes a token back and reads one microseconds
        // later), so how many rounds of job completions it takes varies. What must hold: concurrency comes down
        // to 2 and stays there for the rest of the build, which still has many jobs to run at that point.
        let settled = try #require(log.lastTimeBackTo(2), "the build ran above 2 jobs at some point")
        let startedAfter = log.intervals.filter { $0.start >= settled }.count
        #expect(startedAfter >= 8, "concurrency came down to 2 only near the end of the build (\(startedAfter) jobs after)")
        #expect(log.peak(from: settled) == 2, "once down, 2 at once until the end (not fewer: no token lost)")
        print("\(tool): concurrency settled at 2 jobs \(String(format: "%.3f", Double(settled - loweredAt) / 1e9)) s after lowering, \(startedAfter) of \(count) jobs started after (jobs last 0.4 s)")
    }

    @Test("ctl rejects a bad job count with one line and leaves the build alone")
    func ctlMistakes() throws {
        try Clients.require(Clients.make44)
        let s = try Scratch()
        try s.write("Makefile", flatMakefile(count: 6, seconds: 0.5))
        let run = try Running(Clients.jobgov, [Clients.make44, "-j2"], in: s)
        waitUntil("the build to start") { JobLog(s.read("job.log")).intervals.count >= 1 || s.read("job.log").contains("S ") }
        for bad in ["0", "-3", "abc"] {
            let c = try Running(Clients.jobgov, ["ctl", "jobs", bad, "--pid", String(run.pid)], in: s, tag: "ctl").finish()
            #expect(c.status != 0)
            #expect(c.stderr.split(separator: "\n").count == 1, "\(c.stderr)")
            #expect(c.stderr.contains("jobgov: error:"))
        }
        let status = try Running(Clients.jobgov, ["ctl", "status", "--json", "--pid", String(run.pid)], in: s, tag: "st").finish()
        #expect(status.status == 0)
        #expect(status.stdout.contains("\"jobs\":2"))
        #expect(run.finish().status == 0)
        let none = try Running(Clients.jobgov, ["ctl", "status"], in: s, tag: "none").finish()
        #expect(none.status != 0)
        #expect(none.stderr.contains("no running jobgov"))
    }
}
