#if canImport(Glibc)
import Glibc
#endif
import GovernorRuntime
import JobgovCore
import Jobserver
import LinuxSystem
import SystemPackage

/// Runs one build as its jobserver: owns the token pool and the control socket, starts the build, forwards
/// signals, re-creates tokens lost with dead clients, and cleans everything up however the build ends.
///
/// Single-threaded: one event loop (`SupervisorLoop.swift`) whose named sources are the signalfd, the control
/// socket, the FIFO's read end while the target is being lowered, the PSI trigger, the governor's tick, the
/// lost-token check and the delayed attachment of the eBPF observers.
final class BuildSupervisor {
    struct Options {
        var plan: RunPlan
        var executable: String
        var environment: [String: String]
        var quiet: Bool
        /// Put the build in a cgroup of its own: automatically when possible, never, or below a given parent.
        var cgroup: CgroupChoice = .automatic
        /// The memory budget; sets the cgroup's limits (memory.high at the budget on v2, the hard limit a reserve
        /// above it).
        var memoryBudget: UInt64?
        /// CPU bandwidth for the build per 100 ms period (cpu.max), in microseconds.
        var cpuQuotaMicroseconds: Int?
        /// How often the accounting tick runs while the build is going.
        var tickMilliseconds: Int32 = 100
        /// How often the process tree is walked to look for lost tokens.
        var lostTokenCheckSeconds: Double = 0.5
        /// The governor's thresholds and outputs; nil keeps the job count fixed (`--fixed-jobs`).
        var governor: GovernorChoices? = GovernorChoices()
    }

    /// What the user chose for the governor (the budget and ceiling come from elsewhere).
    struct GovernorChoices {
        var memoryThreshold = RunSettings.memoryThreshold.defaultValue
        var freezeThreshold = RunSettings.freezeThreshold.defaultValue
        var cpuThreshold = RunSettings.cpuThreshold.defaultValue
        var ioLatency = RunSettings.ioLatency.defaultValue
        var traceFile: String?
        /// The build's timeline as Chrome trace-event JSON (`--trace-events`), written when the build ends.
        var traceEventsFile: String?
        var history = true
        /// Give make jobgov-shell as its SHELL so that a recipe the OOM killer ended runs again.
        var rerun = true
        /// Page frozen jobs out: to existing swap, or (as root, without swap) to a zram device made for the build.
        var swap = true
        /// Raise the CPU's performance (cpufreq) while the build is CPU-bound.
        var boost = true
        /// Join a listening `jobgov daemon` (at `daemonSocket`, else where it listens by default) with this weight.
        var daemon = true
        var daemonSocket: String?
        var priority = BuildReport.defaultWeight
        /// Hold the jobs of a tool that takes no jobserver tokens at their start (the eBPF exec gate).
        var gate = true
    }

    enum CgroupChoice: Equatable {
        case automatic
        case off
        case below(String)
    }

    struct Outcome {
        var exit: ExitStatus
        var elapsed: Double
        var ledger: TokenLedger
        var tokensInPoolAtEnd: Int
        var statistics: RunStatistics?
        var budget: MemoryBudget?
    }

    let options: Options
    var ledger: TokenLedger
    var detector = LostTokenDetector()
    let tree = ProcessTree()
    let startTime = monotonicSeconds()
    var launchedPID: Int32 = 0
    var realtime = false
    /// A signal being passed on to the build: which, until when, and to whom it went already.
    var forwarding: (signal: Int32, until: Double, sent: Set<Int32>)?

