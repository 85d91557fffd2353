import Foundation
import Testing

/// Exit statuses, signals, and nothing left behind on any path.
@Suite("Exit, signals and cleanup", .serialized)
struct LifecycleTests {
    @Test("the FIFO and socket are gone after a successful and a failing build")
    func cleanupOnExit() throws {
        try Clients.require(Clients.make44)
        let s = try Scratch()
        try s.write("Makefile", "all:\n\t@test -p \"$$JOBGOV_FIFO\" && test -S \"$$JOBGOV_CONTROL\"\nfail:\n\t@exit 3\n")
        let ok = try jobgov([Clients.make44, "-j2"], in: s)
        #expect(ok.status == 0, "the FIFO and the socket exist while the build runs: \(ok.stderr)")
        #expect(s.runtimeLeftovers.isEmpty)
        let failed = try jobgov([Clients.make44, "-j2", "fail"], in: s)
        #expect(failed.status == 2, "make exits 2 when a recipe fails")
        #expect(s.runtimeLeftovers.isEmpty)
    }

    @Test("the private directory is owner-only and the FIFO path has no whitespace")
    func privateDirectory() throws {
        try Clients.require(Clients.make44)
        let s = try Scratch()
        try s.write("Makefile", """
            all:
            \t@stat -c '%a' "$$(dirname "$$JOBGOV_FIFO")" > dirmode; stat -c '%a' "$$JOBGOV_FIFO" > fifomode
            \t@stat -c '%a' "$$JOBGOV_CONTROL" > sockmode; echo "$$MAKEFLAGS" > makeflags

            """)
        let r = try jobgov([Clients.make44, "-j3"], in: s)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(s.read("dirmode").hasPrefix("700"))
        #expect(s.read("fifomode").hasPrefix("600"))
        #expect(s.read("sockmode").hasPrefix("600"))
        let flags = s.read("makeflags")
        #expect(flags.contains("--jobserver-auth=fifo:\(s.path)/jobgov-"), "\(flags)")
        #expect(flags.contains("-j3"))
    }

    @Test("exit status is the build's, or 128+signal", arguments: [
        ("exit 0", Int32(0)), ("exit 7", Int32(7)), ("kill -TERM $$", Int32(143)), ("kill -KILL $$", Int32(137)),
    ])
    func exitStatus(script: String, expected: Int32) throws {
        let s = try Scratch()
        let r = try jobgov(["-j2", "--", "/bin/sh", "-c", script], in: s)
        #expect(r.status == expected, "\(r.stderr)")
        #expect(s.runtimeLeftovers.isEmpty)
    }

    @Test("SIGINT, SIGTERM and SIGHUP sent to jobgov reach the build; jobgov exits with its status",
          arguments: [SIGINT, SIGTERM, SIGHUP])
    func signalForwarding(sig: Int32) throws {
        try Clients.require(Clients.make44)
        let s = try Scratch()
        try s.write("Makefile", flatMakefile(count: 8, seconds: 30))
        let run = try Running(Clients.jobgov, [Clients.make44, "-j4"], in: s)
        waitUntil("jobs to start") { s.read("job.log").split(separator: "\n").count >= 4 }
        #expect(kill(run.pid, sig) == 0)
        let r = run.finish(timeout: 20)
        // make passes the signal on to its jobs, cleans up, and dies by the same signal.
        #expect(r.status == 128 + sig, "\(r.stderr)")
        #expect(s.runtimeLeftovers.isEmpty)
        // The jobs were ended too: none of them is still sleeping.
        let leftover = try Running("/usr/bin/pgrep", ["-f", "\(Clients.jobScript) j"], in: s, tag: "pgrep").finish()
        #expect(leftover.stdout.isEmpty, "jobs still running: \(leftover.stdout)")
    }

