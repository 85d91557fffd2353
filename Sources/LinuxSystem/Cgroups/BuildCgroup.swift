#if canImport(Glibc)
import Glibc
#endif

/// A failed cgroup operation, saying what to do about it.
public struct CgroupError: Error, CustomStringConvertible, Sendable, Equatable {
    public var message: String
    public var errno: Int32?
    public init(_ message: String, errno: Int32? = nil) {
        self.message = message
        self.errno = errno
    }
    public var description: String {
        guard let errno else { return message }
        return message + ": " + String(cString: strerror(errno))
    }
}

/// Limits for the build's cgroup. nil leaves a knob as it is.
public struct CgroupLimits: Equatable, Sendable {
    /// Hard limit (v2 memory.max, v1 memory.limit_in_bytes).
    public var memoryMax: UInt64?
    /// The throttle below the hard limit: reclaim and slow the build instead of OOM (v2 memory.high; no v1 equivalent).
    public var memoryHigh: UInt64?
    /// CPU bandwidth: quota per period, in microseconds (v2 cpu.max, v1 cpu.cfs_quota_us/cfs_period_us).
    public var cpuQuotaMicroseconds: Int?
    public var cpuPeriodMicroseconds: Int = 100_000
    /// io.max lines such as "8:0 rbps=1048576 wbps=1048576" (v2 only).
    public var ioMax: [String]?
    /// v1 memory.oom_control: tasks wait at the limit instead of being killed; jobgov must resolve it.
    public var oomKillDisabled: Bool?
    /// v1 memory.swappiness for the build's memory cgroup and every cgroup below it (0-200). With jobgov's
    /// compressed swap present, 0 keeps reclaim at the build's limit from swapping running jobs (they would thrash,
    /// and their compressed pages, charged to no cgroup, would let the build outgrow its limit); jobgov pages out
    /// the frozen jobs itself (MADV_PAGEOUT ignores swappiness). A v1 cgroup copies its parent's value when made
    /// and vm.swappiness does not reach it, hence a knob of its own. v2 has none (vm.swappiness applies there).
    public var swappiness: Int?

    public init(memoryMax: UInt64? = nil, memoryHigh: UInt64? = nil, cpuQuotaMicroseconds: Int? = nil,
                cpuPeriodMicroseconds: Int = 100_000, ioMax: [String]? = nil, oomKillDisabled: Bool? = nil,
                swappiness: Int? = nil) {
        self.memoryMax = memoryMax
        self.memoryHigh = memoryHigh
        self.cpuQuotaMicroseconds = cpuQuotaMicroseconds
        self.cpuPeriodMicroseconds = cpuPeriodMicroseconds
        self.ioMax = ioMax
        self.oomKillDisabled = oomKillDisabled
        self.swappiness = swappiness
    }
}

/// The build's cgroup, across the hierarchies this machine has: one v2 directory (PSI, freeze, kill, and on pure
/// v2 the limits) and, on hybrid and v1 machines, v1 memory, cpu and freezer directories for what v2 lacks there.
///
/// Shape: `jobgov-PID/` holds the limits and is what gets frozen or killed as a whole; the launched command runs
/// in its leaf `jobgov-PID/build`, and single jobs can get leaves of their own beside it (v2 allows processes only
/// in leaves once controllers are enabled).
public final class BuildCgroup {
    public enum Backend: String, Sendable { case unified, hybrid, legacy }

    public let backend: Backend
    /// The top directories, removed at the end when jobgov created them.
    public let directories: CgroupDirectories
    /// What jobgov created, deepest first, for removal.
    private var created: [String]
    /// Whether jobgov made the top directories (false for `--cgroup` of the user's).
    public let ownsTop: Bool
    /// Features that are not available, and why (for the privilege report).
    public private(set) var unavailable: [String: String] = [:]

    public var leafName: String { "build" }

    init(backend: Backend, directories: CgroupDirectories, created: [String], ownsTop: Bool,
         unavailable: [String: String]) {
        self.backend = backend
        self.directories = directories
        self.created = created
        self.ownsTop = ownsTop
        self.unavailable = unavailable
    }

    /// Every top directory, v2 first.
    public var topDirectories: [String] { directories.all }

    /// The `cgroup.procs` files a process is written to, to put it in the build leaf in every hierarchy.
    public var leafProcsFiles: [String] { topDirectories.map { "\($0)/\(leafName)/cgroup.procs" } }