    var cgroup: BuildCgroup?
    var budget: MemoryBudget?
    /// The loop while the build runs, its signal channel, the control socket and the replies to `ctl freeze`/`thaw`
    /// that wait for the cgroup's state.
    var loop: EventLoop?
    var signals: SignalChannel?
    var control: ControlServer?
    var freezeReplies: [(connection: Int32, frozen: Bool, deadline: Double)] = []
    /// The kernel's trigger on the build's memory pressure, once made.
    var trigger: PressureTrigger?
    /// PSI trigger events on the build's memory pressure (woken through poll, not by the tick).
    var pressureEvents = 0
    var watchdog: WatchdogHandle?
    var governing: BuildGovernor?
    var kernel: KernelBuild?
    var historyPath: String?
    var traceFile: FileDescriptor?
    /// `--trace-events`: opened at the start (so that a path that cannot be written fails at once), written at the end.
    var traceEventsFile: FileDescriptor?
    /// The zram device made for the build's frozen jobs, and the sysctl tuned while it exists.
    var compressedSwap: CompressedSwap?
    var swappiness: SwappinessTuning?
    var swapNote = ""
    /// The CPU boost while the build is CPU-bound, and what the start line says of it.
    var boost: BuildBoost?
    var boostNote = ""
    /// The machine-wide daemon this build shares a budget with, when one listens.
    var daemon: DaemonLink?

    /// A file created or emptied for writing (mode 0644), nil when it cannot be.
    static func createForWriting(_ path: String) -> FileDescriptor? {
        try? FileDescriptor.open(path, .writeOnly, options: [.create, .truncate, .closeOnExec],
                                 permissions: [.ownerReadWrite, .groupRead, .otherRead])
    }

