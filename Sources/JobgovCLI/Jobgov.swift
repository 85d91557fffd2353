#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import JobgovCore
import Jobserver
import LinuxSystem

public struct Jobgov: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "jobgov",
        abstract: "Run a parallel build as its GNU make jobserver, with parallelism set live from memory, CPU and I/O.",
        usage: """
        jobgov [-j <N>] [--memory-budget <size>] [--cpu-max <cpus>] [--cgroup <path> | --no-cgroup]
                 [--fixed-jobs] [--memory-threshold <%>] [--freeze-threshold <%>] [--cpu-threshold <%>]
                 [--io-latency <ms>] [--trace <file>] [--trace-events <file>] [--summary-json <file>] [--no-history]
                 [--no-rerun] [--no-swap] [--no-boost] [--no-gate] [--priority <w>] [--no-daemon] [--config <file>]
                 [--jobserver-style <style>] [-q] [--] <command> [<args> ...]
          jobgov ctl jobs <N> | status [--json] | freeze | thaw | kill   [--pid <pid>]
          jobgov daemon [--socket <path>] [--group <name>] [--memory-budget <size>] [--pool <n>] [--cgroups] | --status [--json] | --priority <pid>:<w>
          jobgov monitor [--cgroup <path> | --pid <pid>] [--interval <s>] [--count <n>] [--json] [--daemon-socket <path>]
          jobgov fan --fan <hwmon fan> --sensor <hwmon sensor> [--curve <points>] [--max-temp <°C>] [--interval <s>]
          jobgov changes [-o <file>] [--deleted <file>] [-0] [--for <s>] <directory> ...
          jobgov guard [--action report|freeze|kill] [--interval <s>] [--protect <name>] [--cgroup <path>] [--for <s>]
        """,
        discussion: """
        jobgov runs COMMAND as the jobserver that make, ninja, cargo, recursive sub-makes and gcc -flto=jobserver \
        all draw job tokens from. The build runs as the plain command would, with the same output and exit \
        status, but its parallelism is a number jobgov controls and can change while it runs \
        (`jobgov ctl jobs N`), without restarting anything.

        The governor sets that number every 100 ms: it admits a new job only while the memory in use, what the \
        running jobs are predicted to still need and the next job's predicted peak fit in the memory budget, \
        and none while memory in use is above 85% of it; it holds the count while the build saturates the CPUs or the disks are slow; it freezes the newest \
        job (never the oldest) before memory runs out and thaws it when memory returns. On cgroup v1 the kernel's \
        OOM killer is held off while jobgov acts; a make recipe the OOM killer ended anyway runs again alone. \
        At the end it prints a summary (--summary-json for scripts). --fixed-jobs turns the governor off.

        Examples:
          jobgov make -j16
          jobgov ninja -C out -j8
          jobgov cargo build --release -j8
          jobgov -- cmake --build build -j 12
          jobgov -j8 -- ./build.sh          (any command: its makes and ninjas join the pool)

        How many jobs:
          -jN / -j N / --jobs=N given to make, ninja, cargo or cmake sets the ceiling and is taken off the \
        tool's command line (a command-line -j would make the tool ignore the jobserver).
          A bare -j (make's "no limit") means 4 x CPUs. No -j at all means one job per CPU. \
        jobgov's own -j/--jobs, before the command, wins over the tool's.

        Exit status: the build's own; 128+N when a signal N ended it; 2 for a mistake on jobgov's command \
        line; 1 when jobgov cannot set the build up (e.g. a --cgroup parent that does not exist); 126 when \
        COMMAND cannot be executed, 127 when it is not found.
        """,
        version: "jobgov \(jobgovVersion)",
        subcommands: [Run.self, Ctl.self, DaemonCommand.self, Monitor.self, Fan.self, ChangesCommand.self, GuardCommand.self,
                      WatchdogCommand.self],
        defaultSubcommand: Run.self
    )

    public init() {}
}

