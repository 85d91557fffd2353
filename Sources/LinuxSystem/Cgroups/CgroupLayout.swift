#if canImport(Glibc)
import Glibc
#endif

/// Which cgroup hierarchies this machine has, and where this process sits in each.
///
/// - unified: pure cgroup v2 (most current distributions): one tree with every controller.
/// - hybrid: v1 controllers mounted one per directory, plus a v2 tree (`/sys/fs/cgroup/unified`) that has no
///   controllers but still offers `cgroup.freeze`, `cgroup.kill`, `cgroup.events` and per-cgroup PSI.
/// - legacy: v1 only.
public struct CgroupLayout: Equatable, Sendable {
    public enum Kind: String, Sendable { case unified, hybrid, legacy, none }

    public var kind: Kind
    /// Mount point of the v2 tree, if any.
    public var unifiedMount: String?
    /// v1 controller name → mount point (`memory` → `/sys/fs/cgroup/memory`).
    public var v1Mounts: [String: String]
    /// This process's cgroup in the v2 tree, relative to its mount (`/` or `/user.slice/...`).
    public var unifiedPath: String?
    /// v1 controller name → this process's cgroup in that hierarchy, relative to its mount.
    public var v1Paths: [String: String]

    public init(kind: Kind, unifiedMount: String?, v1Mounts: [String: String], unifiedPath: String?,
                v1Paths: [String: String]) {
        self.kind = kind
        self.unifiedMount = unifiedMount
        self.v1Mounts = v1Mounts
        self.unifiedPath = unifiedPath
        self.v1Paths = v1Paths
    }

    /// Builds the layout from the text of /proc/self/mountinfo and /proc/self/cgroup.
    public static func parse(mountinfo: String, procCgroup: String) -> CgroupLayout {
        var unifiedMount: String?
        var v1Mounts: [String: String] = [:]
        for line in mountinfo.split(separator: "\n") {
            // "<id> <parent> <major:minor> <root> <mount point> <options> [optional...] - <fstype> <source> <super options>"
            let halves = line.split(separator: " - ", maxSplits: 1, omittingEmptySubsequences: false)
            guard halves.count == 2 else { continue }
            let left = halves[0].split(separator: " ")
            let right = halves[1].split(separator: " ")
            guard left.count >= 5, right.count >= 3 else { continue }
            let mountPoint = unescapeMountField(String(left[4]))
            switch right[0] {
            case "cgroup2":
                if unifiedMount == nil { unifiedMount = mountPoint }
            case "cgroup":
                for option in right[2].split(separator: ",") {
                    let name = String(option)
                    if ["memory", "cpu", "cpuacct", "freezer", "blkio", "pids", "cpuset"].contains(name) {
                        v1Mounts[name] = mountPoint
                    }
                }
            default:
                break
            }
        }
        var unifiedPath: String?
        var v1Paths: [String: String] = [:]
        for line in procCgroup.split(separator: "\n") {
            // "<id>:<controllers>:<path>"; v2 is "0::<path>".
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3 else { continue }
            if parts[0] == "0" && parts[1].isEmpty {
                unifiedPath = String(parts[2])
            } else {
                for controller in parts[1].split(separator: ",") { v1Paths[String(controller)] = String(parts[2]) }
            }
        }
        let kind: Kind
        if unifiedMount != nil && v1Mounts.isEmpty { kind = .unified }
        else if unifiedMount != nil { kind = .hybrid }
        else if !v1Mounts.isEmpty { kind = .legacy }
        else { kind = .none }
        return CgroupLayout(kind: kind, unifiedMount: unifiedMount, v1Mounts: v1Mounts, unifiedPath: unifiedPath,
                            v1Paths: v1Paths)
    }

    /// Reads this process's layout, with paths below `root` (for tests with recorded files).
    public static func detect(root: String = "") -> CgroupLayout {
        parse(mountinfo: readSmallFile(root + "/proc/self/mountinfo") ?? "",
              procCgroup: readSmallFile(root + "/proc/self/cgroup") ?? "")
    }

    /// The directory of this process's own cgroup in the v2 tree.
    public var ownUnifiedDirectory: String? {
        guard let mount = unifiedMount, let path = unifiedPath else { return nil }
        return joinPath(mount, path)
    }

    /// The memory limit that applies to this process's own cgroup, counting its ancestors' limits; nil when none
    /// is set (or no memory controller is mounted).
    public func effectiveMemoryLimit() -> UInt64? {
        // A file that cannot be read or parsed counts as no limit, as an absent one does.
        func value(_ text: String?) -> UInt64? { text.flatMap { try? parseLimit($0, path: "") } }
        if let dir = ownV1Directory("memory") {
            // v1 reports the effective (hierarchical) limit in memory.stat.
            let stat = readSmallFile(dir + "/memory.stat") ?? ""
            let line = stat.split(separator: "\n").first { $0.hasPrefix("hierarchical_memory_limit ") }
            return value(line.map { String($0.dropFirst("hierarchical_memory_limit ".count)) })
                ?? value(readSmallFile(dir + "/memory.limit_in_bytes"))
        }
        guard var dir = ownUnifiedDirectory, let mount = unifiedMount else { return nil }
        var smallest: UInt64?
        while dir.count > mount.count {
            if let v = value(readSmallFile(dir + "/memory.max")) { smallest = min(smallest ?? v, v) }
            dir = parentDirectory(dir)
        }
        return smallest
    }

    /// The directory of this process's own cgroup in a v1 controller's hierarchy.
    public func ownV1Directory(_ controller: String) -> String? {
        guard let mount = v1Mounts[controller] else { return nil }
        return joinPath(mount, v1Paths[controller] ?? "/")
    }
}

/// `base/relative`, whether or not `relative` starts with a slash (cgroup paths in /proc do).
public func joinPath(_ base: String, _ relative: String) -> String {
    let trimmed = relative.hasPrefix("/") ? String(relative.dropFirst()) : relative
    if trimmed.isEmpty { return base }
    return base.hasSuffix("/") ? base + trimmed : base + "/" + trimmed
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
func unescapeMountField(_ s: String) -> String {
    guard s.contains("\\") else { return s }
    var out = ""
    var chars = Array(s)
    var i = 0
    while i < chars.count {
        if chars[i] == "\\", i + 3 < chars.count, let code = UInt8(String(chars[(i + 1)...(i + 3)]), radix: 8) {
            out.append(Character(Unicode.Scalar(code)))
            i += 4
        } else {
            out.append(chars[i])
            i += 1
        }
    }
    chars.removeAll()
    return out
}
