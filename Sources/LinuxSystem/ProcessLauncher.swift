#if canImport(Glibc)
import Glibc
#endif
import CJobgovShims

/// Starts processes with posix_spawn: exact control over which descriptors a build inherits (the jobserver's
/// `R,W` pair) and a clean signal state (jobgov blocks signals for its signalfd and ignores SIGPIPE; neither may
/// leak into the build).
public enum ProcessLauncher {
    public enum LookupError: Error, Equatable, CustomStringConvertible {
        case notFound(String)
        case notExecutable(String)

        public var description: String {
            switch self {
            case .notFound(let name):
                return "command not found: \(name) (is it installed and on PATH?)"
            case .notExecutable(let path):
                return "cannot execute \(path): permission denied or not a regular file"
            }
        }
    }

    /// Finds `name` the way a shell would: as given when it contains a slash, else in each PATH directory.
    public static func resolve(_ name: String, path: String?) -> Result<String, LookupError> {
        if name.contains("/") {
            return isExecutableFile(name) ? .success(name)
                : (access(name, F_OK) == 0 ? .failure(.notExecutable(name)) : .failure(.notFound(name)))
        }
        var sawNonExecutable: String?
        for dir in (path ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":", omittingEmptySubsequences: false) {
            let candidate = (dir.isEmpty ? "." : String(dir)) + "/" + name
            if isExecutableFile(candidate) { return .success(candidate) }
            if sawNonExecutable == nil, access(candidate, F_OK) == 0 { sawNonExecutable = candidate }
        }
        if let sawNonExecutable { return .failure(.notExecutable(sawNonExecutable)) }
        return .failure(.notFound(name))
    }

    private static func isExecutableFile(_ path: String) -> Bool {
        var st = stat()
        guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return false }
        return access(path, X_OK) == 0
    }

    /// Spawns `executable` with `arguments` (argv[0] included) and `environment` (`KEY=value` strings).
    /// Descriptors without FD_CLOEXEC are inherited; `stdoutFD`, when given, becomes the child's stdout.
    public static func spawn(
        executable: String,
        arguments: [String],
        environment: [String],
        stdoutFD: Int32? = nil,
        stderrFD: Int32? = nil,
        moveDescriptors: [(from: Int32, to: Int32)] = [],
        newSession: Bool = false,
        defaultSignals: [Int32] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGPIPE, SIGUSR1, SIGUSR2]
    ) throws(SystemError) -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let stdoutFD { posix_spawn_file_actions_adddup2(&actions, stdoutFD, 1) }
        if let stderrFD { posix_spawn_file_actions_adddup2(&actions, stderrFD, 2) }
        // dup2 clears close-on-exec on the copy: the only way a descriptor reaches the child.
        for move in moveDescriptors { posix_spawn_file_actions_adddup2(&actions, move.from, move.to) }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for sig in defaultSignals { sigaddset(&defaults, sig) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        // POSIX_SPAWN_SETSID (0x80 in glibc) is not imported into Swift.
        let setsid: Int32 = newSession ? 0x80 : 0
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | setsid))

        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard rc == 0 else {
            throw SystemError("cannot start", path: executable, errno: rc)
        }
        return pid
    }

    /// Signals among `signals` that this process inherited as ignored (SIG_IGN), as a shell does for a
    /// background job's SIGINT and SIGQUIT. A build started through jobgov must inherit the same.
    public static func inheritedIgnoredSignals(_ signals: [Int32]) -> Set<Int32> {
        var ignored = Set<Int32>()
        for sig in signals {
            if jobgov_signal_is_ignored(sig) == 1 { ignored.insert(sig) }
        }
        return ignored
    }

    /// Like `spawn`, but the child joins the cgroups whose `cgroup.procs` files are given before it executes
    /// anything, so no process of the build escapes them.
    public static func spawn(
        executable: String,
        arguments: [String],
        environment: [String],
        intoCgroups procsFiles: [String],
        defaultSignals: [Int32]
    ) throws(SystemError) -> pid_t {
        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        let files = procsFiles.map { UnsafePointer(strdup($0)) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
            files.forEach { free(UnsafeMutablePointer(mutating: $0)) }
        }
        var pid: Int32 = 0
        var stage: Int32 = 0
        var index: Int32 = 0
        let rc = defaultSignals.withUnsafeBufferPointer { sigs in
            jobgov_spawn_into_cgroups(executable, argv, envp, files, Int32(procsFiles.count),
                                      sigs.baseAddress, Int32(sigs.count), &pid, &stage, &index)
        }
        guard rc == 0 else {
            if stage == 1 {
                throw SystemError("cannot put the build into its cgroup", path: procsFiles[Int(index)], errno: rc)
            }
            throw SystemError("cannot start", path: executable, errno: rc)
        }
        return pid
    }

    /// Runs a short command and returns its standard output (used for `make --version`). Returns nil if it could
    /// not run or printed nothing. Only for commands that finish at once.
    public static func captureOutput(executable: String, arguments: [String], environment: [String]) -> String? {
        var fds: [Int32] = [0, 0]
        guard jobgov_pipe_cloexec(&fds) == 0 else { return nil }
        let devNull = open("/dev/null", O_WRONLY | O_CLOEXEC)
        defer { if devNull >= 0 { close(devNull) } }
        let pid: pid_t
        do {
            pid = try spawn(executable: executable, arguments: arguments, environment: environment,
                            stdoutFD: fds[1], stderrFD: devNull >= 0 ? devNull : nil)
        } catch {
            close(fds[0]); close(fds[1])
            return nil
        }
        close(fds[1])
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while output.count < 65536 {
            let n = buffer.withUnsafeMutableBytes { raw in retryingInterrupts { read(fds[0], raw.baseAddress, raw.count) } }
            if n <= 0 { break }
            output.append(contentsOf: buffer[0..<n])
        }
        close(fds[0])
        var status: Int32 = 0
        _ = retryingInterrupts { waitpid(pid, &status, 0) }
        return output.isEmpty ? nil : String(decoding: output, as: UTF8.self)
    }
}
