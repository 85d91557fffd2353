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
        (["--config", "/no/such/jobgov.conf", "make"],
         "cannot read the config file /no/such/jobgov.conf: No such file or directory; give an existing file to --config",
         Int32(2)),
        // An unknown option before the command is jobgov's mistake, not a command to look for on PATH.
        (["--frobnicate", "make"], "unknown jobgov option '--frobnicate': jobgov's own options come before the command",
         Int32(2)),
        (["--memory-budge", "1G", "make"], "unknown jobgov option '--memory-budge' (did you mean '--memory-budget'?)",
         Int32(2)),
        (["--no-swp", "make"], "(did you mean '--no-swap'?)", Int32(2)),
        (["-x", "make"], "put `--` before it: `jobgov -- -x ...`", Int32(2)),
        (["run", "--frob", "make"], "unknown jobgov option '--frob'", Int32(2)),
        (["-q", "--", "--frob"], "command not found: --frob", Int32(127)),
        // A value that looks like a negative number is still the option's value, and is checked as one.
        (["-j", "-3", "make"], "invalid job count '-3' for --jobs: it must be at least 1", Int32(2)),
        (["-j"], "-j needs a value: a number of jobs", Int32(2)),
        (["make", "--jobs=abc"], "give a whole number from 1 to 4096, e.g. -j8", Int32(2)),
        (["--memory-budget", "-1G", "make"], "invalid size '-1G' for --memory-budget: expected a size such as 8G", Int32(2)),
        (["--memory-budget"], "--memory-budget needs a value: a size such as 8G, 512M or 75%", Int32(2)),
        (["--cpu-max", "lots", "make"], "invalid value 'lots' for --cpu-max: give a number of CPUs from 0.01", Int32(2)),
        (["--cpu-threshold", "-5", "make"], "invalid value '-5' for --cpu-threshold: expected a percentage above 0", Int32(2)),
        (["--freeze-threshold=0", "make"], "invalid value '0' for --freeze-threshold", Int32(2)),
        (["--io-latency", "-1", "make"], "invalid value '-1' for --io-latency: expected milliseconds above 0", Int32(2)),
        // Found before the build runs, not after it.
        (["--summary-json", "/no/such/dir/s.json", "--", "/bin/true"],
         "cannot write the summary to /no/such/dir/s.json: No such file or directory", Int32(1)),
        // ctl
        (["ctl", "jobs", "-1"], "invalid job count '-1' for ctl jobs: it must be at least 1", Int32(2)),
        (["ctl", "jobs", "0"], "it must be at least 1; give a whole number from 1 to 4096, e.g. `jobgov ctl jobs 8`",
         Int32(2)),
        (["ctl", "jobs", "lots"], "invalid job count 'lots' for ctl jobs: not a number", Int32(2)),
        (["ctl", "jobs"], "ctl jobs needs the number of jobs, e.g. `jobgov ctl jobs 8`", Int32(2)),
        (["ctl", "jobs", "3", "4"], "ctl jobs takes one number of jobs, not 2 words", Int32(2)),
        (["ctl", "jobs", "--frob", "3"], "unknown option '--frob' for `jobgov ctl jobs`: its only option is --pid", Int32(2)),
        (["ctl", "status", "--pid", "-5"], "invalid value '-5' for --pid: give the process id of a running jobgov", Int32(2)),
        (["ctl", "freeze", "--pid", "abc"], "invalid value 'abc' for --pid", Int32(2)),
        (["ctl", "thaw", "--pid"], "--pid needs a value: the process id of a running jobgov", Int32(2)),
        (["ctl", "kill", "--pid", "0"], "invalid value '0' for --pid", Int32(2)),
        (["ctl", "jobs", "4", "--pid", "2147483647"], "no jobgov with pid 2147483647 is running", Int32(1)),
        (["ctl", "status", "--frob"], "unknown option '--frob'", Int32(2)),
        (["ctl", "frob"], "unknown ctl command 'frob': give jobs N, status, freeze, thaw or kill", Int32(2)),
        // monitor
        (["monitor", "--interval", "0"], "invalid value '0' for --interval: give seconds from 0.05 to 3600", Int32(2)),
        (["monitor", "--interval", "-1"], "invalid value '-1' for --interval", Int32(2)),
        (["monitor", "--interval", "soon"], "invalid value 'soon' for --interval", Int32(2)),
        (["monitor", "--interval"], "--interval needs a value: seconds between updates", Int32(2)),
        (["monitor", "--count", "-1"], "invalid value '-1' for --count: the count must be at least 1", Int32(2)),
        (["monitor", "--count", "many"], "invalid value 'many' for --count: give a whole number of updates", Int32(2)),
        (["monitor", "--pid", "-3"], "invalid value '-3' for --pid", Int32(2)),
        (["monitor", "--pid", "2147483647", "--count", "1"], "no jobgov with pid 2147483647 is running", Int32(1)),
        (["monitor", "--cgroup", "no-such-cgroup-xyz", "--count", "1"],
         "no cgroup 'no-such-cgroup-xyz' in any cgroup hierarchy of this machine; give a directory below /sys/fs/cgroup",
         Int32(1)),
        (["monitor", "--cgroup", "x", "--pid", "3"], "give --cgroup or --pid, not both", Int32(2)),
        (["monitor", "now"], "unexpected argument 'now'", Int32(2)),
        // daemon
        (["daemon", "--status", "--cgroups", "--socket", "/nonexistent/daemon.sock"],
         "--cgroups goes with starting the daemon, not with --status", Int32(2)),
        (["--generate-completion-script", "csh"],
         "can't generate completion scripts for 'csh'. Please use --generate-completion-script=<shell> with one of: zsh bash fish",
         Int32(2)),
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

    @Test("a mistake in ctl, monitor or fan points at that command's help", arguments: [
        (["ctl", "jobs", "-1"], "(see `jobgov ctl jobs --help`)"),
        (["ctl", "status", "--pid", "x"], "(see `jobgov ctl status --help`)"),
        (["ctl", "frob"], "(see `jobgov ctl --help`)"),
        (["monitor", "--count", "0"], "(see `jobgov monitor --help`)"),
        (["fan", "--frob"], "(see `jobgov fan --help`)"),
    ])
    func helpHint(arguments: [String], hint: String) throws {
        let s = try Scratch()
        let r = try jobgov(arguments, in: s, timeout: 20)
        #expect(r.status == 2 && r.stderr.hasSuffix(hint + "\n"), "\(r.stderr)")
    }

    @Test("a mistake in the config file names the file and line", arguments: [
        ("memory-threshold = 80\n\n# the limit\nio-latency = -5\n", "jobgov.conf:4: io-latency = -5: expected milliseconds above 0"),
        ("cpu-threshold = lots\n", "jobgov.conf:1: cpu-threshold = lots: expected a percentage above 0 and at most 100"),
        ("freeze-threshold = 150%\n", "jobgov.conf:1: freeze-threshold = 150%: expected a percentage"),
        ("no-swap = yes\n", "jobgov.conf:1: no-swap = yes: expected true or false"),
        ("# ok\nmemory = 8G\n", "jobgov.conf:2: unknown key \"memory\"; known keys: cpu-threshold"),
        ("just words\n", "jobgov.conf:1: expected `key = value`, found \"just words\""),
    ])
    func configMistakes(text: String, message: String) throws {
        let s = try Scratch()
        try s.write("jobgov.conf", text)
        let r = try jobgov(["--config", s.url.appendingPathComponent("jobgov.conf").path, "--", "/bin/true"], in: s,
                           timeout: 20)
        #expect(r.status == 2, "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count == 1 && r.stderr.hasPrefix("jobgov: error: "), "\(r.stderr)")
        #expect(r.stderr.contains(message), "\(r.stderr)")
        let directory = try jobgov(["--config", s.path, "--", "/bin/true"], in: s, timeout: 20)
        #expect(directory.status == 2 && directory.stderr.contains("cannot read the config file \(s.path): Is a directory"),
                "\(directory.stderr)")
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