    /// Creates `name` (e.g. `jobgov-PID`) with a `build` leaf below this process's own cgroups, or below `parent`,
    /// a path relative to each hierarchy's mount such as one made with cgcreate (`--cgroup`), or below the
    /// directories `granted` by `jobgov daemon --cgroups` (see `CgroupDelegation`).
    ///
    /// Only the controllers asked for are used: a CPU controller puts the build in a group of its own for the
    /// scheduler, which costs fork-heavy builds about 14% wall time (measured: 3000 trivial jobs at -j2, 1.62 s
    /// without, 1.84 s with a v1 cpu cgroup two levels down), so it is added only for a CPU limit.
    public static func create(
        layout: CgroupLayout, name: String, parent existing: String? = nil, granted: CgroupDirectories? = nil,
        controllers: Set<String> = ["memory"]
    ) throws(CgroupError) -> BuildCgroup {
        var created: [String] = []
        var unavailable: [String: String] = [:]
        func top(_ base: String?, granted given: String? = nil) -> String? {
            if granted != nil { return given.map { joinPath($0, name) } }
            guard let base else { return nil }
            if let existing { return joinPath(joinPath(baseMount(base, layout: layout), existing), name) }
            return joinPath(base, name)
        }
        func makeDir(_ path: String) throws(CgroupError) {
            if mkdir(path, 0o755) == 0 {
                created.insert(path, at: 0)
            } else {
                let e = errno
                for dir in created { rmdir(dir) }
                throw CgroupError("cannot create cgroup \(path)"
                    + (e == EACCES || e == EPERM || e == EROFS ? " (needs root or a delegated cgroup subtree; try --cgroup or run without cgroups)" : ""),
                    errno: e)
            }
        }

        let backend: Backend
        var dirs = CgroupDirectories()
        switch layout.kind {
        case .none:
            throw CgroupError("no cgroup filesystem is mounted")
        case .unified:
            backend = .unified
            dirs.unified = top(layout.ownUnifiedDirectory, granted: granted?.unified)
        case .hybrid:
            backend = .hybrid
            dirs.unified = top(layout.ownUnifiedDirectory, granted: granted?.unified)
            dirs.memory = top(layout.ownV1Directory("memory"), granted: granted?.memory)
            dirs.cpu = controllers.contains("cpu") ? top(layout.ownV1Directory("cpu"), granted: granted?.cpu) : nil
        case .legacy:
            backend = .legacy
            dirs.memory = top(layout.ownV1Directory("memory"), granted: granted?.memory)
            dirs.cpu = controllers.contains("cpu") ? top(layout.ownV1Directory("cpu"), granted: granted?.cpu) : nil
            dirs.freezer = top(layout.ownV1Directory("freezer"), granted: granted?.freezer)
        }
        if let existing {
            for dir in dirs.all.map(parentDirectory) where access(dir, F_OK) != 0 {
                throw CgroupError("--cgroup \(existing): \(dir) does not exist; create it first (e.g. cgcreate -g memory,cpu:\(existing)) or leave out --cgroup")
            }
        }
        if backend == .unified, let parent = dirs.unified.map(parentDirectory) {
            // Controllers reach a child only when the parent delegates them.
            let wanted = ["memory", "cpu", "io"].filter(controllers.contains)
            let available = (readSmallFile(parent + "/cgroup.controllers") ?? "").split(whereSeparator: \.isWhitespace).map(String.init)
            let enabled = (readSmallFile(parent + "/cgroup.subtree_control") ?? "").split(whereSeparator: \.isWhitespace).map(String.init)
            for c in wanted where !enabled.contains(c) {
                if !available.contains(c) {
                    unavailable["\(c) controller"] = "not delegated to \(parent)"
                } else if (try? writeCgroupFile(parent + "/cgroup.subtree_control", "+\(c)")) == nil {
                    unavailable["\(c) controller"] = "cannot enable it in \(parent) (it holds processes; run jobgov in a delegated scope, e.g. systemd-run --user --scope -p Delegate=yes)"
                }
            }
        }
        for dir in dirs.all {
            try makeDir(dir)
        }
        if backend == .unified, let unifiedDir = dirs.unified {
            // Delegate to the leaves what the top has, so per-job leaves can be limited and measured.
            let have = (readSmallFile(unifiedDir + "/cgroup.controllers") ?? "").split(whereSeparator: \.isWhitespace)
            for c in have where controllers.contains(String(c)) {
                _ = try? writeCgroupFile(unifiedDir + "/cgroup.subtree_control", "+\(c)")
            }
        }
        for dir in dirs.all {
            try makeDir(dir + "/build")
        }
        if backend == .hybrid {
            unavailable["memory.high"] = "cgroup v1 has no memory.high; memory.limit_in_bytes with the OOM killer held off (memory.oom_control) stands in for it"
            unavailable["io.max"] = "the v2 tree of this hybrid machine has no io controller"
        }
        return BuildCgroup(backend: backend, directories: dirs, created: created, ownsTop: true,
                           unavailable: unavailable)
    }