/// How the jobserver is offered to the build.
enum StyleOption: String, ExpressibleByArgument, CaseIterable {
    case auto, fifo, pipe
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a build under jobgov (the default command: `jobgov make -j8` is `jobgov run make -j8`)."
    )

    /// jobgov's own ceiling on parallel jobs; wins over the build tool's -j.
    // Options whose value may look like a negative number take the next word whatever it is (`.unconditional`), so
    // that `-j -3` is reported as a bad job count rather than as a missing value.
    @Option(name: [.customShort("j", allowingJoined: true), .long], parsing: .unconditional, help: ArgumentHelp(
        "Jobs to run at most (wins over the build tool's own -j).", valueName: "N"))
    var jobs: String?

    @Option(help: ArgumentHelp("""
        How clients find the pool: fifo (--jobserver-auth=fifo:PATH; make 4.4+, ninja, cargo, GCC 13+), \
        pipe (R,W descriptors; make 4.3, GCC 12 LTO) or auto (by the tool and its version).
        """, valueName: "style"))
    var jobserverStyle: StyleOption = .auto

    @Flag(name: .shortAndLong, help: "Print nothing of jobgov's own; only the build's output.")
    var quiet = false

    @Option(help: ArgumentHelp("""
        Create the build's cgroup below this one (a path such as `builds` made with `cgcreate -g memory,cpu:builds`) \
        instead of below jobgov's own.
        """, valueName: "path"))
    var cgroup: String?

    @Flag(help: "Do not put the build in a cgroup of its own (no limits, no freezing).")
    var noCgroup = false

    @Option(parsing: .unconditional, help: ArgumentHelp("""
        CPU time for the build, in CPUs (e.g. 1.5): the cgroup's cpu.max (v1 cpu.cfs_quota_us) per 100 ms period.
        """, valueName: "cpus"))
    var cpuMax: String?

    @Option(parsing: .unconditional, help: ArgumentHelp("""
        Memory for the build, e.g. 8G, 512M or 75% (of the machine's memory): the cgroup's memory.high on cgroup v2; \
        the hard limit is a reserve (a tenth, 64 MiB to 1 GiB) above it.
        """, valueName: "size"))
    var memoryBudget: String?

    // The settings the config file can hold too take their help from `RunSettings`, which also holds their
    // defaults and checks; the values stay text here so that a mistake gets the table's message, not
    // ArgumentParser's.
    @Flag(help: ArgumentHelp(RunSettings.fixedJobs.help))
    var fixedJobs = false

    @Option(parsing: .unconditional, help: help(RunSettings.memoryThreshold))
    var memoryThreshold: String?

    @Option(parsing: .unconditional, help: help(RunSettings.freezeThreshold))
    var freezeThreshold: String?

    @Option(parsing: .unconditional, help: help(RunSettings.cpuThreshold))
    var cpuThreshold: String?

    @Option(parsing: .unconditional, help: help(RunSettings.ioLatency))
    var ioLatency: String?

    @Option(help: ArgumentHelp("Write the governor's view every tick as JSON lines to this file.", valueName: "file"))
    var trace: String?

    @Option(help: help(RunSettings.traceEvents))
    var traceEvents: String?

    @Option(help: ArgumentHelp("Write the end-of-run summary as JSON to this file.", valueName: "file"))
    var summaryJson: String?

    @Flag(help: ArgumentHelp(RunSettings.noHistory.help))
    var noHistory = false

    @Flag(help: ArgumentHelp(RunSettings.noRerun.help))
    var noRerun = false

    @Flag(help: ArgumentHelp(RunSettings.noSwap.help))
    var noSwap = false

    @Flag(help: ArgumentHelp(RunSettings.noBoost.help))
    var noBoost = false

    @Option(parsing: .unconditional, help: ArgumentHelp("""
        The build's weight when it shares a budget with others under `jobgov daemon`, 1 to 100 (default \
        \(BuildReport.defaultWeight)): a heavier build is served first and gets more of the spare memory and of the CPUs.
        """, valueName: "w"))
    var priority: String?

    @Flag(help: "Run alone even when a `jobgov daemon` listens (JOBGOV_DAEMON_SOCKET=none does the same).")
    var noDaemon = false

    @Option(help: ArgumentHelp("""
        The socket of the `jobgov daemon` to join (default: $JOBGOV_DAEMON_SOCKET, else the user's own daemon, \
        else /run/jobgov/daemon.sock).
        """, valueName: "path"))
    var daemonSocket: String?
    @Flag(help: ArgumentHelp(RunSettings.noGate.help))
    var noGate = false

    @Option(help: ArgumentHelp("""
        Read defaults from this file instead of $XDG_CONFIG_HOME/jobgov/config (~/.config/jobgov/config): \
        `key = value` lines whose keys are these long options, e.g. `memory-threshold = 80`.
        """, valueName: "file"))
    var config: String?

    @Argument(parsing: .captureForPassthrough, help: ArgumentHelp(
        "The build command and its arguments.", valueName: "command"))
    var command: [String] = []

    func run() throws {
        throw ExitCode(execute())
    }

    /// Runs the build and returns the exit status for jobgov.
    func execute() -> Int32 {
        var command = self.command
        let env = currentEnvironment()
        do {
            // Everything from the first word jobgov does not know is the build's command: a word there that looks
            // like an option is a mistyped jobgov option, unless `--` came first.
            if command.first == "--" {
                command.removeFirst()
            } else if let first = command.first, first.hasPrefix("-"), first.count > 1 {
                throw CommandLineError.unknownOption(first, suggestion: OptionValues.suggestion(for: first, among: Self.longOptions))
            }
            let override = try jobs.map { (text) throws(CommandLineError) in try JobsRequest.parseCount(text, option: "--jobs") }
            guard let name = command.first, !name.isEmpty else { throw CommandLineError.noCommand }
            let executable: String
            switch ProcessLauncher.resolve(name, path: env["PATH"]) {
            case .success(let path): executable = path
            case .failure(let error):
                fail(error.description)
                if case .notFound = error { return 127 }
                return 126
            }
            let facts = gatherFacts(command: command, executable: executable, env: env)
            let style: JobserverStyle? = switch jobserverStyle {
            case .auto: nil
            case .fifo: .fifo
            case .pipe: .pipe
            }
            let plan = try RunPlan.make(command: command, jobsOverride: override, styleOverride: style, facts: facts)
            if noCgroup && (cgroup != nil || memoryBudget != nil || cpuMax != nil) {
                throw CommandLineError.conflict("--no-cgroup cannot be combined with --cgroup, --memory-budget or --cpu-max")
            }
            var cpuQuota: Int?
            if let cpuMax {
                let cpus = try OptionValues.cpus(cpuMax, option: "--cpu-max", maximum: JobsRequest.maximumJobs)
                cpuQuota = Int((cpus * 100_000).rounded())
            }
            let budget = try memoryBudget.map { (text) throws(CommandLineError) in
                try MemorySize.parse(text, option: "--memory-budget", percentOf: physicalMemory())
            }
            var options = BuildSupervisor.Options(plan: plan, executable: executable, environment: env, quiet: quiet)
            options.cgroup = noCgroup ? .off : (cgroup.map { .below($0) } ?? .automatic)
            options.memoryBudget = budget
            options.cpuQuotaMicroseconds = cpuQuota
            options.governor = try governorChoices(env: env)
            if let summaryJson, let problem = Self.unwritable(summaryJson) {
                // Found out now rather than after a build that may take an hour.
                fail("cannot write the summary to \(summaryJson): \(problem); give a file in a directory that exists and is writable")
                return 1
            }
            let supervisor = BuildSupervisor(options: options)
            let outcome = try supervisor.run()
            let summary = RunSummary(outcome: outcome, plan: plan)
            if !quiet { for line in summary.lines { note(line) } }
            if let summaryJson {
                let fd = open(summaryJson, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
                if fd < 0 {
                    fail("cannot write the summary to \(summaryJson): \(String(cString: strerror(errno)))")
                } else {
                    writeAll(fd, summary.json + "\n")
                    close(fd)
                }
            }
            return outcome.exit.shellStatus
        } catch {
            return failureStatus(error)
        }
    }

    /// The long options of `jobgov run`, from its help (for "did you mean" on an unknown option).
    static let longOptions: [String] = {
        var names: [String] = []
        for word in Jobgov.helpMessage(for: Run.self, columns: 200).split(whereSeparator: { " ,[]()<>=\n".contains($0) })
        where word.hasPrefix("--") && word.count > 2 && !names.contains(String(word)) {
            names.append(String(word))
        }
        return names
    }()

    /// Why `path` cannot be created or written, or nil if it can.
    static func unwritable(_ path: String) -> String? {
        if access(path, F_OK) == 0 {
            return access(path, W_OK) == 0 ? nil : String(cString: strerror(errno))
        }
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
        return access(directory, W_OK) == 0 ? nil : String(cString: strerror(errno))
    }

    /// Flags over the config file over the defaults.
    func governorChoices(env: [String: String]) throws -> BuildSupervisor.GovernorChoices? {
        let (file, path) = try ConfigFileLoader.load(explicit: config, environment: env)
        let where_ = path ?? "the config file"
        /// The flag's value, else the config file's, typed by the table; nil when neither gives one.
        func value<V>(_ flag: String?, _ setting: RunSetting<V>) throws(CommandLineError) -> V? {
            if let flag { return try setting.value(flag, from: setting.flag) }
            guard let text = file[setting.key] else { return nil }
            return try setting.value(text, from: "\(setting.key) in \(where_)")
        }
        /// A flag of the table: on when given, else as the config file says, else its default.
        func switched(_ flag: Bool, _ setting: RunSetting<Bool>) throws(CommandLineError) -> Bool {
            if flag { return true }
            return try value(nil, setting) ?? setting.defaultValue
        }
        if try switched(fixedJobs, RunSettings.fixedJobs) {
            // The timeline is the governor's view of the build: without it there is none to write.
            if traceEvents != nil || file[RunSettings.traceEvents.key] != nil {
                let source = traceEvents != nil ? RunSettings.traceEvents.flag : "\(RunSettings.traceEvents.key) in \(where_)"
                throw CommandLineError.conflict("\(source) needs the governor, which --fixed-jobs (or fixed-jobs in the config file) turns off")
            }
            return nil
        }
        var c = BuildSupervisor.GovernorChoices()
        c.memoryThreshold = try value(memoryThreshold, RunSettings.memoryThreshold) ?? c.memoryThreshold
        c.freezeThreshold = try value(freezeThreshold, RunSettings.freezeThreshold) ?? c.freezeThreshold
        c.cpuThreshold = try value(cpuThreshold, RunSettings.cpuThreshold) ?? c.cpuThreshold
        c.ioLatency = try value(ioLatency, RunSettings.ioLatency) ?? c.ioLatency
        if c.freezeThreshold.share < c.memoryThreshold.share {
            throw CommandLineError.conflict("the freeze threshold (\(c.freezeThreshold)) must not be below the memory threshold (\(c.memoryThreshold))")
        }
        c.traceFile = trace
        c.traceEventsFile = try value(traceEvents, RunSettings.traceEvents)
        c.history = try !switched(noHistory, RunSettings.noHistory)
        c.rerun = try !switched(noRerun, RunSettings.noRerun)
        c.swap = try !switched(noSwap, RunSettings.noSwap)
        c.boost = try !switched(noBoost, RunSettings.noBoost)
        c.daemon = !noDaemon
        c.daemonSocket = daemonSocket
        if let priority {
            guard let w = Int(priority), BuildReport.weights.contains(w) else {
                throw CommandLineError.conflict("--priority takes a weight from \(BuildReport.weights.lowerBound) to \(BuildReport.weights.upperBound), e.g. --priority 20 (default \(BuildReport.defaultWeight))")
            }
            c.priority = w
        }
        c.gate = try !switched(noGate, RunSettings.noGate)
        return c
    }

    private func gatherFacts(command: [String], executable: String, env: [String: String]) -> RunPlan.ToolFacts {
        let kind = ClientKind.detect(argv: command)
        func makeVersion(_ path: String) -> MakeVersion? {
            ProcessLauncher.captureOutput(executable: path, arguments: [path, "--version"],
                                          environment: ["PATH=\(env["PATH"] ?? "/usr/bin:/bin")", "LC_ALL=C"])
                .flatMap { MakeVersion(versionOutput: $0) }
        }
        var facts = RunPlan.ToolFacts(cpus: onlineCPUs())
        if kind.needsMakeVersion { facts.commandMakeVersion = makeVersion(executable) }
        switch kind {
        case .cmakeBuild, .other:
            if case .success(let make) = ProcessLauncher.resolve("make", path: env["PATH"]) {
                facts.pathMakeVersion = makeVersion(make)
            }
            if let dir = RunPlan.cmakeBuildDirectory(command) {
                facts.cmakeUsesNinja = access("\(dir)/build.ninja", F_OK) == 0
            }
        default:
            break
        }
        return facts
    }
}

