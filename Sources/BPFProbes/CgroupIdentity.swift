import CJobgovBPF
#if canImport(Glibc)
import Glibc
#endif

/// The cgroup v2 id (inode number) of `path` and its depth below the v2 root.
func cgroupIdentity(_ path: String) throws(ProbeError) -> (id: UInt64, level: UInt32) {
    let cgroup2Magic: Int = 0x6367_7270
    var fs = statfs()
    guard statfs(path, &fs) == 0 else { throw ProbeError("cannot open the cgroup \(path)", errno: errno) }
    guard Int(fs.f_type) == cgroup2Magic else {
        throw ProbeError("\(path) is not a cgroup v2 directory (on a hybrid machine use the one below /sys/fs/cgroup/unified)")
    }
    var st = stat()
    guard stat(path, &st) == 0 else { throw ProbeError("cannot open the cgroup \(path)", errno: errno) }
    // Depth: how many parents are still cgroup2 (the mount root is level 0). Walk a resolved path.
    guard let resolved = realpath(path, nil) else { throw ProbeError("cannot resolve \(path)", errno: errno) }
    var dir = String(cString: resolved)
    free(resolved)
    var level: UInt32 = 0
    while dir != "/" {
        let parent = dir.split(separator: "/").dropLast().joined(separator: "/")
        let parentPath = "/" + parent
        var pfs = statfs()
        var pst = stat()
        guard statfs(parentPath, &pfs) == 0, Int(pfs.f_type) == cgroup2Magic, stat(parentPath, &pst) == 0,
              pst.st_dev == st.st_dev else { break }
        level += 1
        dir = parentPath
    }
    return (UInt64(st.st_ino), level)
}