    /// Removes empty `jobgov-PID` cgroups (and their leaves) below this process's own cgroups whose jobgov no
    /// longer runs: what a jobgov and its watchdog both killed with SIGKILL leave behind. A cgroup that still holds
    /// processes is left alone (rmdir fails on it).
    @discardableResult
    public static func removeStale(layout: CgroupLayout) -> [String] {
        var removed: [String] = []
        let bases = [layout.ownUnifiedDirectory] + ["memory", "cpu", "freezer"].map { layout.ownV1Directory($0) }
        for base in bases.compactMap({ $0 }) {
            for name in directoryEntries(base, directoriesOnly: true) {
                guard name.hasPrefix("jobgov-"), let pid = Int32(name.dropFirst("jobgov-".count)),
                      pid != getpid(), Glibc.kill(pid, 0) != 0, errno == ESRCH else { continue }
                let dir = base + "/" + name
                if removeDirectory(dir) { removed.append(dir) }
            }
        }
        return removed
    }

    private static func baseMount(_ ownDir: String, layout: CgroupLayout) -> String {
        // --cgroup paths are relative to each hierarchy's mount, as cgcreate names them.
        for mount in [layout.unifiedMount].compactMap({ $0 }) + Array(layout.v1Mounts.values) where ownDir.hasPrefix(mount) {
            return mount
        }
        return ownDir
    }

    // MARK: limits

    public func apply(_ limits: CgroupLimits) throws(CgroupError) {
        switch backend {
        case .unified:
            guard let dir = directories.unified else { return }
            if let v = limits.memoryMax { try writeCgroupFile(dir + "/memory.max", String(v)) }
            if let v = limits.memoryHigh { try writeCgroupFile(dir + "/memory.high", String(v)) }
            if let q = limits.cpuQuotaMicroseconds {
                try writeCgroupFile(dir + "/cpu.max", "\(q) \(limits.cpuPeriodMicroseconds)")
            }
            for line in limits.ioMax ?? [] { try writeCgroupFile(dir + "/io.max", line) }
            if limits.oomKillDisabled == true {
                throw CgroupError("cgroup v2 cannot disable the OOM killer; use memory.high below memory.max to throttle the build before its limit")
            }
            if limits.swappiness != nil {
                throw CgroupError("cgroup v2 has no per-cgroup swappiness; vm.swappiness (SwappinessTuning) applies to every cgroup there")
            }
        case .hybrid, .legacy:
            if let dir = directories.memory {
                if let v = limits.memoryMax { try writeCgroupFile(dir + "/memory.limit_in_bytes", String(v)) }
                if let off = limits.oomKillDisabled { try writeCgroupFile(dir + "/memory.oom_control", off ? "1" : "0") }
                if let v = limits.swappiness { try Self.setSwappiness(v, below: dir) }
            }
            if limits.memoryHigh != nil, backend == .legacy || directories.memory != nil {
                throw CgroupError("memory.high is not available with cgroup v1 controllers")
            }
            if let dir = directories.cpu, let q = limits.cpuQuotaMicroseconds {
                try writeCgroupFile(dir + "/cpu.cfs_period_us", String(limits.cpuPeriodMicroseconds))
                try writeCgroupFile(dir + "/cpu.cfs_quota_us", String(q))
            }
            if limits.ioMax != nil { throw CgroupError("io.max needs the cgroup v2 io controller") }
        }
    }

    /// v1 memory.swappiness of `dir` and every cgroup below it: a value written to a parent does not reach the
    /// children it already has (only those made later copy it).
    static func setSwappiness(_ value: Int, below dir: String) throws(CgroupError) {
        try writeCgroupFile(dir + "/memory.swappiness", String(value))
        for child in subdirectories(dir) { try setSwappiness(value, below: dir + "/" + child) }
    }

