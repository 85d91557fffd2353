#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import JobgovCore
import Jobserver
import LinuxSystem

struct Monitor: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Watch pressure, memory, CPU and I/O live, for the system, a cgroup or a running build.",
        discussion: """
        Shows, per interval: PSI stall shares (some/full) for cpu, memory and io computed from the kernel's \
        `total` counters (finer than its 10-second averages); available memory and the zones' free pages against \
        their min/low/high watermarks; kswapd and direct-reclaim scan rates; CPU use; the slowest disk's \
        average request latency; and for a cgroup its memory use against its limit, its own pressure and its OOM \
        kills. With root and a cgroup v2 directory for the build, eBPF observers add a per-job view: the jobs by \
        memory with their peaks and time stalled in reclaim, and the interval's block I/O p99 and run-queue p90 \
        latency. When a `jobgov daemon` answers (where builds look for one, or at --daemon-socket), the builds it \
        serves are shown too: each one's pid, uid, share, and what it holds, needs and wants. On a terminal the \
        view is redrawn in place; otherwise one line per interval; --json prints one JSON object per line.
        """
    )

    @Option(help: ArgumentHelp("""
        A cgroup to watch besides the system: a directory (/sys/fs/cgroup/...) or a path relative to the \
        cgroup mounts (e.g. jobgov-1234).
        """, valueName: "path"))
    var cgroup: String?

    // Numbers are taken as text (`.unconditional`: also when they look like a negative number) and checked in
    // validate(), so that a mistake gets a message that says what to give.
    @Option(parsing: .unconditional, help: ArgumentHelp("Watch the build of the running jobgov with this process id.",
                                                        valueName: "pid"))
    var pid: String?

    @Option(parsing: .unconditional, help: ArgumentHelp("Seconds between updates, 0.05 to 3600.", valueName: "seconds"))
    var interval: String = "1"

    @Option(parsing: .unconditional, help: ArgumentHelp("Stop after this many updates (default: until interrupted).",
                                                        valueName: "n"))
    var count: String?

    @Flag(help: "Print one JSON object per update.")
    var json = false

    @Option(help: ArgumentHelp("""
        The jobgov daemon whose builds to show (default: where builds look for one; none: show none).
        """, valueName: "path"))
    var daemonSocket: String?

    func validate() throws {
        _ = try seconds
        _ = try updates
        _ = try processID
        if cgroup != nil && pid != nil {
            throw CommandLineError.conflict("give --cgroup or --pid, not both: --pid PID watches that jobgov's build cgroup")
        }
    }

    private var seconds: Double {
        get throws(CommandLineError) { try OptionValues.seconds(interval, option: "--interval", range: 0.05...3600) }
    }

    private var updates: Int? {
        get throws(CommandLineError) {
            try count.map { (text) throws(CommandLineError) in
                try OptionValues.positiveCount(text, option: "--count", what: "updates")
            }
        }
    }

    private var processID: Int32? {
        get throws(CommandLineError) {
            try pid.map { (text) throws(CommandLineError) in try OptionValues.processID(text, option: "--pid") }
        }
    }

    func run() throws {
        let interval = try seconds
        let count = try updates
        let pid = try processID
        var paths: CgroupDirectories?
        if let pid {
            let reply = try talk(.status, target: try Ctl.Target.parse(["--pid", String(pid)]))
            let status = try readStatus(reply)
            let v2 = status.cgroup.isEmpty ? nil : status.cgroup
            let v1 = status.cgroupV1Memory.isEmpty ? nil : status.cgroupV1Memory
            guard v2 != nil || v1 != nil else {
                fail("jobgov \(pid) runs its build without a cgroup; watching the system only")
                throw ExitCode(1)
            }
            paths = CgroupDirectories(unified: v2?.contains("/memory/") == true ? nil : v2, memory: v1)
        } else if let cgroup {
            guard let resolved = Self.resolve(cgroup, layout: CgroupLayout.detect()) else {
                fail("no cgroup '\(cgroup)' in any cgroup hierarchy of this machine; give a directory below "
                     + "/sys/fs/cgroup or a path relative to the cgroup mounts, e.g. jobgov-1234 (or --pid PID for a "
                     + "running build)")
                throw ExitCode(1)
            }
            paths = resolved
        }
        let reader = SensorReader(cgroup: paths)
        var jobs: MonitorJobs?
        if let v2 = paths?.unified {
            let (opened, why) = MonitorJobs.open(v2Dir: v2, otherDirs: [paths?.memory].compactMap { $0 }, buildPID: pid)
            jobs = opened
            if let why { fail("no per-job view (eBPF observers off: \(why))") }
        }
        let daemon = MonitorDaemon(paths: DaemonSocketPath.candidates(explicit: daemonSocket,
                                                                       environment: currentEnvironment()))
        let started = monotonicSeconds()
        let terminal = isatty(1) == 1 && !json
        var previous = reader.sample()
        var shown = 0
        while count.map({ shown < $0 }) ?? true {
            usleep(UInt32(interval * 1_000_000))
            let current = reader.sample()
            let frame = MonitorFrame(previous: previous, current: current)
            previous = current
            let perJob = jobs?.read(now: monotonicSeconds() - started)
            let served = daemon.read()
            shown += 1
            let text: String
            if json {
                var line = frame.jsonLine
                if let perJob, line.hasSuffix("}") { line = String(line.dropLast()) + "," + MonitorJobs.json(perJob) + "}" }
                // The daemon's own answer, as `jobgov daemon --status --json` prints it.
                if let served, line.hasSuffix("}") { line = String(line.dropLast()) + ",\"daemon\":" + served.json + "}" }
                text = line + "\n"
            } else if terminal {
                let title = "jobgov monitor: " + (cgroup ?? pid.map { "build of jobgov \($0)" } ?? "system")
                    + ", every \(interval) s (Ctrl-C to stop)"
                text = "\u{1B}[H\u{1B}[J" + title + "\n\n" + frame.screen + "\n"
                    + (perJob.map { "\n" + MonitorJobs.screen($0) } ?? "")
                    + (served.map { "\njobgov daemon at \($0.path): " + $0.status.lines.joined(separator: "\n") + "\n" } ?? "")
            } else {
                var line = frame.plainLine
                if let top = perJob?.jobs.first {
                    line += " | jobs \(perJob!.jobs.count), largest \(MemorySize.format(top.rss)) (pid \(top.pid))"
                }
                if let served { line += " | " + served.status.summary }
                text = line + "\n"
            }
            writeAll(1, text)
        }
    }

    /// A cgroup given as a directory or as a path relative to the hierarchies' mounts.
    static func resolve(_ path: String, layout: CgroupLayout) -> CgroupDirectories? {
        func exists(_ p: String) -> Bool { access(p, F_OK) == 0 }
        var relative = path
        if path.hasPrefix("/") {
            let mounts = [layout.unifiedMount].compactMap { $0 } + layout.v1Mounts.values
            guard let mount = mounts.filter({ path.hasPrefix($0 + "/") }).max(by: { $0.count < $1.count }) else {
                return nil
            }
            relative = String(path.dropFirst(mount.count))
        }
        let v2 = layout.unifiedMount.map { joinPath($0, relative) }.flatMap { exists($0) ? $0 : nil }
        let memory = layout.v1Mounts["memory"].map { joinPath($0, relative) }.flatMap { exists($0) ? $0 : nil }
        let cpuacct = layout.v1Mounts["cpuacct"].map { joinPath($0, relative) }.flatMap { exists($0) ? $0 : nil }
        guard v2 != nil || memory != nil || cpuacct != nil else { return nil }
        return CgroupDirectories(unified: v2, memory: memory, cpuacct: cpuacct)
    }
}
