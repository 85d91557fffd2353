#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import JobgovCore
import Jobserver
import LinuxSystem

struct Ctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ctl",
        abstract: "Talk to a running jobgov: change its number of jobs or ask for its status.",
        discussion: """
        Finds the build through JOBGOV_CONTROL (set inside every build jobgov runs), through --pid, or, when \
        exactly one jobgov of yours is running, by itself. It looks where jobgov puts its private directory: \
        $XDG_RUNTIME_DIR, else $TMPDIR, else /tmp.
        """,
        subcommands: [Jobs.self, Status.self, Freeze.self, Thaw.self, Kill.self]
    )

    struct Target: ParsableArguments {
        // Taken as text and checked here, so that `--pid -5` and `--pid abc` get a message that says what to give.
        @Option(parsing: .unconditional, help: ArgumentHelp("The process id of the jobgov to talk to, when several run.",
                                                            valueName: "pid"))
        var pid: String?

        func validate() throws {
            _ = try processID
        }

        var processID: Int32? {
            get throws(CommandLineError) {
                try pid.map { (text) throws(CommandLineError) in try OptionValues.processID(text, option: "--pid") }
            }
        }
    }

    struct Jobs: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set the number of parallel jobs of a running build (takes effect at once when raising; "
                + "when lowering, as running jobs finish).",
            usage: "jobgov ctl jobs <N> [--pid <pid>]"
        )
        // Every word that is not --pid, checked here: a plain argument would take `-1` for an unknown option and
        // report the count as missing.
        @Argument(parsing: .allUnrecognized, help: ArgumentHelp("Number of jobs, 1 to \(JobsRequest.maximumJobs).",
                                                                 valueName: "N"))
        var words: [String] = []
        @OptionGroup var target: Target

        func validate() throws {
            _ = try count()
        }

        func count() throws(CommandLineError) -> Int {
            guard let word = words.first else {
                throw .conflict("ctl jobs needs the number of jobs, e.g. `jobgov ctl jobs 8`")
            }
            if word.hasPrefix("-"), word.count > 1, Int(word) == nil {
                throw .conflict("unknown option '\(word)' for `jobgov ctl jobs`: its only option is --pid PID")
            }
            guard words.count == 1 else {
                throw .conflict("ctl jobs takes one number of jobs, not \(words.count) words ("
                                + words.map { "'\($0)'" }.joined(separator: " ") + "), e.g. `jobgov ctl jobs 8`")
            }
            return try JobsRequest.parseCount(word, option: "ctl jobs")
        }

        func run() throws {
            let n = try count()
            let reply = try talk(.setJobs(n), target: target)
            print(reply.hasPrefix("ok ") ? String(reply.dropFirst(3)) : reply)
        }
    }

    struct Freeze: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Freeze the whole build (cgroup freezer): its processes stop until `jobgov ctl thaw`. "
                + "Nothing is freed; if jobgov dies, its watchdog thaws the build.")
        @OptionGroup var target: Target
        func run() throws { print(try talk(.freeze, target: target).dropFirst(3)) }
    }

    struct Thaw: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Thaw a frozen build.")
        @OptionGroup var target: Target
        func run() throws { print(try talk(.thaw, target: target).dropFirst(3)) }
    }

    struct Kill: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Kill every process of the build (jobgov never does this on its own).")
        @OptionGroup var target: Target
        func run() throws { print(try talk(.kill, target: target).dropFirst(3)) }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a running build's jobs and tokens.")
        @Flag(help: "Print the status as one JSON object.")
        var json = false
        @OptionGroup var target: Target

        func run() throws {
            let reply = try talk(.status, target: target)
            if json {
                print(reply)
                return
            }
            let s = try readStatus(reply)
            print("""
            jobgov \(s.pid): \(s.command)
              jobs \(s.jobs) (ceiling \(s.ceiling)), \(s.style) jobserver \(s.auth)
              tokens: \(s.tokensCreated) in circulation, \(s.tokensInPool) free, \
            \(s.tokensOutstanding) held by jobs (peak \(s.peakOutstanding)), \(s.tokensRecreated) re-created
              running for \(s.elapsedSeconds) s\(s.cgroup.isEmpty ? "" : ", cgroup \(s.cgroup)")\(s.frozen ? " (frozen)" : "")
            """)
        }
    }
}

/// A `status` reply, typed; a reply that is not one ends the command with a message.
func readStatus(_ reply: String) throws -> PoolStatus {
    do {
        return try PoolStatus.decode(json: reply)
    } catch {
        fail(error.message + "; is the jobgov that answered of another version than this one?")
        throw ExitCode(1)
    }
}

func talk(_ request: ControlRequest, target: Ctl.Target) throws -> String {
    let env = currentEnvironment()
    let path: String
    if let pid = try target.processID {
        let found = RuntimeDirectory.primaryBase(environment: env)
            .map { RuntimeDirectory.instances(in: $0) }?
            .first { $0.pid == pid }
        if let found {
            path = found.path + "/control"
        } else if let served = daemonServedControl(pid: pid, environment: env) {
            path = served
        } else {
            let base = RuntimeDirectory.primaryBase(environment: env) ?? "/tmp"
            fail("no jobgov with pid \(pid) is running (none has its directory in \(base), and no jobgov daemon "
                 + "serves it); `pgrep -a jobgov` lists the running ones (a jobgov of another user, or started with "
                 + "another XDG_RUNTIME_DIR or TMPDIR, is found only through a daemon both joined)")
            throw ExitCode(1)
        }
    } else if let fromEnv = env["JOBGOV_CONTROL"], !fromEnv.isEmpty {
        path = fromEnv
    } else {
        let live = (RuntimeDirectory.primaryBase(environment: env).map { RuntimeDirectory.instances(in: $0) } ?? [])
            .filter { RuntimeDirectory.processExists($0.pid) && access($0.path + "/control", F_OK) == 0 }
        guard let only = live.first else {
            fail("no running jobgov found; start a build with `jobgov make -jN` first")
            throw ExitCode(1)
        }
        guard live.count == 1 else {
            fail("several jobgov builds are running (pids \(live.map { String($0.pid) }.joined(separator: ", "))); pick one with --pid")
            throw ExitCode(2)
        }
        path = only.path + "/control"
    }
    let reply: String
    do {
        reply = try ControlClient.send(request, to: path)
    } catch {
        fail(error.description)
        throw ExitCode(1)
    }
    if reply.hasPrefix("error ") {
        fail(String(reply.dropFirst(6)))
        throw ExitCode(2)
    }
    return reply
}

/// The control socket of build `pid` as a `jobgov daemon` it joined lists it (a user sees only their own builds
/// there, root all): how `jobgov ctl --pid` reaches a build whose runtime directory is not the caller's, another
/// user's for root. The path is the build's word, so it is used only if it is a socket owned by the build's user.
func daemonServedControl(pid: Int32, environment env: [String: String]) -> String? {
    for socket in DaemonSocketPath.candidates(explicit: nil, environment: env) {
        guard case .status(let status, _) = askDaemonStatus(socket, timeoutMilliseconds: 1000),
              let build = status.builds.first(where: { $0.pid == pid }), let control = build.control else { continue }
        var st = stat()
        guard lstat(control, &st) == 0, st.st_mode & S_IFMT == S_IFSOCK, st.st_uid == build.uid else { continue }
        return control
    }
    return nil
}