    /// Lifts every limit jobgov can set: used by the watchdog so that nothing binds the build after jobgov dies.
    public static func liftLimits(_ directories: CgroupDirectories) {
        if let dir = directories.unified {
            for (file, value) in [("memory.high", "max"), ("memory.max", "max"), ("cpu.max", "max")] {
                _ = try? writeCgroupFile(dir + "/" + file, value)
            }
        }
        if let dir = directories.memory {
            _ = try? writeCgroupFile(dir + "/memory.oom_control", "0")
            _ = try? writeCgroupFile(dir + "/memory.limit_in_bytes", "-1")
        }
        if let dir = directories.cpu { _ = try? writeCgroupFile(dir + "/cpu.cfs_quota_us", "-1") }
    }

    // MARK: single jobs

    /// A leaf for one job beside `build` (`jobgov-PID/job-NAME` in every hierarchy), so that one job can be
    /// frozen, measured or limited alone. v2 allows processes only in leaves, hence the sibling of `build`.
    public func makeJobLeaf(_ name: String) throws(CgroupError) -> JobCgroup {
        let leafName = "job-" + name
        var made: [String] = []
        for top in topDirectories {
            let dir = top + "/" + leafName
            guard mkdir(dir, 0o755) == 0 || errno == EEXIST else {
                let e = errno
                for d in made { rmdir(d) }
                throw CgroupError("cannot create the job cgroup \(dir)", errno: e)
            }
            made.append(dir)
        }
        return JobCgroup(directories: directories.child(leafName))
    }

    /// The `build` leaf in the freezing hierarchy, to move a process back beside the build's others.
    public var freezingBuildLeaf: JobCgroup { JobCgroup(directories: directories.freezing.child(leafName)) }

    /// A leaf beside `build` in the freezing hierarchy only (v2, or the v1 freezer), for freezing one running job:
    /// its processes are moved there while their memory stays charged where it was.
    public func makeFreezeLeaf(_ name: String) throws(CgroupError) -> JobCgroup {
        guard let top = directories.freezing.all.first else {
            throw CgroupError("freezing one job needs cgroup v2 or the v1 freezer controller")
        }
        let dir = top + "/job-" + name
        guard mkdir(dir, 0o755) == 0 || errno == EEXIST else {
            throw CgroupError("cannot create the job cgroup \(dir)", errno: errno)
        }
        return JobCgroup(directories: directories.freezing.child("job-" + name))
    }

    /// OOM kills in a v1 memory cgroup and every cgroup below it (v1 counts each kill in the victim's cgroup only).
    public static func v1OOMKills(below dir: String) -> UInt64? {
        let path = dir + "/memory.oom_control"
        var total = readSmallFile(path).flatMap { try? parseOOMKills($0, path: path) }
        for child in subdirectories(dir) {
            if let n = v1OOMKills(below: dir + "/" + child) { total = (total ?? 0) + n }
        }
        return total
    }

    /// OOM kills in the build so far. v1 counts a kill only in the victim's own cgroup, so the leaves are summed;
    /// v2's memory.events is hierarchical.
    public func oomKills() -> UInt64? {
        if let dir = directories.memory { return Self.v1OOMKills(below: dir) }
        if let dir = directories.unified {
            let path = dir + "/memory.events"
            return readSmallFile(path).flatMap { try? parseOOMKills($0, path: path) }
        }
        return nil
    }

    // MARK: freeze, thaw, kill

    public func freeze() throws(CgroupError) { try Self.setFrozen(true, directories) }
    public func thaw() throws(CgroupError) { try Self.setFrozen(false, directories) }

    public static func setFrozen(_ frozen: Bool, _ directories: CgroupDirectories) throws(CgroupError) {
        if let dir = directories.unified, access(dir + "/cgroup.freeze", F_OK) == 0 {
            try writeCgroupFile(dir + "/cgroup.freeze", frozen ? "1" : "0")
        } else if let dir = directories.freezer {
            try writeCgroupFile(dir + "/freezer.state", frozen ? "FROZEN" : "THAWED")
        } else {
            throw CgroupError("freezing needs cgroup v2's cgroup.freeze or the v1 freezer controller")
        }
    }

    /// Whether the whole build is frozen now.
    public var isFrozen: Bool { Self.isFrozen(directories) }

