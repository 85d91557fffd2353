#if canImport(Glibc)
import Glibc
#endif
import LinuxSystem

/// Where `jobgov daemon` listens, and where a build looks for it.
public enum DaemonSocketPath {
    /// The machine-wide daemon's socket (root's).
    public static let system = "/run/jobgov/daemon.sock"
    /// Names a daemon socket for builds (`none` or empty: join no daemon).
    public static let variable = "JOBGOV_DAEMON_SOCKET"

    /// Where a daemon started by this user listens by default: root's in /run/jobgov, a user's in its runtime
    /// directory. Nil for a user without XDG_RUNTIME_DIR (then `--socket` must say).
    public static func listening(environment env: [String: String], isRoot: Bool = geteuid() == 0) -> String? {
        if isRoot { return system }
        guard let runtime = env["XDG_RUNTIME_DIR"], !runtime.isEmpty else { return nil }
        return runtime + "/jobgov/daemon.sock"
    }

    /// The listening socket systemd hands over when it starts the daemon for `jobgov.socket` (socket activation):
    /// by its protocol, LISTEN_PID names this process and LISTEN_FDS counts the descriptors from 3. Nil otherwise.
    public static func activated(environment env: [String: String], pid: Int32 = getpid()) -> Int32? {
        guard let named = env["LISTEN_PID"].flatMap({ Int32($0) }), named == pid,
              let count = env["LISTEN_FDS"].flatMap({ Int($0) }), count >= 1 else { return nil }
        return 3
    }

    /// Where a build looks, in order: the socket `JOBGOV_DAEMON_SOCKET` (or `--daemon-socket`) names; else the
    /// user's own daemon, then the machine's.
    public static func candidates(explicit: String?, environment env: [String: String],
                                  isRoot: Bool = geteuid() == 0) -> [String] {
        if let named = explicit ?? env[variable] {
            return named.isEmpty || named == "none" ? [] : [named]
        }
        var paths: [String] = []
        if !isRoot, let own = listening(environment: env, isRoot: false) { paths.append(own) }
        paths.append(system)
        return paths
    }
}
