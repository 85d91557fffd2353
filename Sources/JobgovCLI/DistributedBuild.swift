import JobgovCore
import LinuxSystem

/// The distcc helpers' slots as distcc itself finds them: `DISTCC_HOSTS`, else `$DISTCC_DIR/hosts` (by default
/// `~/.distcc/hosts`), else `/etc/distcc/hosts`. 0 when none names a helper (no distcc, or icecream, whose
/// scheduler knows its helpers): the remote width is then `-j`.
func distccRemoteSlots(env: [String: String]) -> Int {
    if let hosts = env["DISTCC_HOSTS"] { return DistccHosts.remoteSlots(hosts) ?? 0 }
    let dir = env["DISTCC_DIR"] ?? env["HOME"].map { "\($0)/.distcc" }
    for path in [dir.map { "\($0)/hosts" }, "/etc/distcc/hosts"].compactMap({ $0 }) {
        if let text = readSmallFile(path, limit: 64 << 10) { return DistccHosts.remoteSlots(text) ?? 0 }
    }
    return 0
}
