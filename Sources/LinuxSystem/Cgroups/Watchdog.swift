#if canImport(Glibc)
import Glibc
#endif
import CJobgovShims
import SystemPackage

/// What the watchdog process is told to look after, passed on its command line.
public struct WatchdogPlan: Equatable, Sendable {
    public var runtimeDirectory: String?
    /// The build's top cgroup directories.
    public var cgroup: CgroupDirectories
    /// Directories to remove once the build has no process left, deepest first.
    public var removeWhenEmpty: [String]
    /// Sysctls to give back their values if jobgov dies while it has them tuned.
    public var sysctls: [SystemTuning.Setting] = []
    /// sysfs files (CPU boost, a fan) to give back the same way (`SysfsTuning`), below `sysfsRoot` (nil: /sys).
    public var sysfs: [SystemTuning.Setting] = []
    public var sysfsRoot: String?
    /// jobgov's compressed swap device (`CompressedSwap.index`) and its swap label (`jobgov-PID`): removed (swapoff,
    /// reset, hot_remove) after the build is thawed and its limits lifted, but only while the device still carries
    /// that label, since jobgov may have removed it and someone else's hot_add got the number again.
    public var zramIndex: Int?
    public var zramLabel: String?

    public init(runtimeDirectory: String?, cgroup: CgroupDirectories = CgroupDirectories(),
                removeWhenEmpty: [String]) {
        self.runtimeDirectory = runtimeDirectory
        self.cgroup = cgroup
        self.removeWhenEmpty = removeWhenEmpty
    }

    public var arguments: [String] {
        var out: [String] = []
        if let v = runtimeDirectory { out += ["--runtime-dir", v] }
        if let v = cgroup.unified { out += ["--unified", v] }
        if let v = cgroup.memory { out += ["--memory", v] }
        if let v = cgroup.cpu { out += ["--cpu", v] }
        if let v = cgroup.freezer { out += ["--freezer", v] }
        for v in removeWhenEmpty { out += ["--remove", v] }
        for s in sysctls { out += ["--sysctl", SystemTuning.encode(s)] }
        for s in sysfs { out += ["--sysfs", SystemTuning.encode(s)] }
        if let v = sysfsRoot, !sysfs.isEmpty { out += ["--sysfs-root", v] }
        if let index = zramIndex, let label = zramLabel { out += ["--zram", String(index), "--zram-label", label] }
        return out
    }
}

/// Messages jobgov writes to the watchdog before it exits on its own.
public enum WatchdogMessage: UInt8 {
    /// Everything is cleaned up: exit.
    case done = 0x44  // "D"
    /// The build left processes behind in its cgroups: remove them once empty (and then the compressed swap
    /// device, if jobgov could not: the leftover processes' pages kept it busy).
    case removeWhenEmpty = 0x52  // "R"
}

/// The watchdog's side: waits on the pipe from jobgov; if jobgov dies without saying goodbye (SIGKILL, a crash),
/// it undoes whatever could stop the build from progressing: thaws it, lifts the limits jobgov set, resumes stopped
/// processes, removes the FIFO's directory, and removes the cgroups once the build has ended.
public enum WatchdogRunner {
    public static func run(pipeFD: Int32, plan: WatchdogPlan) -> Int32 {
        var byte: UInt8 = 0
        var n: Int
        repeat {
            n = read(pipeFD, &byte, 1)
        } while n < 0 && errno == EINTR
        if n == 1 && byte == WatchdogMessage.done.rawValue { return 0 }
        if n == 1 && byte == WatchdogMessage.removeWhenEmpty.rawValue {
            removeWhenEmpty(plan)
            removeSwapDevice(plan, attempts: 20)
            return 0
        }
        // EOF without a message: jobgov is gone.
        recover(plan)
        removeWhenEmpty(plan)
        // recover() tried once; swapoff can fail while the build still needs the memory its pages would take.
        removeSwapDevice(plan, attempts: 20)
        return 0
    }