/// The help of a setting of the table that takes a value.
func help<V>(_ setting: RunSetting<V>) -> ArgumentHelp {
    ArgumentHelp(setting.help, valueName: setting.parser.valueName)
}

func formatSeconds(_ s: Double) -> String {
    if s < 60 { return String(Int((s * 10).rounded()) / 10) + "." + String(Int((s * 10).rounded()) % 10) + " s" }
    let total = Int(s.rounded())
    return "\(total / 60) min \(total % 60) s"
}

func signalName(_ sig: Int32) -> String {
    switch sig {
    case SIGINT: return "SIGINT"
    case SIGTERM: return "SIGTERM"
    case SIGHUP: return "SIGHUP"
    case SIGKILL: return "SIGKILL"
    case SIGQUIT: return "SIGQUIT"
    case SIGSEGV: return "SIGSEGV"
    case SIGABRT: return "SIGABRT"
    default: return "signal \(sig)"
    }
}

func physicalMemory() -> UInt64 {
    UInt64(max(0, sysconf(Int32(_SC_PHYS_PAGES)))) * UInt64(max(0, sysconf(Int32(_SC_PAGESIZE))))
}

func onlineCPUs() -> Int {
    max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
}

func currentEnvironment() -> [String: String] {
    var env: [String: String] = [:]
    var p = environ
    while let entry = p.pointee {
        let s = String(cString: entry)
        if let eq = s.firstIndex(of: "=") {
            env[String(s[..<eq])] = String(s[s.index(after: eq)...])
        }
        p += 1
    }
    return env
}

/// One line on stderr for a mistake or failure.
func fail(_ message: String) {
    writeStandardError("jobgov: error: \(message)\n")
}

/// Says what went wrong and gives the exit status: 2 for a command line to fix, 1 for anything else.
func failureStatus(_ error: any Error) -> Int32 {
    if let error = error as? CommandLineError {
        fail(error.description)
        return 2
    }
    fail(String(describing: error))
    return 1
}