    /// This executable, for starting the watchdog.
    static func ownExecutable() -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return CommandLine.arguments[0] }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
    let debugAccounting = getenv("JOBGOV_DEBUG_TOKENS") != nil

    init(options: Options) {
        self.options = options
        self.ledger = TokenLedger(jobs: options.plan.ceiling)
    }

    /// Runs the build from start to end, in phases: the pool and the control socket; the cgroup and its limits;
    /// the governor; the build itself and the watchdog; the event loop until the build ends; the clean-up, which
    /// runs however `run` ends.
    func run() throws -> Outcome {
        let env = options.environment
        RuntimeDirectory.removeStale(environment: env)
        let directory = try RuntimeDirectory(environment: env)
        defer { directory.remove() }
        let pool = try TokenPool(fifoPath: directory.file("fifo"))
        defer { pool.close() }
        let control = try ControlServer(path: directory.file("control"))
        defer { control.close() }

        let layout = CgroupLayout.detect()
        let cgroupNote = try setUpCgroup(layout: layout)
        defer { tearDownCgroup() }
        defer { trigger?.close() }

        let auth: String
        switch options.plan.style {
        case .fifo:
            auth = "fifo:\(pool.fifoPath)"
        case .pipe:
            let ends = try pool.openClientPipeEnds()
            auth = "\(ends.read.rawValue),\(ends.write.rawValue)"
        }
        try setUpGovernor()
        let daemonNote = setUpDaemon(controlPath: control.path)
        defer { daemon?.leave() }
        refill(pool)
        // The timeline is written however run() ends: normally below, with the build's exit status; here if it throws.
        defer { writeTraceEvents(exit: nil) }

        let gate = startGate()
        let child = try startBuild(directory: directory, pool: pool, control: control, auth: auth)
        kernel?.gateToolStarted(child)
        // The signal channel goes (and with it the blocked signals' mask) before the clean-up above, as it did when
        // it was a local of this function.
        defer { signals = nil }
        try startWatchdog(directory: directory)
        if !options.quiet {
            let what = options.plan.argv.first.map { $0.split(separator: "/").last.map(String.init) ?? $0 } ?? "build"
            note("\(what) runs with \(options.plan.ceiling) jobs (\(options.plan.style.rawValue) jobserver) \(cgroupNote); "
                 + "change it live with `jobgov ctl jobs N`" + (daemonNote.map { "; \($0)" } ?? ""))
            note(privilegeTier(cgroup: cgroup, governed: governing != nil))
            if !swapNote.isEmpty { note(swapNote) }
            if !boostNote.isEmpty { note(boostNote) }
            if let gate { note(gate) }
        }

        let exit = try runLoop(child: child, pool: pool, control: control, auth: auth)
        if realtime { setRealtimePriority(false) }
        finishGoverning()
        writeTraceEvents(exit: exit)
        let atEnd = pool.tokensInPool()
        return Outcome(exit: exit, elapsed: monotonicSeconds() - startTime, ledger: ledger, tokensInPoolAtEnd: atEnd,
                       statistics: governing?.stats, budget: budget)
    }

    /// The build's cgroup and its limits, when it can have one; returns what the start line says about it.
    private func setUpCgroup(layout detected: CgroupLayout) throws -> String {
        var cgroupNote = ""
        var layout = detected
        if options.cgroup != .off {
            let parent: String? = if case .below(let p) = options.cgroup { p } else { nil }
            do {
                BuildCgroup.removeStale(layout: layout)
                cgroup = try BuildCgroup.create(layout: layout, name: "jobgov-\(getpid())", parent: parent,
                                                controllers: options.cpuQuotaMicroseconds == nil ? ["memory"] : ["memory", "cpu"])
            } catch {
                if parent != nil { throw error }
                cgroupNote = "no cgroup (\(error.description))"
                if let (granted, socket) = cgroupFromDaemon() {
                    // jobgov now runs in the daemon's cgroup: its limits are what this build's budget comes from.
                    layout = CgroupLayout.detect()
                    do {
                        cgroup = try BuildCgroup.create(layout: layout, name: "jobgov-\(getpid())", granted: granted)
                        cgroupNote = "from jobgov daemon at \(socket)"
                    } catch {
                        cgroupNote += "; the cgroup from jobgov daemon at \(socket) could not be used (\(error.description))"
                    }
                }
            }
        }
        budget = options.memoryBudget.map { MemoryBudget(bytes: $0, source: "--memory-budget") }
            ?? MemoryBudget.derive(totalMemory: physicalMemory(), cgroupLimit: layout.effectiveMemoryLimit())
        guard let cgroup else {
            if options.memoryBudget != nil || options.cpuQuotaMicroseconds != nil {
                let flag = options.memoryBudget != nil ? "--memory-budget" : "--cpu-max"
                throw CgroupError("\(flag) needs a cgroup for the build: \(cgroupNote)")
            }
            return cgroupNote
        }
        // The hard limit sits a reserve above the budget. With the governor, the kernel's OOM killer is held off (v1)
        // while jobgov acts; on v2 memory.high (moved by the governor) throttles the build below memory.max.
        if let budget = options.governor != nil ? budget?.bytes : options.memoryBudget {
            let hard = budget + MemorySize.reserve(forBudget: budget)
            var limits = CgroupLimits(memoryMax: hard)
            if cgroup.backend == .unified { limits.memoryHigh = budget }
            if cgroup.backend != .unified && options.governor != nil { limits.oomKillDisabled = true }
            try cgroup.apply(limits)
        }
        if let quota = options.cpuQuotaMicroseconds {
            try cgroup.apply(CgroupLimits(cpuQuotaMicroseconds: quota))
        }
        cgroupNote = "in cgroup \(cgroup.topDirectories.first ?? "?") (\(cgroup.backend.rawValue))"
            + (cgroupNote.hasPrefix("from jobgov daemon") ? " " + cgroupNote : "")
        if let budget, options.memoryBudget != nil || options.governor != nil {
            cgroupNote += ", memory budget \(MemorySize.format(budget.bytes))"
            if options.memoryBudget == nil { cgroupNote += " (\(budget.source))" }
        }
        return cgroupNote
    }

    /// A cgroup from a `jobgov daemon --cgroups` for a build that cannot make one (governed builds that may join a
    /// daemon, without a CPU limit, which a grant does not carry): the daemon moves this process into a subtree it
    /// hands over. Returns the parents to make the build's cgroup below and the daemon's socket; nil when no daemon
    /// makes cgroups.
    private func cgroupFromDaemon() -> (CgroupDirectories, String)? {
        guard let choices = options.governor, choices.daemon, options.cpuQuotaMicroseconds == nil else { return nil }
        for socket in DaemonSocketPath.candidates(explicit: choices.daemonSocket, environment: options.environment) {
            guard let reply = try? ControlClient.sendLine(DaemonRequest.cgroup.line, to: socket,
                                                          timeoutMilliseconds: Int32(DaemonTiming.replySeconds * 1000),
                                                          unreachableHint: ""), !reply.isEmpty else { continue }
            guard let grant = try? CgroupGrant.parse(reply) else { continue }
            return (CgroupDirectories(unified: grant.unified, memory: grant.memory, freezer: grant.freezer), socket)
        }
        return nil
    }

    /// Thaws and removes the build's cgroup; processes that outlived the build are freed of jobgov's limits, and the
    /// watchdog removes the cgroup once they are gone.
    private func tearDownCgroup() {
        if let cgroup {
            if cgroup.isFrozen { try? cgroup.thaw() }
            if !cgroup.remove() {
                BuildCgroup.liftLimits(cgroup.directories)
                watchdog?.finish(.removeWhenEmpty)
            }
        }
        watchdog?.finish(.done)
    }

    /// The governor, its files and the swap for frozen jobs, unless the job count is fixed.
    private func setUpGovernor() throws {
        guard let choices = options.governor, let budget else { return }
        // The files first: a path that cannot be written stops jobgov before a swap device is made for nothing.
        if let path = choices.traceFile {
            guard let fd = Self.createForWriting(path) else { throw SystemError("cannot write the trace file \(path)") }
            traceFile = fd
        }
        if let path = choices.traceEventsFile {
            guard let fd = Self.createForWriting(path) else {
                throw SystemError("cannot write the trace-events file \(path)")
            }
            traceEventsFile = fd
        }
        var settings = GovernorSettings(maxJobs: options.plan.ceiling, budget: budget.bytes, cpus: onlineCPUs())
        settings.memoryThreshold = choices.memoryThreshold.share
        settings.freezeThreshold = choices.freezeThreshold.share
        settings.cpuThreshold = choices.cpuThreshold.share
        settings.ioLatencyThreshold = choices.ioLatency.seconds
        settings.priorJobPeakBytes = MemoryModel.defaultPrior(budget: budget.bytes, cpus: onlineCPUs())
        // make runs its recipes through jobgov-shell, which runs a recipe again when asked: a job can be ended
        // early while small instead of waiting at the hard limit.
        let isMake: Bool = if case .gnuMake = options.plan.kind { true } else { false }
        settings.canEvict = choices.rerun && isMake && cgroup != nil
        settings.canPageOut = cgroup != nil && setUpSwap(choices: choices, budget: budget.bytes)
        if settings.canPageOut, let cgroup, cgroup.directories.memory != nil {
            // Only jobgov pages out, and only frozen jobs: a job still running at the build's limit is not
            // swapped (its compressed pages would be charged to no cgroup, and the build would outgrow its
            // limit unseen). v1 keeps a swappiness per cgroup; page-out ignores it.
            try? cgroup.apply(CgroupLimits(swappiness: 0))
        }
        settings.slowStart = !settings.canPageOut && !settings.canEvict
        settings.remoteSlots = distccRemoteSlots(env: options.environment)
        historyPath = choices.history ? historyFile(env: options.environment) : nil
        let history = historyPath.flatMap { readSmallFile($0, limit: 8 << 20) }
            .map(MemoryHistoryFormat.decodeAll) ?? MemoryHistoryFormat.Contents()
        let quiet = options.quiet
        let kernel = KernelBuild(cgroup: cgroup, cpus: onlineCPUs(), swap: compressedSwap) { if !quiet { note($0) } }
        let governor = BuildGovernor(options: .init(settings: settings, history: history), sensor: kernel,
                                    actuator: kernel) { if !quiet { note($0) } }
        if let fd = traceFile {
            governor.trace = { writeAll(fd.rawValue, $0) }
        }
        if traceEventsFile != nil {
            governor.timeline = BuildTimeline(
                title: "jobgov -j\(options.plan.ceiling) " + options.plan.argv.joined(separator: " "), pid: getpid())
        }
        (boost, boostNote) = BuildBoost.make(enabled: choices.boost, hasCgroup: cgroup != nil,
                                             root: SysfsTuning.root(environment: options.environment),
                                             cpus: onlineCPUs()) { if !quiet { note($0) } }
        kernel.readsCPUSignals = boost != nil
        self.kernel = kernel
        governing = governor
        ledger.setJobs(governor.initialTarget)
    }

    /// Starts the build (in its cgroup, with make's SHELL set to jobgov-shell where a recipe can run again) with
    /// the signals jobgov passes on left at their defaults for it.
    private func startBuild(directory: RuntimeDirectory, pool: TokenPool, control: ControlServer,
                            auth: String) throws -> pid_t {
        // Signals the caller set to be ignored (a shell does so for SIGINT and SIGQUIT of a background job) stay
        // ignored, for jobgov and for the build, exactly as for the plain command.
        let handled: [Int32] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGUSR1, SIGUSR2]
        let ignored = ProcessLauncher.inheritedIgnoredSignals(handled)
        signal(SIGPIPE, SIG_IGN)
        let forwarded = [SIGINT, SIGTERM, SIGHUP, SIGQUIT].filter { !ignored.contains($0) }
        signals = try SignalChannel(signals: [SIGCHLD] + forwarded)
        try becomeChildSubreaper()

        var buildEnv = options.plan.environment(base: options.environment, auth: auth, controlPath: control.path,
                                                fifoPath: pool.fifoPath)
        var argv = options.plan.argv
        if governing != nil, options.governor?.rerun == true, case .gnuMake = options.plan.kind,
           let shell = RerunShell.write(into: directory.path) {
            // make takes a command-line SHELL over the makefile's; the makefile's own (or the user's) is what
            // jobgov-shell then runs.
            let plan = RerunShellPlan.install(shell, argv: argv, makefileShell: RerunShell.makefileShell(argv: argv))
            argv = plan.argv
            buildEnv["JOBGOV_SHELL"] = plan.shell
        }
        let envList = buildEnv.map { "\($0.key)=\($0.value)" }.sorted()
        let defaults = [SIGCHLD] + handled.filter { !ignored.contains($0) }
        let child: pid_t
        if let cgroup {
            child = try ProcessLauncher.spawn(executable: options.executable, arguments: argv,
                                              environment: envList, intoCgroups: cgroup.leafProcsFiles,
                                              defaultSignals: defaults)
        } else {
            child = try ProcessLauncher.spawn(executable: options.executable, arguments: argv,
                                              environment: envList, defaultSignals: defaults)
        }
        pool.closeClientPipeEndsInParent()
        launchedPID = child
        governing?.launchedPID = child
        return child
    }

    /// The watchdog that undoes freezing, limits and tuning if jobgov dies. Started after the build so that it does
    /// not delay it; nothing is frozen or limited by jobgov before the loop runs.
    private func startWatchdog(directory: RuntimeDirectory) throws {
        guard let cgroup else { return }
        var plan = WatchdogPlan(runtimeDirectory: directory.path, cgroup: cgroup.directories,
                                removeWhenEmpty: cgroup.remainingDirectories)
        plan.sysctls = (kernel?.tuning?.originals ?? []) + (swappiness?.originals ?? [])
        plan.zramIndex = compressedSwap?.index
        plan.zramLabel = compressedSwap?.label
        plan.sysfs = boost?.boost.originals ?? []
        plan.sysfsRoot = boost?.boost.root
        watchdog = try WatchdogHandle(executable: Self.ownExecutable(), plan: plan)
    }

}
