#if canImport(Glibc)
import Glibc
#endif
import GovernorRuntime
import JobgovCore
import Jobserver
import LinuxSystem

/// Runs one build as its jobserver: owns the token pool and the control socket, starts the build, forwards
/// signals, re-creates tokens lost with dead clients, and cleans everything up however the build ends.
///
/// Single-threaded: one poll loop over a signalfd, the control socket and (while the target is being lowered) the
/// FIFO's read end, with a short tick for token accounting. Nothing here sits between a client and its tokens,
/// so it adds no latency to token hand-out.
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
        var memoryThreshold = 0.85
        var freezeThreshold = 0.95
        var cpuThreshold = 0.90
        var ioLatencySeconds = 0.100
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

    private let options: Options
    private var ledger: TokenLedger
    private var detector = LostTokenDetector()
    private let tree = ProcessTree()
    private let startTime = monotonicSeconds()
    private var launchedPID: Int32 = 0
    private var realtime = false
    /// A signal being passed on to the build: which, until when, and to whom it went already.
    private var forwarding: (signal: Int32, until: Double, sent: Set<Int32>)?

    private func forwardPending(child: pid_t) {
        guard var f = forwarding else { return }
        if !f.sent.contains(child) {
            kill(child, f.signal)
            f.sent.insert(child)
        }
        for pid in tree.descendants(of: getpid()) where !f.sent.contains(pid) && pid != watchdog?.pid {
            kill(pid, f.signal)
            f.sent.insert(pid)
        }
        forwarding = f
    }
    private var cgroup: BuildCgroup?
    private var budget: MemoryBudget?
    /// PSI trigger events on the build's memory pressure (woken through poll, not by the tick).
    private var pressureEvents = 0
    private var watchdog: WatchdogHandle?
    private var governing: GovernorLoop?
    private var kernel: KernelBuild?
    private var historyPath: String?
    private var traceFD: Int32 = -1
    /// `--trace-events`: opened at the start (so that a path that cannot be written fails at once), written at the end.
    private var traceEventsFD: Int32 = -1
    /// The zram device made for the build's frozen jobs, and the sysctl tuned while it exists.
    private var compressedSwap: CompressedSwap?
    private var swappiness: SwappinessTuning?
    private var swapNote = ""
    private var boost: BuildBoost?
    private var boostNote = ""

    /// This executable, for starting the watchdog.
    static func ownExecutable() -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return CommandLine.arguments[0] }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
    private let debugAccounting = getenv("JOBGOV_DEBUG_TOKENS") != nil

    init(options: Options) {
        self.options = options
        self.ledger = TokenLedger(jobs: options.plan.ceiling)
    }

    func run() throws -> Outcome {
        let env = options.environment
        RuntimeDirectory.removeStale(environment: env)
        let directory = try RuntimeDirectory(environment: env)
        defer { directory.remove() }
        let pool = try TokenPool(fifoPath: directory.file("fifo"))
        defer { pool.close() }
        let control = try ControlServer(path: directory.file("control"))
        defer { control.close() }

        // The build's cgroup, and a watchdog that undoes freezing and limits if jobgov dies.
        var cgroup: BuildCgroup?
        var cgroupNote = ""
        let layout = CgroupLayout.detect()
        if options.cgroup != .off {
            let parent: String? = if case .below(let p) = options.cgroup { p } else { nil }
            do {
                BuildCgroup.removeStale(layout: layout)
                cgroup = try BuildCgroup.create(layout: layout, name: "jobgov-\(getpid())", parent: parent,
                                                controllers: options.cpuQuotaMicroseconds == nil ? ["memory"] : ["memory", "cpu"])
            } catch {
                if parent != nil { throw error }
                cgroupNote = "no cgroup (\(error.description))"
            }
        }
        defer {
            if let cgroup {
                if cgroup.isFrozen { try? cgroup.thaw() }
                if !cgroup.remove() {
                    // Processes of the build outlived it: free them of jobgov's limits; the watchdog removes the
                    // cgroups once they are gone.
                    BuildCgroup.liftLimits(cgroup.directories)
                    watchdog?.finish(.removeWhenEmpty)
                }
            }
            watchdog?.finish(.done)
        }
        budget = options.memoryBudget.map { MemoryBudget(bytes: $0, source: "--memory-budget") }
            ?? MemoryBudget.derive(totalMemory: physicalMemory(), cgroupLimit: layout.effectiveMemoryLimit())
        if let cgroup {
            // The hard limit sits a reserve above the budget. With the governor, the kernel's OOM killer is held
            // off (v1) while jobgov acts; on v2 memory.high (moved by the governor) is the brake below memory.max.
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
            if let budget, options.memoryBudget != nil || options.governor != nil {
                cgroupNote += ", memory budget \(MemorySize.format(budget.bytes))"
                if options.memoryBudget == nil { cgroupNote += " (\(budget.source))" }
            }
        } else if options.memoryBudget != nil || options.cpuQuotaMicroseconds != nil {
            let flag = options.memoryBudget != nil ? "--memory-budget" : "--cpu-max"
            throw CgroupError("\(flag) needs a cgroup for the build: \(cgroupNote)")
        }
        self.cgroup = cgroup
        // The kernel's PSI trigger wakes the loop when the build stalls on memory for 100 ms within a window,
        // instead of the next tick noticing. Windows must be multiples of 2 s without CAP_SYS_RESOURCE. It is made
        // once the build has run a second: the kernel starts a thread for it and waits for an RCU grace period
        // when it goes (measured: about 30 ms together), which a short build should not pay.
        var trigger: PressureTrigger?
        var triggerAttempted = cgroup?.directories.unified == nil
        defer { trigger?.close() }

        let auth: String
        switch options.plan.style {
        case .fifo:
            auth = "fifo:\(pool.fifoPath)"
        case .pipe:
            let ends = try pool.openClientPipeEnds()
            auth = "\(ends.read.rawValue),\(ends.write.rawValue)"
        }
        if let choices = options.governor, let budget {
            // The files first: a path that cannot be written stops jobgov before a swap device is made for nothing.
            if let path = choices.traceFile {
                traceFD = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
                if traceFD < 0 { throw SystemError("cannot write the trace file \(path)") }
            }
            if let path = choices.traceEventsFile {
                traceEventsFD = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
                if traceEventsFD < 0 { throw SystemError("cannot write the trace-events file \(path)") }
            }
            var settings = GovernorSettings(maxJobs: options.plan.ceiling, budget: budget.bytes, cpus: onlineCPUs())
            settings.memoryThreshold = choices.memoryThreshold
            settings.freezeThreshold = choices.freezeThreshold
            settings.cpuThreshold = choices.cpuThreshold
            settings.ioLatencyThreshold = choices.ioLatencySeconds
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
            historyPath = choices.history ? historyFile(env: env) : nil
            let history = historyPath.flatMap { readSmallFile($0, limit: 8 << 20) }
                .map(MemoryHistoryFormat.decodeAll) ?? MemoryHistoryFormat.Contents()
            let quiet = options.quiet
            let kernel = KernelBuild(cgroup: cgroup, cpus: onlineCPUs(), swap: compressedSwap) { if !quiet { note($0) } }
            let loop = GovernorLoop(options: .init(settings: settings, history: history), sensor: kernel,
                                    actuator: kernel) { if !quiet { note($0) } }
            if traceFD >= 0 {
                let fd = traceFD
                loop.trace = { writeAll(fd, $0) }
            }
            if traceEventsFD >= 0 {
                loop.timeline = BuildTimeline(
                    title: "jobgov -j\(options.plan.ceiling) " + options.plan.argv.joined(separator: " "), pid: getpid())
            }
            (boost, boostNote) = BuildBoost.make(enabled: choices.boost, hasCgroup: cgroup != nil,
                                                 root: SysfsTuning.root(environment: env), cpus: onlineCPUs()) { if !quiet { note($0) } }
            kernel.readsCPUSignals = boost != nil
            self.kernel = kernel
            governing = loop
            ledger.setJobs(loop.initialTarget)
        }
        refill(pool)
        // The timeline is written however run() ends: normally below, with the build's exit status; here if it throws.
        defer { writeTraceEvents(exit: nil) }

        // Signals the caller set to be ignored (a shell does so for SIGINT and SIGQUIT of a background job) stay
        // ignored, for jobgov and for the build, exactly as for the plain command.
        let handled: [Int32] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGUSR1, SIGUSR2]
        let ignored = ProcessLauncher.inheritedIgnoredSignals(handled)
        signal(SIGPIPE, SIG_IGN)
        let forwarded = [SIGINT, SIGTERM, SIGHUP, SIGQUIT].filter { !ignored.contains($0) }
        let signals = try SignalChannel(signals: [SIGCHLD] + forwarded)
        try becomeChildSubreaper()

        var buildEnv = options.plan.environment(base: env, auth: auth, controlPath: control.path, fifoPath: pool.fifoPath)
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
        if let cgroup {
            // Started after the build so that it does not delay it; nothing is frozen or limited by jobgov
            // before the loop below runs.
            var plan = WatchdogPlan(runtimeDirectory: directory.path, cgroup: cgroup.directories,
                                    removeWhenEmpty: cgroup.remainingDirectories)
            plan.sysctls = (kernel?.tuning?.originals ?? []) + (swappiness?.originals ?? [])
            plan.zramIndex = compressedSwap?.index
            plan.zramLabel = compressedSwap?.label
            plan.sysfs = boost?.boost.originals ?? []
            plan.sysfsRoot = boost?.boost.root
            watchdog = try WatchdogHandle(executable: Self.ownExecutable(), plan: plan)
        }

        if !options.quiet {
            let what = options.plan.argv.first.map { $0.split(separator: "/").last.map(String.init) ?? $0 } ?? "build"
            note("\(what) runs with \(options.plan.ceiling) jobs (\(options.plan.style.rawValue) jobserver) \(cgroupNote); "
                 + "change it live with `jobgov ctl jobs N`")
            note(privilegeTier(cgroup: cgroup, governed: governing != nil))
            if !swapNote.isEmpty { note(swapNote) }
            if !boostNote.isEmpty { note(boostNote) }
        }

        var exit: ExitStatus?
        var lastCheck = monotonicSeconds()
        var lastGovern = 0.0
        while exit == nil {
            var fds: [pollfd] = [pollfd(fd: signals.fd.rawValue, events: Int16(POLLIN), revents: 0)]
            fds += control.pollDescriptors.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            let absorbing = ledger.created > ledger.target
            if absorbing { fds.append(pollfd(fd: pool.reader.rawValue, events: Int16(POLLIN), revents: 0)) }
            if let trigger { fds.append(pollfd(fd: trigger.fd.rawValue, events: Int16(POLLPRI), revents: 0)) }
            if absorbing != realtime { realtime = absorbing && setRealtimePriority(absorbing) }
            let ready = retryingInterrupts { poll(&fds, nfds_t(fds.count), options.tickMilliseconds) }
            if ready < 0 { throw SystemError("poll failed") }

            for p in fds where p.revents != 0 {
                if p.fd == signals.fd.rawValue {
                    for delivery in signals.drain() {
                        if delivery.signal == SIGCHLD {
                            for (pid, status) in reapExitedChildren() where pid == child {
                                if let ended = ExitStatus(waitStatus: status) { exit = ended }
                            }
                        } else if !delivery.fromKernel {
                            // A terminal's Ctrl-C reaches the whole foreground group, the build included. A signal
                            // sent to jobgov alone (kill, a CI runner's timeout) is passed on the same way: to every
                            // process of the build, since make, on SIGINT, waits for jobs it expects got it too.
                            forwarding = (delivery.signal, monotonicSeconds() + 2, [])
                            forwardPending(child: child)
                        }
                    }
                } else if let t = trigger, p.fd == t.fd.rawValue {
                    if p.revents & Int16(POLLERR) != 0 {
                        t.close()
                        trigger = nil
                    } else {
                        pressureEvents += 1
                    }
                } else if p.fd == pool.reader.rawValue {
                    // Take returned tokens first and account afterwards: clients re-read within microseconds.
                    let excess = ledger.created - ledger.target
                    if excess > 0 { ledger.didAbsorbExcess(pool.take(upTo: excess)) }
                } else {
                    control.handleReadable(p.fd) { request in respond(to: request, pool: pool, auth: auth) }
                }
            }
            let inPool = refill(pool)
            let now = monotonicSeconds()

            // Processes forked while a signal was being passed on would miss it; for two seconds, each tick
            // passes it to any process of the build that has not had it yet.
            if let f = forwarding, now < f.until { forwardPending(child: child) } else { forwarding = nil }
            if !triggerAttempted, now - startTime > 1, let dir = cgroup?.directories.unified {
                triggerAttempted = true
                kernel?.attachProbes(unifiedDir: dir)
                let window = PressureTrigger.allowsShortWindows ? 1_000_000 : 2_000_000
                trigger = try? PressureTrigger(path: dir + "/memory.pressure", kind: .some, stallMicroseconds: 100_000,
                                               windowMicroseconds: window)
            }

            // Every tick (100 ms) while memory matters; every fifth while the governor says all is calm.
            let tick = Double(options.tickMilliseconds) / 1000
            let interval = governing?.lastDecision?.calm == true ? 5 * tick : tick
            if let governing, now - lastGovern >= interval * 0.9 {
                lastGovern = now
                let target = governing.tick(now: now - startTime)
                if debugAccounting { note("debug: tick \(Int((monotonicSeconds() - now) * 1e6)) us") }
                if let boost, var signals = kernel?.cpuSignals {
                    signals.runningJobs = governing.table.running.filter { !$0.frozen }.count
                    boost.observe(signals, now: now)
                }
                if target != ledger.targetJobs {
                    ledger.setJobs(target)
                    refill(pool)
                }
            }

            let outstanding = ledger.outstanding(inPool: inPool)
            ledger.noteOutstanding(outstanding)
            governing?.tokensOut = outstanding
            if now - lastCheck >= options.lostTokenCheckSeconds {
                lastCheck = now
                recoverLostTokens(pool: pool, outstanding: outstanding)
            }
        }
        if realtime { setRealtimePriority(false) }
        finishGoverning()
        writeTraceEvents(exit: exit)
        let atEnd = pool.tokensInPool()
        return Outcome(exit: exit!, elapsed: monotonicSeconds() - startTime, ledger: ledger, tokensInPoolAtEnd: atEnd,
                       statistics: governing?.stats, budget: budget)
    }

    /// Ends the governor's work: thaws and restores everything, keeps the history, closes the trace.
    private func finishGoverning() {
        guard let governing else { return }
        let history = governing.finish(now: monotonicSeconds() - startTime)
        if let stall = kernel?.closeProbes() { governing.reclaimStallSeconds = stall }
        if let path = historyPath {
            let text = MemoryHistoryFormat.encode(history.peaks, seconds: history.seconds, order: history.order,
                                                  shapes: history.shapes)
            let directory = String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)])
            makeDirectories(directory)
            let tmp = path + ".tmp.\(getpid())"
            let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            if fd >= 0 {
                writeAll(fd, text)
                close(fd)
                rename(tmp, path)
            }
        }
        if traceFD >= 0 { close(traceFD) }
        traceFD = -1
        tearDownSwap()
        boost?.finish()
    }

    /// Writes the build's timeline once, at its end (`--trace-events`), and closes the file.
    private func writeTraceEvents(exit: ExitStatus?) {
        guard traceEventsFD >= 0, let timeline = governing?.timeline else { return }
        var other = [("command", options.plan.argv.joined(separator: " "))]
        other.append(("exit_status", exit.map { "\($0.shellStatus)" } ?? "unknown: jobgov stopped before the build ended"))
        writeAll(traceEventsFD, timeline.traceEventsJSON(end: monotonicSeconds() - startTime, otherData: other))
        close(traceEventsFD)
        traceEventsFD = -1
    }

    /// Decides where frozen jobs' memory can go, and says so once: existing swap (or zswap) is used as it is; as root
    /// without swap a zram device is made for the build, sized to the budget, its compressed memory capped at a
    /// quarter of the budget (and counted against the budget by the governor), with vm.swappiness at 0 meanwhile
    /// so that the machine's other processes are not pushed into it (jobgov's page-out ignores swappiness).
    private func setUpSwap(choices: GovernorChoices, budget: UInt64) -> Bool {
        guard choices.swap else {
            swapNote = "swap: off (--no-swap): frozen jobs keep their memory"
            return false
        }
        let state = SwapState.read()
        // Swap with room for a good part of the budget is used as it is; a nearly full or small one (another
        // program's, another jobgov's zram that goes when it does) would page out part of a job and leave the rest.
        let room = state.devices.reduce(UInt64(0)) { $0 + ($1.sizeBytes - min($1.sizeBytes, $1.usedBytes)) }
        if state.zswapEnabled || (state.hasSwap && (room >= budget / 2 || geteuid() != 0)) {
            swapNote = "swap: frozen jobs are paged out to the swap this machine has (\(state.reasonToAddNothing ?? "swap"))"
            return state.hasSwap
        }
        guard geteuid() == 0 else {
            swapNote = "swap: none on this machine, and adding a compressed one needs root: frozen jobs keep their memory"
            return false
        }
        CompressedSwap.removeStale()
        do {
            let swap = try CompressedSwap.setUp(sizeBytes: budget, memoryLimitBytes: max(budget / 4, 64 << 20))
            compressedSwap = swap
            let tuning = SwappinessTuning()
            if tuning.apply() == nil { swappiness = tuning }
            swapNote = "swap: zram\(swap.index) (\(swap.algorithm), \(MemorySize.format(swap.sizeBytes))) for the build's frozen jobs, "
                + "removed at exit; vm.swappiness 0 meanwhile"
            return true
        } catch {
            swapNote = "swap: cannot add a compressed swap (\(error)): frozen jobs keep their memory"
            return false
        }
    }

    private func tearDownSwap() {
        if let swap = compressedSwap {
            do { try swap.remove() } catch { note("cannot remove zram\(swap.index): \(error); the watchdog retries") }
        }
        swappiness?.restore()
    }

    /// Writes or absorbs tokens until the pool matches the target (absorbing only what is there to take), and
    /// returns the pool's fill level afterwards (read once more only when something was done).
    @discardableResult
    private func refill(_ pool: TokenPool) -> Int {
        let inPool = pool.tokensInPool()
        switch ledger.action(inPool: inPool) {
        case .none:
            return inPool
        case .write(let n):
            ledger.didWrite(pool.add(n))
        case .absorb(let n):
            let taken = pool.take(upTo: min(n, inPool))
            if taken > 0 { ledger.didAbsorb(taken, inPoolBefore: inPool) }
        }
        return pool.tokensInPool()
    }

    private func recoverLostTokens(pool: TokenPool, outstanding: Int) {
        guard outstanding > 0 else {
            _ = detector.observe(outstanding: 0, bound: 0)
            return
        }
        // A client at the memory limit (or a frozen job's parent) can hold a token it has read but not yet forked
        // a job for, for as long as the pressure lasts: nothing is lost, so nothing is counted until it is over.
        // (A governed ninja build once had a token re-created while jobs were frozen; this is the likely cause.)
        if let decision = governing?.lastDecision, decision.rung >= .throttle {
            _ = detector.observe(outstanding: 0, bound: 0)
            return
        }
        let processes = tree.snapshot(below: getpid(), poolPath: pool.fifoPath)
        let bound = tokenHoldingBound(processes: processes, launchedPID: launchedPID)
        let lost = detector.observe(outstanding: outstanding, bound: bound)
        if debugAccounting {
            note("debug: outstanding \(outstanding) bound \(bound) lost \(lost) processes \(processes)")
        }
        guard lost > 0 else { return }
        let written = pool.add(lost)
        ledger.didRecreate(written)
        if !options.quiet {
            note("re-created \(written) token\(written == 1 ? "" : "s") lost with a client that died while holding them")
        }
    }

    private func respond(to request: Result<ControlRequest, ControlProtocolError>, pool: TokenPool, auth: String) -> String {
        switch request {
        case .failure(let error):
            return "error \(error.message)"
        case .success(.setJobs(let n)):
            let old = ledger.targetJobs
            if let governing {
                // The user's number becomes the ceiling; the governor decides at once how much of it memory allows.
                governing.setCeiling(n)
                ledger.setJobs(min(n, governing.tick(now: monotonicSeconds() - startTime)))
            } else {
                ledger.setJobs(n)
            }
            refill(pool)
            return "ok jobs=\(n) was=\(old)"
        case .success(.rerun(let pid, let status)):
            guard let governing else { return "no the governor is off" }
            return governing.rerunVerdict(shellPID: pid, status: status, now: monotonicSeconds() - startTime)
        case .success(.freeze), .success(.thaw), .success(.kill):
            guard let cgroup else { return "error the build has no cgroup; freezing needs one (run as root or in a delegated cgroup)" }
            do {
                switch request {
                case .success(.freeze): try cgroup.freeze()
                case .success(.thaw): try cgroup.thaw()
                default: try cgroup.kill()
                }
            } catch {
                return "error \(error.description)"
            }
            if case .success(.kill) = request { return "ok killed" }
            // cgroup v2 freezes asynchronously: report the state once the kernel says it is reached.
            let wantFrozen: Bool = if case .success(.freeze) = request { true } else { false }
            let deadline = monotonicSeconds() + 1
            while cgroup.isFrozen != wantFrozen && monotonicSeconds() < deadline { usleep(10_000) }
            if cgroup.isFrozen == wantFrozen { return wantFrozen ? "ok frozen" : "ok thawed" }
            return wantFrozen ? "ok freezing (not all tasks are frozen yet)" : "ok thawing"
        case .success(.status):
            let inPool = pool.tokensInPool()
            var status = PoolStatus(
                pid: getpid(), command: options.plan.argv.joined(separator: " "), style: options.plan.style.rawValue,
                auth: auth, jobs: ledger.targetJobs, ceiling: options.plan.ceiling, tokensCreated: ledger.created,
                tokensInPool: inPool, tokensOutstanding: ledger.outstanding(inPool: inPool),
                peakOutstanding: ledger.peakOutstanding, tokensRecreated: ledger.recreated,
                tokensAbsorbed: ledger.absorbed, elapsedSeconds: monotonicSeconds() - startTime
            )
            status.cgroup = cgroup?.topDirectories.first ?? ""
            status.cgroupV1Memory = cgroup?.directories.memory ?? ""
            status.memoryBudget = budget?.bytes ?? 0
            status.memoryBudgetSource = budget?.source ?? ""
            status.pressureEvents = pressureEvents
            status.frozen = cgroup?.isFrozen ?? false
            return status.json
        }
    }
}

