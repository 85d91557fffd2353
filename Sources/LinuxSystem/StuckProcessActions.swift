#if canImport(Glibc)
import Glibc
#endif
import CJobgovShims
import JobgovCore

/// Freezes single processes by moving each into a cgroup v2 leaf of its own, below a directory jobgov creates,
/// and puts them back into the cgroup they came from when released.
///
/// Moving a process changes its cgroup v2 membership while it is frozen: on a pure v2 machine it leaves its
/// cgroup's limits and accounting (pages already charged stay charged to the old cgroup; being frozen, it adds
/// none), and a `systemctl stop` of its unit does not reach it there. On a hybrid machine (v1 controllers) only the
/// v2 tree changes: its memory and CPU cgroups stay as they were. Its threads move with it; its children do not.
public final class ProcessFreezer {
    /// The directory jobgov created (`<own v2 cgroup>/jobgov-guard-PID`).
    public let directory: String
    public struct Frozen: Sendable, Equatable {
        public var pid: Int32
        public var startTicks: UInt64
        /// Its v2 cgroup before, relative to the mount.
        public var originalCgroup: String
        public var leaf: String
    }
    public private(set) var frozen: [Frozen] = []
    private let mount: String

    /// Creates `jobgov-guard-PID` below `parent` (a v2 directory under `mount`).
    public init(mount: String, parent: String) throws(CgroupError) {
        self.mount = mount
        directory = joinPath(parent, "jobgov-guard-\(getpid())")
        guard access(parent + "/cgroup.freeze", F_OK) == 0 || access(mount + "/cgroup.procs", F_OK) == 0 else {
            throw CgroupError("freezing one process needs cgroup v2's cgroup.freeze (Linux 5.2+) under \(parent)")
        }
        guard mkdir(directory, 0o755) == 0 || errno == EEXIST else {
            throw CgroupError("cannot create \(directory)", errno: errno)
        }
    }

    /// Moves the process into a leaf of its own and freezes the leaf. Checks the start time first, so that a
    /// pid reused since the look that found it is left alone.
    public func freeze(pid: Int32, startTicks: UInt64, sensor: StuckProcessSensor) throws(CgroupError) -> Frozen {
        guard let now = sensor.process(pid), now.startTicks == startTicks else {
            throw CgroupError("process \(pid) has exited")
        }
        let leaf = directory + "/pid-\(pid)"
        guard mkdir(leaf, 0o755) == 0 || errno == EEXIST else { throw CgroupError("cannot create \(leaf)", errno: errno) }
        do {
            try writeCgroupFile(leaf + "/cgroup.procs", String(pid))
            try writeCgroupFile(leaf + "/cgroup.freeze", "1")
        } catch {
            try? writeCgroupFile(joinPath(mount, now.cgroup) + "/cgroup.procs", String(pid))
            rmdir(leaf)
            throw error
        }
        // cgroup.events says "frozen 1" once every thread has stopped; a task in state D stops when it wakes.
        for _ in 0..<100 where !BuildCgroup.isFrozen(CgroupDirectories(unified: leaf)) { usleep(10_000) }
        let record = Frozen(pid: pid, startTicks: startTicks, originalCgroup: now.cgroup, leaf: leaf)
        frozen.append(record)
        return record
    }

    /// Thaws it and moves it back into its original cgroup, or the nearest ancestor of it that still exists.
    /// Returns where it went (nil when it had exited).
    @discardableResult
    public func release(_ record: Frozen) -> String? {
        frozen.removeAll { $0 == record }
        try? writeCgroupFile(record.leaf + "/cgroup.freeze", "0")
        var target = record.originalCgroup
        var placed: String?
        if BuildCgroup.processes(in: record.leaf).contains(record.pid) {
            while true {
                let dir = joinPath(mount, target)
                if (try? writeCgroupFile(dir + "/cgroup.procs", String(record.pid))) != nil {
                    placed = target
                    break
                }
                if target == "/" || target.isEmpty { break }
                target = String(target[..<(target.lastIndex(of: "/") ?? target.startIndex)])
                if target.isEmpty { target = "/" }
            }
        }
        rmdir(record.leaf)
        return placed
    }

    /// Releases every frozen process and removes the directory.
    public func close() {
        for record in frozen { release(record) }
        for leaf in BuildCgroup.subdirectories(directory) { rmdir(directory + "/" + leaf) }
        rmdir(directory)
    }
}

/// SIGKILL through a pidfd, after checking the start time, so that a reused pid is never hit.
public func killProcess(pid: Int32, startTicks: UInt64, sensor: StuckProcessSensor) throws(SystemError) {
    let fd = jobgov_pidfd_open(pid)
    guard fd >= 0 else { throw SystemError("cannot open process \(pid)") }
    defer { close(fd) }
    // The pidfd names the process found only if it still started at that tick.
    guard let now = sensor.process(pid), now.startTicks == startTicks else {
        throw SystemError("process \(pid) has exited", errno: ESRCH)
    }
    guard jobgov_pidfd_send_signal(fd, SIGKILL) == 0 else { throw SystemError("cannot kill process \(pid)") }
}