    /// v2 `cgroup.events` says "frozen 1" (all tasks stopped, not just asked to), or v1 says "FROZEN".
    public static func isFrozen(_ directories: CgroupDirectories) -> Bool {
        if let dir = directories.unified, let events = readSmallFile(dir + "/cgroup.events") {
            return events.split(separator: "\n").contains("frozen 1")
        }
        if let dir = directories.freezer, let state = readSmallFile(dir + "/freezer.state") { return state.hasPrefix("FROZEN") }
        return false
    }

    /// Kills every process of the build (an explicit operation; jobgov never does this on its own).
    public func kill() throws(CgroupError) {
        if let dir = directories.unified, access(dir + "/cgroup.kill", F_OK) == 0 {
            try writeCgroupFile(dir + "/cgroup.kill", "1")
            return
        }
        for pid in processes() { Glibc.kill(pid, SIGKILL) }
    }

    /// Every process in the build, from whichever hierarchy lists them.
    public func processes() -> [Int32] {
        guard let dir = topDirectories.first else { return [] }
        return Self.processes(in: dir)
    }

    public static func processes(in dir: String) -> [Int32] {
        var pids = (readSmallFile(dir + "/cgroup.procs") ?? "").split(separator: "\n").compactMap { Int32($0) }
        for child in subdirectories(dir) { pids += processes(in: dir + "/" + child) }
        return pids
    }

    /// Whether any process is left in the build (v2 `populated`, else the process lists).
    public var isPopulated: Bool {
        if let dir = directories.unified, let events = readSmallFile(dir + "/cgroup.events") {
            return events.split(separator: "\n").contains("populated 1")
        }
        return !processes().isEmpty
    }

    /// Removes what jobgov created. Fails (and keeps the list) while processes remain.
    @discardableResult
    public func remove() -> Bool {
        var left: [String] = []
        for dir in created {
            if !Self.removeDirectory(dir) { left.append(dir) }
        }
        created = left
        return left.isEmpty
    }

    /// Removes a cgroup directory and its leaves (per-job leaves made after creation are not in `created`).
    /// False while processes remain; a directory that is already gone counts as removed.
    public static func removeDirectory(_ dir: String) -> Bool {
        for child in subdirectories(dir) { rmdir(dir + "/" + child) }
        return rmdir(dir) == 0 || errno == ENOENT
    }

    /// Directories still to be removed (handed to the watchdog when the build left processes behind).
    public var remainingDirectories: [String] { created }

    public static func subdirectories(_ dir: String) -> [String] {
        directoryEntries(dir, directoriesOnly: true)
    }
}

func parentDirectory(_ path: String) -> String {
    guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return "/" }
    return String(path[..<slash])
}

/// Writes a value to a cgroup control file in one write(2), as the kernel expects.
public func writeCgroupFile(_ path: String, _ value: String) throws(CgroupError) {
    // O_TRUNC as a shell's `>` does: cgroupfs and procfs ignore it, a plain file (a test's fake /proc/sys) needs it.
    let fd = retryingInterrupts { open(path, O_WRONLY | O_TRUNC | O_CLOEXEC) }
    guard fd >= 0 else { throw CgroupError("cannot open \(path)", errno: errno) }
    defer { close(fd) }
    let bytes = Array(value.utf8)
    let n = bytes.withUnsafeBytes { raw in retryingInterrupts { write(fd, raw.baseAddress, raw.count) } }
    guard n == bytes.count else { throw CgroupError("cannot write '\(value)' to \(path)", errno: errno) }
}

/// One job's own cgroup leaf (see `BuildCgroup.makeJobLeaf`).
public struct JobCgroup: Sendable, Equatable {
    /// The leaf in every hierarchy it was made in.
    public let directories: CgroupDirectories

    /// The `cgroup.procs` files to write a process to, to place it in this job's leaf everywhere.
    public var procsFiles: [String] { directories.all.map { $0 + "/cgroup.procs" } }

    /// Moves a running process (and, in v2, all of its threads) into the leaf.
    public func adopt(_ pid: Int32) throws(CgroupError) {
        for file in procsFiles { try writeCgroupFile(file, String(pid)) }
    }

    public func freeze() throws(CgroupError) { try BuildCgroup.setFrozen(true, directories) }
    public func thaw() throws(CgroupError) { try BuildCgroup.setFrozen(false, directories) }

    public var isFrozen: Bool { BuildCgroup.isFrozen(directories) }

    /// Removes the leaf; fails while processes remain in it.
    @discardableResult
    public func remove() -> Bool {
        var ok = true
        for dir in directories.all where rmdir(dir) != 0 && errno != ENOENT { ok = false }
        return ok
    }
}