/// Prints one line of jobgov's own on stderr, marked so it stands out from the build's output.
func note(_ message: String) {
    let line = "jobgov: \(message)\n"
    writeStandardError(line)
}

extension BuildSupervisor {
    /// Where this build's memory history is kept: $XDG_STATE_HOME/jobgov/history (else ~/.local/state), one file
    /// per directory and command.
    func historyFile(env: [String: String]) -> String? {
        let base: String
        if let state = env["XDG_STATE_HOME"], state.hasPrefix("/") {
            base = state
        } else if let home = env["HOME"], home.hasPrefix("/") {
            base = home + "/.local/state"
        } else {
            return nil
        }
        var cwd = [CChar](repeating: 0, count: 4096)
        guard getcwd(&cwd, cwd.count) != nil else { return nil }
        let directory = String(decoding: cwd.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let command = options.plan.argv.filter { !$0.hasPrefix("-j") }
        return base + "/jobgov/history/" + MemoryHistoryFormat.fileName(directory: directory, command: command)
    }

    /// The line that says at start what jobgov can do here.
    func privilegeTier(cgroup: BuildCgroup?, governed: Bool) -> String {
        guard governed else { return "fixed job count (--fixed-jobs): the governor is off" }
        guard let cgroup else {
            return "tier: jobserver only (no cgroup for the build): parallelism from memory, CPU and I/O; no freezing, no limits"
        }
        var can = ["parallelism from memory, CPU and I/O", "a memory limit"]
        can.append(!cgroup.directories.freezing.isEmpty ? "freezing single jobs" : "no freezing")
        can.append(cgroup.backend == .unified ? "memory.high as the brake" : "the OOM killer held off")
        return "tier: \(geteuid() == 0 ? "root" : "delegated cgroup") (\(cgroup.backend.rawValue) cgroups): " + can.joined(separator: ", ")
    }
}
