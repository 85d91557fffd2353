#if canImport(Glibc)
import Glibc
#endif
import LinuxSystem

/// The private directory (mode 0700) that holds a build's FIFO and control socket:
/// `$XDG_RUNTIME_DIR/jobgov-PID-XXXXXX` when that is usable, else `$TMPDIR` or `/tmp`.
///
/// Clients split `--jobserver-auth=fifo:PATH` on whitespace (ninja, GCC), so a base directory with whitespace in
/// its path is skipped.
public final class RuntimeDirectory {
    public let path: String
    private var removed = false

    public static let prefix = "jobgov-"

    /// Candidate base directories, best first.
    public static func baseCandidates(environment: [String: String]) -> [String] {
        [environment["XDG_RUNTIME_DIR"], environment["TMPDIR"], "/tmp"]
            .compactMap { $0 }
            .filter { !$0.isEmpty && $0.hasPrefix("/") && !$0.contains(where: { $0 == " " || $0 == "\t" || $0 == "\n" }) }
    }

    /// Where `jobgov ctl` looks for running builds: the first candidate that exists, which is where a jobgov
    /// started with the same environment puts its directory.
    public static func primaryBase(environment: [String: String]) -> String? {
        baseCandidates(environment: environment).first { base in
            var st = stat()
            return stat(base, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR && access(base, W_OK | X_OK) == 0
        }
    }

    public init(environment: [String: String], pid: Int32 = getpid()) throws(SystemError) {
        var lastError: SystemError?
        for base in Self.baseCandidates(environment: environment) {
            var template = Array("\(base)/\(Self.prefix)\(pid)-XXXXXX".utf8CString)
            let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
            if made != nil {
                let madePath = String(decoding: template.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
                // The canonical path: /proc/PID/fd links show it, and lost-token accounting matches on it.
                if let resolved = realpath(madePath, nil) {
                    path = String(cString: resolved)
                    free(resolved)
                } else {
                    path = madePath
                }
                return
            }
            lastError = SystemError("cannot create a private directory in", path: base)
        }
        throw lastError ?? SystemError("cannot create a private directory", errno: ENOENT,
                                       hint: "set TMPDIR to a writable directory without spaces")
    }

    public func file(_ name: String) -> String { "\(path)/\(name)" }

    /// Removes the directory and what jobgov put in it. Safe to call more than once.
    public func remove() {
        guard !removed else { return }
        removed = true
        Self.removeTree(path)
    }

    deinit { remove() }

    static func removeTree(_ path: String) {
        removeDirectoryTree(path)
    }

    /// Directories left by jobgov processes that no longer exist (killed with SIGKILL, say), owned by this user.
    /// Removed at start so that a crash never leaves FIFOs behind for long.
    @discardableResult
    public static func removeStale(environment: [String: String]) -> [String] {
        var removedPaths: [String] = []
        for base in baseCandidates(environment: environment) {
            for (path, pid) in instances(in: base) where !processExists(pid) {
                var st = stat()
                guard lstat(path, &st) == 0, st.st_uid == getuid(), (st.st_mode & S_IFMT) == S_IFDIR else { continue }
                removeTree(path)
                removedPaths.append(path)
            }
        }
        return removedPaths
    }

    /// `jobgov-PID-XXXXXX` directories in `base`, with the PID of the jobgov that made each.
    public static func instances(in base: String) -> [(path: String, pid: Int32)] {
        var found: [(String, Int32)] = []
        for name in directoryEntries(base) {
            guard name.hasPrefix(prefix) else { continue }
            let rest = name.dropFirst(prefix.count).split(separator: "-")
            guard rest.count == 2, let pid = Int32(rest[0]), rest[1].count == 6 else { continue }
            found.append(("\(base)/\(name)", pid))
        }
        return found
    }

    public static func processExists(_ pid: Int32) -> Bool {
        kill(pid, 0) == 0 || errno == EPERM
    }
}
