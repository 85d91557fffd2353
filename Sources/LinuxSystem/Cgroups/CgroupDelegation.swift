#if canImport(Glibc)
import Glibc
#endif

/// `jobgov daemon --cgroups`: cgroups the daemon makes below its own (a service's, with systemd's `Delegate=yes`)
/// for builds that cannot make one themselves, such as an unprivileged user's. The build's jobgov process is moved
/// into `build-PID/supervisor`, and `build-PID` is handed to the build's user as systemd delegates a subtree (the
/// directory and its `cgroup.procs`, `cgroup.threads`, `cgroup.subtree_control`): the build then makes its own
/// cgroup beside `supervisor`, sets its limits there and moves its jobs in, as it does below a cgroup of its own.
/// Its memory counts against the daemon's cgroup: the budget the daemon shares.
///
/// Only the daemon (root) can move a process across subtrees (cgroup v2 asks for write access to the common
/// ancestor's `cgroup.procs`), which is why the daemon moves the build's jobgov and nothing else.
public final class CgroupDelegation {
    /// The daemon's own cgroups the grants are made below: v2, and the v1 memory and freezer hierarchies.
    public let parents: CgroupDirectories
    /// What the daemon had to do or could not do to make grants possible (for its start line).
    public private(set) var notes: [String] = []
    /// Grants made, by the pid of the build's jobgov.
    public private(set) var grants: [Int32: CgroupDirectories] = [:]

    public static let prefix = "build-"
    public static let supervisorLeaf = "supervisor"

    /// Prepares the daemon's own cgroups. On pure v2 the daemon moves itself into a leaf `daemon` of its own cgroup
    /// so that the memory controller can be passed down (v2 allows no processes beside child cgroups that use it).
    public init(layout: CgroupLayout) throws(CgroupError) {
        var dirs = CgroupDirectories()
        switch layout.kind {
        case .none:
            throw CgroupError("no cgroup filesystem is mounted")
        case .unified:
            dirs.unified = layout.ownUnifiedDirectory
        case .hybrid:
            dirs.unified = layout.ownUnifiedDirectory
            dirs.memory = layout.ownV1Directory("memory")
        case .legacy:
            dirs.memory = layout.ownV1Directory("memory")
            dirs.freezer = layout.ownV1Directory("freezer")
        }
        guard !dirs.all.isEmpty else { throw CgroupError("the daemon's own cgroup is not known") }
        for dir in dirs.all where access(dir, W_OK) != 0 {
            throw CgroupError("cannot make cgroups below \(dir) (run the daemon as root, in a service with Delegate=yes)",
                              errno: errno)
        }
        if layout.kind == .unified, let own = dirs.unified {
            let available = Self.words(own + "/cgroup.controllers")
            let wanted = ["memory", "io", "pids"].filter(available.contains)
            let enabled = Self.words(own + "/cgroup.subtree_control")
            if wanted.contains(where: { !enabled.contains($0) }) {
                let leaf = own + "/daemon"
                if mkdir(leaf, 0o755) != 0 && errno != EEXIST { throw CgroupError("cannot create \(leaf)", errno: errno) }
                try writeCgroupFile(leaf + "/cgroup.procs", "0")
                notes.append("moved itself to \(leaf)")
                for c in wanted where !enabled.contains(c) {
                    do { try writeCgroupFile(own + "/cgroup.subtree_control", "+\(c)") } catch {
                        notes.append("cannot pass the \(c) controller down from \(own) (\(error.description))")
                    }
                }
            }
        }
        parents = dirs
        removeStale()
    }

    /// Makes `build-PID` with its `supervisor` leaf in every hierarchy, hands `build-PID` to `uid`/`gid` and moves
    /// process `pid` (the build's jobgov) into the leaf. Returns the `build-PID` directories: the parents the build
    /// makes its cgroup below.
    public func grant(pid: Int32, uid: uid_t, gid: gid_t) throws(CgroupError) -> CgroupDirectories {
        if let had = grants[pid] { return had }
        // The pid is the asking connection's (SO_PEERCRED); a process that has since ended and whose pid went to
        // another user's process must not be moved into this user's subtree.
        guard let status = readSmallFile("/proc/\(pid)/status", limit: 64 << 10),
              let uids = status.split(separator: "\n").first(where: { $0.hasPrefix("Uid:") }),
              uids.dropFirst(4).split(whereSeparator: \.isWhitespace).first.flatMap({ UInt32($0) }) == uid else {
            throw CgroupError("process \(pid) is gone or no longer uid \(uid)'s")
        }
        var made = CgroupDirectories()
        var createdDirs: [String] = []
        func undo() {
            for dir in createdDirs.reversed() { rmdir(dir) }
        }
        func make(_ parent: String?) throws(CgroupError) -> String? {
            guard let parent else { return nil }
            let dir = parent + "/" + Self.prefix + String(pid)
            for d in [dir, dir + "/" + Self.supervisorLeaf] {
                guard mkdir(d, 0o755) == 0 else {
                    let e = errno
                    undo()
                    throw CgroupError("cannot create cgroup \(d)", errno: e)
                }
                createdDirs.append(d)
            }
            // As systemd delegates: the directory and the files that govern its subtree, not its own limits.
            for path in [dir, dir + "/cgroup.procs", dir + "/cgroup.threads", dir + "/cgroup.subtree_control",
                         dir + "/tasks", dir + "/" + Self.supervisorLeaf, dir + "/" + Self.supervisorLeaf + "/cgroup.procs",
                         dir + "/" + Self.supervisorLeaf + "/tasks"] where access(path, F_OK) == 0 {
                guard chown(path, uid, gid) == 0 else {
                    let e = errno
                    undo()
                    throw CgroupError("cannot hand \(path) to uid \(uid)", errno: e)
                }
            }
            return dir
        }
        made.unified = try make(parents.unified)
        made.memory = try make(parents.memory)
        made.freezer = try make(parents.freezer)
        for dir in made.all {
            do {
                try writeCgroupFile(dir + "/" + Self.supervisorLeaf + "/cgroup.procs", String(pid))
            } catch {
                undo()
                throw error
            }
        }
        grants[pid] = made
        return made
    }

    /// Removes the grants whose process is gone (and any `build-*` left empty by a daemon before): their
    /// directories can go only once nothing runs in them. Returns the pids whose grants were removed.
    @discardableResult
    public func removeStale() -> [Int32] {
        var removed: [Int32] = []
        for (pid, dirs) in grants where !Self.alive(pid) {
            if dirs.all.allSatisfy(Self.removeTree) {
                grants[pid] = nil
                removed.append(pid)
            }
        }
        for parent in parents.all {
            for name in directoryEntries(parent, directoriesOnly: true) where name.hasPrefix(Self.prefix) {
                guard let pid = Int32(name.dropFirst(Self.prefix.count)), grants[pid] == nil, !Self.alive(pid) else { continue }
                _ = Self.removeTree(parent + "/" + name)
            }
        }
        return removed
    }

    /// Removes a cgroup and every cgroup below it, deepest first; false while processes remain in any.
    static func removeTree(_ dir: String) -> Bool {
        for child in BuildCgroup.subdirectories(dir) { _ = removeTree(dir + "/" + child) }
        return rmdir(dir) == 0 || errno == ENOENT
    }

    private static func alive(_ pid: Int32) -> Bool {
        kill(pid, 0) == 0 || errno == EPERM
    }

    private static func words(_ path: String) -> [String] {
        (readSmallFile(path) ?? "").split(whereSeparator: \.isWhitespace).map(String.init)
    }
}