    /// Makes sure nothing of jobgov's binds the build any more.
    public static func recover(_ plan: WatchdogPlan) {
        try? BuildCgroup.setFrozen(false, plan.cgroup)
        // Jobs frozen one by one sit in leaves with their own freeze state, which thawing the parent leaves alone.
        let freezing = plan.cgroup.freezing
        for top in freezing.all {
            for leaf in BuildCgroup.subdirectories(top) {
                try? BuildCgroup.setFrozen(false, freezing.child(leaf))
            }
        }
        BuildCgroup.liftLimits(plan.cgroup)
        // Processes stopped by jobgov (the exec gate's SIGSTOP) are resumed; SIGCONT is harmless to the others. A
        // second pass a moment later: the kernel detaches jobgov's BPF programs as it closes their descriptors,
        // and one that ran just before could have stopped a process after the first pass.
        for pass in 0..<2 {
            if pass > 0 { usleep(200_000) }
            for dir in [plan.cgroup.unified, plan.cgroup.memory].compactMap({ $0 }) {
                for pid in BuildCgroup.processes(in: dir) { kill(pid, SIGCONT) }
            }
        }
        if let runtime = plan.runtimeDirectory { removeDirectoryTree(runtime) }
        SystemTuning.restore(plan.sysctls)
        SysfsTuning.restore(plan.sysfs, root: plan.sysfsRoot ?? SysfsTuning.defaultRoot)
        // Last: swapoff brings the paged-out pages back, charged to the build's cgroups, which must not be at a
        // limit jobgov set (lifted above), and the thawed jobs can already fault theirs back meanwhile.
        removeSwapDevice(plan, attempts: 1)
    }

    /// Removes jobgov's zram device if it still carries jobgov's label; true when it is gone or not jobgov's.
    /// Retries every half second (swapoff fails with ENOMEM while the memory its pages need is not there).
    @discardableResult
    public static func removeSwapDevice(_ plan: WatchdogPlan, attempts: Int,
                                        sysRoot: String = "/sys", devRoot: String = "/dev") -> Bool {
        guard let index = plan.zramIndex, let label = plan.zramLabel else { return true }
        for attempt in 0..<max(attempts, 1) {
            if attempt > 0 { usleep(500_000) }
            do {
                _ = try CompressedSwap.removeDevice(index: index, expectedLabel: label, sysRoot: sysRoot, devRoot: devRoot)
                return true
            } catch {
                if attempt == attempts - 1 { writeStandardError("jobgov watchdog: \(error)\n") }
            }
        }
        return false
    }

    static func removeWhenEmpty(_ plan: WatchdogPlan) {
        guard !plan.removeWhenEmpty.isEmpty else { return }
        while true {
            var left = false
            for dir in plan.removeWhenEmpty where !BuildCgroup.removeDirectory(dir) { left = true }
            if !left { return }
            usleep(500_000)
        }
    }
}

/// Removes a directory and the files in it (not recursive: jobgov's runtime directory is flat).
public func removeDirectoryTree(_ path: String) {
    for name in directoryEntries(path) { unlink(path + "/" + name) }
    rmdir(path)
}

/// jobgov's side of the watchdog: starts it as a separate process in its own session (so a terminal's Ctrl-C does
/// not reach it) and keeps the write end of a pipe whose closing it notices.
public final class WatchdogHandle {
    public let pid: pid_t
    /// The pipe's write end; nil once `finish` closed it.
    private var writer: FileDescriptor?

    public init(executable: String, plan: WatchdogPlan) throws(SystemError) {
        var fds: [Int32] = [0, 0]
        guard jobgov_pipe_cloexec(&fds) == 0 else { throw SystemError("cannot create the watchdog pipe") }
        let arguments = [executable, "watchdog", "--pipe-fd", "3"] + plan.arguments
        let spawned: pid_t
        do {
            spawned = try ProcessLauncher.spawn(
                executable: executable, arguments: arguments, environment: ["PATH=/usr/bin:/bin"],
                moveDescriptors: [(fds[0], 3)], newSession: true,
                defaultSignals: [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGPIPE])
        } catch {
            close(fds[0])
            close(fds[1])
            throw error
        }
        close(fds[0])
        self.pid = spawned
        writer = FileDescriptor(rawValue: fds[1])
    }

    /// Tells the watchdog how jobgov ended and lets it go.
    public func finish(_ message: WatchdogMessage) {
        guard let writer else { return }
        _ = try? writer.writeAll([message.rawValue])
        try? writer.close()
        self.writer = nil
    }

    deinit { try? writer?.close() }
}