    /// Without a cgroup there is no watchdog (see CgroupTests for the watchdog's cleanup).
    @Test("a jobgov without cgroup killed with SIGKILL leaves a stale directory that the next jobgov removes")
    func staleDirectoryRemoved() throws {
        let s = try Scratch()
        let run = try Running(Clients.jobgov, ["-j2", "--no-cgroup", "--", "/bin/sleep", "30"], in: s)
        waitUntil("the runtime directory") { !s.runtimeLeftovers.isEmpty }
        waitUntil("the sleep to start") { !(try? String(contentsOfFile: "/proc/\(run.pid)/task/\(run.pid)/children", encoding: .utf8))!.isEmpty }
        let sleeper = (try? String(contentsOfFile: "/proc/\(run.pid)/task/\(run.pid)/children", encoding: .utf8))?
            .split(separator: " ").compactMap { Int32($0) }.first
        kill(run.pid, SIGKILL)
        // The orphaned sleep outlived jobgov (SIGKILL); end it by its pid.
        if let sleeper { kill(sleeper, SIGKILL) }
        _ = run.finish()
        #expect(s.runtimeLeftovers.count == 1, "SIGKILL gives jobgov no chance to clean up")
        let next = try jobgov(["--", "/bin/true"], in: s)
        #expect(next.status == 0)
        #expect(s.runtimeLeftovers.isEmpty, "the next jobgov removes directories of dead jobgovs")
    }
}

/// Every mistake a user can make on jobgov's command line gets one clear line and a non-zero status.
@Suite("User mistakes")
struct MistakeTests {
    @Test("one-line errors", arguments: [
        ([String](), "no command given", Int32(2)),
        (["no-such-command-xyz"], "command not found: no-such-command-xyz", Int32(127)),
        (["make", "-j0"], "invalid job count '0' for -j", Int32(2)),
        (["make", "-j", "-3"], "invalid job count '-3' for -j", Int32(2)),
        (["make", "--jobs=abc"], "invalid job count 'abc' for --jobs", Int32(2)),
        (["-j", "0", "make"], "invalid job count '0' for --jobs", Int32(2)),
        (["--jobserver-style", "carrier-pigeon", "make"], "carrier-pigeon", Int32(2)),
        (["--", "/etc/passwd"], "cannot execute /etc/passwd", Int32(126)),
        (["--memory-threshold", "150", "make"], "expected a percentage above 0 and at most 100", Int32(2)),
        (["--io-latency", "soon", "make"], "expected milliseconds above 0", Int32(2)),
        (["--memory-threshold", "90", "--freeze-threshold", "80", "make"],
         "the freeze threshold (80%) must not be below the memory threshold (90%)", Int32(2)),
        (["--config", "/no/such/jobgov.conf", "make"], "cannot read the config file /no/such/jobgov.conf", Int32(2)),
    ])
    func mistakes(arguments: [String], message: String, status: Int32) throws {
        let s = try Scratch()
        let r = try jobgov(arguments, in: s, timeout: 20)
        #expect(r.status == status, "\(r.stderr)")
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == 1, "exactly one line: \(r.stderr)")
        #expect(r.stderr.hasPrefix("jobgov: error: "), "\(r.stderr)")
        #expect(r.stderr.contains(message), "\(r.stderr)")
        #expect(s.runtimeLeftovers.isEmpty)
    }

    @Test("--help explains -j, the exit status and ctl")
    func help() throws {
        let s = try Scratch()
        let r = try jobgov(["--help"], in: s)
        #expect(r.status == 0)
        for phrase in ["bare -j", "No -j at all", "Exit status", "jobgov ctl jobs", "cmake --build",
                       "--memory-budget", "--cpu-max", "--no-cgroup", "jobgov monitor", "--fixed-jobs",
                       "--summary-json", "--no-rerun", "freezes the newest job"] {
            #expect(r.stdout.contains(phrase), "\(phrase)")
        }
        let run = try jobgov(["run", "--help"], in: s)
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.contains("--memory-budget") && run.stderr.isEmpty)
    }
}
