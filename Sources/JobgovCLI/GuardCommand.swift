#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import BPFProbes
import JobgovCore
import LinuxSystem

/// `jobgov guard`: finds the process that makes the machine unresponsive and, by policy, freezes or kills it.
struct GuardCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "guard",
        abstract: "Find the process that makes the machine unresponsive; report it, or freeze or kill it.",
        discussion: """
        Every --interval it reads system PSI and every process's memory, CPU time, run-queue wait (schedstat) \
        and state, and the memory PSI of their cgroups; as root it also measures each process's time in memory \
        reclaim with eBPF. When memory pressure passes --memory-pressure it finds the process that grows while \
        memory is short (the one stalling most in reclaim, else the one whose cgroup stalls most; by growth \
        between equals); when CPU pressure passes --cpu-pressure, the process using the most CPU while others \
        wait; and any task asleep uninterruptibly (state D) for --stuck-seconds without being woken. It prints \
        each with the numbers that point at it.

        --action report (the default) only reports. freeze moves a process found --confirm windows in a row \
        into a cgroup of its own and freezes it there (cgroup v2); at exit it is thawed and moved back into its \
        own cgroup. kill sends it SIGKILL. A task in state D is only reported: neither freezing nor a signal \
        reaches it before it wakes. Never acted on: kernel threads, init, jobgov and its ancestors, and the \
        protected commands (compositors and X servers, sshd, systemd, D-Bus; more with --protect).

        Exit status: 0; 1 when the machine lacks what it needs (PSI, cgroup v2 for freeze) or an action failed \
        to set up; 2 for a mistake on the command line.
        """
    )

    enum Action: String, ExpressibleByArgument, CaseIterable { case report, freeze, kill }

    @Option(help: ArgumentHelp("report (default: change nothing), freeze or kill.", valueName: "action"))
    var action: Action = .report

    @Option(parsing: .unconditional, help: ArgumentHelp("Seconds between looks, 0.2 to 60 (default 2).", valueName: "seconds"))
    var interval: String = "2"

    @Option(parsing: .unconditional, help: ArgumentHelp(
        "Look for the memory culprit while memory PSI some is above this share of the window (default 10).", valueName: "percent"))
    var memoryPressure: String = "10"

    @Option(parsing: .unconditional, help: ArgumentHelp(
        "Look for the CPU culprit while CPU PSI some is above this share of the window (default 50).", valueName: "percent"))
    var cpuPressure: String = "50"

    @Option(parsing: .unconditional, help: ArgumentHelp(
        "The CPU culprit must use at least this many CPUs (default 0.5).", valueName: "cpus"))
    var cpuMinimum: String = "0.5"

    @Option(parsing: .unconditional, help: ArgumentHelp(
        "Report a task in uninterruptible sleep (state D) this long without being woken (default 10).", valueName: "seconds"))
    var stuckSeconds: String = "10"

    @Option(parsing: .unconditional, help: ArgumentHelp(
        "Act only on a process found this many looks in a row (default 3).", valueName: "n"))
    var confirm: String = "3"

    @Option(help: ArgumentHelp("A command name (as in /proc/PID/comm) never to act on; can be repeated.", valueName: "name"))
    var protect: [String] = []

    @Option(help: ArgumentHelp("""
        Only look at processes in this cgroup v2 path and below it, relative to the v2 mount (e.g. /user.slice).
        """, valueName: "path"))
    var cgroup: String?

    @Option(name: .customLong("for"), parsing: .unconditional,
            help: ArgumentHelp("Stop after this many seconds (default: at Ctrl-C or SIGTERM).", valueName: "seconds"))
    var duration: String?

    @Flag(help: "Do not measure reclaim stalls with eBPF (procfs and cgroup PSI only).")
    var noBpf = false

    func validate() throws {
        _ = try settings()
        _ = try period()
        _ = try limit()
    }

    private func period() throws(CommandLineError) -> Double {
        try OptionValues.seconds(interval, option: "--interval", range: 0.2...60)
    }

    private func limit() throws(CommandLineError) -> Double? {
        try duration.map { (text) throws(CommandLineError) in try OptionValues.seconds(text, option: "--for", range: 0.1...31_536_000) }
    }

    func settings() throws(CommandLineError) -> StuckProcessPolicy.Settings {
        func percent(_ text: String, _ option: String) throws(CommandLineError) -> Double {
            guard let v = Double(text), v > 0, v <= 100 else {
                throw .invalidValue(option: option, value: text, reason: "give a percentage above 0 and up to 100, e.g. \(option) 20")
            }
            return v / 100
        }
        var s = StuckProcessPolicy.Settings()
        s.memoryPressure = try percent(memoryPressure, "--memory-pressure")
        s.cpuPressure = try percent(cpuPressure, "--cpu-pressure")
        s.minimumCPUs = try OptionValues.cpus(cpuMinimum, option: "--cpu-minimum", maximum: 4096)
        s.uninterruptibleSeconds = try OptionValues.seconds(stuckSeconds, option: "--stuck-seconds", range: 0.5...86_400)
        s.confirmWindows = try OptionValues.positiveCount(confirm, option: "--confirm", what: "looks")
        for name in protect {
            guard !name.isEmpty, name.utf8.count <= 15 else {
                throw .invalidValue(option: "--protect", value: name, reason: "give a command name as /proc/PID/comm shows it (at most 15 characters), e.g. --protect firefox")
            }
            s.protectedCommands.insert(name)
        }
        // jobgov itself and the shell and session it runs in.
        var pid = getpid()
        while pid > 1 {
            s.protectedPIDs.insert(pid)
            guard let parent = StuckProcessSensor(cgroupV2Mount: nil).process(pid)?.parent, parent != pid else { break }
            pid = parent
        }
        return s
    }

    func run() throws {
        let period = try period()
        let limit = try limit()
        var policy = StuckProcessPolicy(settings: try settings())
        let layout = CgroupLayout.detect()
        let within = cgroup.map { $0.hasPrefix("/") ? $0 : "/" + $0 }
        let sensor = StuckProcessSensor(cgroupV2Mount: layout.unifiedMount, within: within)
        if let within, let mount = layout.unifiedMount, access(joinPath(mount, within), F_OK) != 0 {
            fail("--cgroup \(within): no such cgroup under \(mount); give a path relative to it, e.g. /user.slice")
            throw ExitCode(2)
        }
        var guardSetup: GuardActuator
        do {
            guardSetup = try GuardActuator(action: action, layout: layout, sensor: sensor)
        } catch {
            fail(error)
            throw ExitCode(1)
        }
        defer { guardSetup.close() }
        let probes = noBpf ? nil : GuardReclaimProbes.open(layout: layout, within: within)
        let signals: SignalChannel
        do { signals = try SignalChannel(signals: [SIGINT, SIGTERM, SIGHUP]) } catch { fail(error); throw ExitCode(1) }
        say("watching \(within.map { "cgroup \($0)" } ?? "every process") every \(period) s; action: \(action.rawValue)"
            + (probes == nil ? "; reclaim stalls: from cgroup PSI only" : "; reclaim stalls: eBPF"))
        let start = monotonicSeconds()
        // Each process once per cause: two processes taking turns at the top would otherwise repeat every look.
        var reported: Set<String> = []
        var status: Int32 = 0
        var fds = [pollfd(fd: signals.fd.rawValue, events: Int16(POLLIN), revents: 0)]
        while true {
            var observation: GuardObservation
            do {
                observation = try sensor.observe(time: monotonicSeconds(), cpus: Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
            } catch {
                fail(error.description)
                status = 1
                break
            }
            probes?.annotate(&observation)
            for finding in policy.observe(observation) {
                if reported.insert("\(finding.cause) \(finding.pid) \(finding.startTicks)").inserted {
                    say(Self.describe(finding))
                }
                if policy.shouldAct(on: finding) { guardSetup.act(on: finding) }
            }
            // A look over a much shorter window than the others says little: when --for ends before the next full
            // window, wait for its end and stop.
            let left = limit.map { $0 - (monotonicSeconds() - start) } ?? .infinity
            _ = poll(&fds, 1, Int32(max(0, min(period, left)) * 1000))
            if !signals.drain().isEmpty || left <= period { break }
        }
        guardSetup.close()
        if status != 0 { throw ExitCode(status) }
    }

    static func describe(_ f: StuckProcessFinding) -> String {
        let cause = switch f.cause {
        case .memory: "memory"
        case .cpu: "CPU"
        case .uninterruptible: "stuck in D state"
        }
        return "\(cause): pid \(f.pid) (\(f.command))\(f.isProtected ? " [protected: not acted on]" : ""): "
            + f.evidence.joined(separator: "; ")
    }
}

func say(_ line: String) { writeStandardError("jobgov guard: \(line)\n") }

func fail(_ error: any Error) { fail("\(error)") }
