#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import GovernorRuntime
import JobgovCore
import Jobserver
import LinuxSystem

struct DaemonCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "daemon",
        abstract: "Share one memory budget and the CPUs between every jobgov build on the machine.",
        usage: """
        jobgov daemon [--socket <path>] [--group <name>] [--memory-budget <size>] [--pool <n>] [--cgroups]
          jobgov daemon --status [--json] [--socket <path>]
          jobgov daemon --priority <pid>:<weight> [--socket <path>]
        """,
        discussion: """
        The daemon owns a memory budget (its cgroup's limit, else the machine's memory, less a reserve: as a build \
        alone would compute it) and listens on a Unix socket: /run/jobgov/daemon.sock for root, \
        $XDG_RUNTIME_DIR/jobgov/daemon.sock for a user. Every governed `jobgov` build started while it listens \
        joins it (its start line says so), reports its demand four times a second and plans against the share it \
        gets back. The oldest job of every build has room, oldest build first; when memory runs short the newest \
        build gives first, and a newer build whose oldest job could not grow beside the older builds' freezes it \
        while it is small, until there is room. The CPUs are shared too: each build's CPU rule measures its use \
        against its share of them (by weight; a build that uses little leaves the rest to the others), so that \
        builds side by side do not each start jobs as if the CPUs were theirs alone. If the daemon dies, each build keeps its last share, goes on, and rejoins a restarted daemon. \
        Started by systemd for jobgov.socket (socket activation), it serves the socket systemd hands over.

        Root and the members of the group (--group; by default `jobgov` when that group exists) may connect; each \
        sees and changes only their own builds, root all of them.
        """
    )

    @Option(help: ArgumentHelp("The socket to listen on (or to ask, with --status and --priority).", valueName: "path"))
    var socket: String?

    @Option(help: ArgumentHelp("""
        The group whose members may join and ask (default: jobgov, if it exists; else root only).
        """, valueName: "name"))
    var group: String?

    @Option(parsing: .unconditional, help: ArgumentHelp("""
        The budget to share, e.g. 16G or 75% (default: the cgroup's limit or the machine's memory, less a reserve).
        """, valueName: "size"))
    var memoryBudget: String?

    @Option(parsing: .unconditional, help: ArgumentHelp("""
        Tokens in the pool for plain clients (builds started without jobgov, with \
        MAKEFLAGS=--jobserver-auth=fifo:PATH; the FIFO is `jobserver` next to the socket). Default: one per CPU; \
        0: no pool.
        """, valueName: "n"))
    var pool: String?

    @Flag(help: ArgumentHelp("""
        Make cgroups below the daemon's own for builds that cannot make one (an unprivileged user's): the build's \
        jobgov is moved there and gets a subtree of its own, as systemd's Delegate=yes gives one to a service. \
        Needs root; meant for the service, whose MemoryMax= then bounds every such build.
        """))
    var cgroups = false

    @Flag(help: "List the builds of a running daemon: their shares, what they hold and need.")
    var status = false

    @Flag(help: "With --status: one JSON object.")
    var json = false

    @Option(help: ArgumentHelp("Set the weight (1-100) of a build of yours that the daemon serves.",
                               valueName: "pid:weight"))
    var priority: String?

    func run() throws {
        throw ExitCode(execute())
    }

    func execute() -> Int32 {
        let env = currentEnvironment()
        guard let path = socket ?? DaemonSocketPath.listening(environment: env) else {
            fail("no place for the daemon's socket: XDG_RUNTIME_DIR is not set; give one with --socket PATH")
            return 2
        }
        if status || priority != nil {
            if cgroups {
                fail("--cgroups goes with starting the daemon, not with \(status ? "--status" : "--priority")")
                return 2
            }
            return ask(path)
        }
        if json {
            fail("--json goes with --status")
            return 2
        }
        if cgroups && geteuid() != 0 {
            fail("--cgroups needs root: only root can move a build's process into the daemon's cgroup")
            return 2
        }
        do {
            let budget = try memoryBudget.map {
                MemoryBudget(bytes: try MemorySize.parse($0, option: "--memory-budget", percentOf: physicalMemory()),
                             source: "--memory-budget")
            } ?? MemoryBudget.derive(totalMemory: physicalMemory(),
                                     cgroupLimit: CgroupLayout.detect().effectiveMemoryLimit())
            let gid = try groupID()
            let tokens = try pool.map { (text) throws(CommandLineError) -> Int in
                guard let n = Int(text), (0...JobsRequest.maximumJobs).contains(n) else {
                    throw .conflict("--pool takes a number of tokens from 0 (no pool) to \(JobsRequest.maximumJobs), e.g. --pool 8")
                }
                return n
            } ?? onlineCPUs()
            let delegation = try cgroups ? CgroupDelegation(layout: CgroupLayout.detect()) : nil
            return try DaemonServer(path: path, group: gid, groupName: group ?? (gid == nil ? nil : "jobgov"),
                                    budget: budget, poolTokens: tokens, delegation: delegation).run()
        } catch {
            return failureStatus(error)
        }
    }

    /// The group allowed besides root: the one named, else `jobgov` if it exists.
    private func groupID() throws(CommandLineError) -> gid_t? {
        let name = group ?? "jobgov"
        guard let entry = getgrnam(name) else {
            if group == nil { return nil }
            throw .conflict("no group named '\(group!)'; create it (groupadd \(group!)) or name an existing one with --group")
        }
        return entry.pointee.gr_gid
    }

    /// `--status` and `--priority`: one request to the running daemon.
    private func ask(_ path: String) -> Int32 {
        var request = DaemonRequest.builds
        if let priority {
            let parts = priority.split(separator: ":")
            guard parts.count == 2, let pid = Int32(parts[0]), pid > 0, let weight = Int(parts[1]),
                  BuildReport.weights.contains(weight) else {
                fail("--priority takes a build's pid and a weight from 1 to 100, e.g. --priority 4242:20")
                return 2
            }
            request = .priority(pid: pid, weight: weight)
        }
        let reply: String
        do {
            reply = try ControlClient.sendLine(request.line, to: path,
                                               unreachableHint: "is `jobgov daemon` running? (--socket names another)")
        } catch {
            fail(error.description)
            return 1
        }
        if reply.isEmpty {
            fail("the daemon at \(path) closed the connection without a reply: it serves root and the members of its "
                 + "group only (`jobgov daemon --group`); ask its administrator to add you to that group")
            return 1
        }
        if reply.hasPrefix("error ") {
            fail(String(reply.dropFirst(6)))
            return 1
        }
        guard case .builds = request else {
            print(reply)
            return 0
        }
        if json {
            print(reply)
            return 0
        }
        do {
            for line in try DaemonStatus.decode(json: reply).lines { print(line) }
        } catch {
            fail(error.message)
            return 1
        }
        return 0
    }
}

/// The running daemon: its socket, its registry of builds, and one event loop.
final class DaemonServer {
    let path: String
    let group: gid_t?
    let groupName: String?
    var registry: DaemonRegistry
    let poolTokens: Int
    private var pool: DaemonPool?
    private var stopping = false
    /// Cgroups for builds that cannot make their own (`--cgroups`); nil without.
    private let delegation: CgroupDelegation?

    init(path: String, group: gid_t?, groupName: String?, budget: MemoryBudget, poolTokens: Int,
         delegation: CgroupDelegation? = nil) {
        self.delegation = delegation
        self.path = path
        self.poolTokens = poolTokens
        self.group = group
        self.groupName = groupName
        registry = DaemonRegistry(budget: budget.bytes, budgetSource: budget.source, cpus: Double(onlineCPUs()),
                                  startedAt: monotonicSeconds())
    }

    func run() throws -> Int32 {
        // Started by systemd for jobgov.socket: the socket is systemd's, already listening.
        let handed = DaemonSocketPath.activated(environment: currentEnvironment())
        let directory = try prepareDirectory(activated: handed != nil)
        let limits = ControlServer.Limits(maximumConnections: 128, maximumRequestBytes: DaemonRequest.maximumBytes,
                                          idleSeconds: 2)
        let admit: (PeerCredentials) -> Bool = { [group] peer in Self.admits(peer, group: group) }
        let server = try handed.map { try ControlServer(listening: $0, path: path, limits: limits, admits: admit) }
            ?? ControlServer(path: path, mode: group == nil ? 0o600 : 0o660, group: group, limits: limits, admits: admit)
        defer { server.close() }
        signal(SIGPIPE, SIG_IGN)
        let signals = try SignalChannel(signals: [SIGINT, SIGTERM, SIGHUP])
        let loop = EventLoop(clock: monotonicSeconds)
        let who = group == nil ? "root" : "root and group \(groupName ?? String(group!))"
        note("daemon listening at \(path)\(handed == nil ? "" : " (a socket from systemd)") for \(who); "
             + "budget \(MemorySize.format(registry.budget)) (\(registry.budgetSource)), \(onlineCPUs()) CPUs")
        if let delegation {
            note("cgroups for builds that cannot make their own: below "
                 + delegation.parents.all.joined(separator: " and ")
                 + (delegation.notes.isEmpty ? "" : " (" + delegation.notes.joined(separator: "; ") + ")"))
        }
        if poolTokens > 0 {
            pool = try DaemonPool(path: directory + "/jobserver", size: poolTokens, group: group)
            note("pool for plain clients: MAKEFLAGS=--jobserver-auth=fifo:\(directory)/jobserver (\(poolTokens) tokens)")
        }
        defer { pool?.close() }

        loop.watch("signals", events: Int16(POLLIN), descriptors: { [signals.fd.rawValue] }) { [unowned self] _, _ in
            if !signals.drain().isEmpty { stopping = true }
        }
        loop.watch("socket", events: Int16(POLLIN), descriptors: { server.pollDescriptors }) { [unowned self] fd, _ in
            server.handleReadableLine(fd) { _, peer, line in
                let now = monotonicSeconds()
                let request = DaemonRequest.parse(line)
                if case .success(.builds) = request {
                    var status = registry.status(for: peer, now: now)
                    status.pool = pool.map { .init(path: $0.path, tokens: $0.size, free: $0.free, recreated: $0.recreated) }
                    return DaemonJSON.encode(status)
                }
                if case .success(.cgroup) = request, let delegation {
                    return grantCgroup(delegation, to: peer)
                }
                let answer = registry.respond(to: request, from: peer, now: now)
                if answer.joined || answer.left { logBuilds(peer: peer, joined: answer.joined) }
                return answer.reply
            }
        }
        if let pool {
            loop.every("lost tokens", interval: { 0.5 }) { _ in
                let n = pool.recoverLostTokens()
                if n > 0 { note("re-created \(n) token\(n == 1 ? "" : "s") of the pool lost with a client that died holding them") }
            }
        }
        loop.every("housekeeping", interval: { 1 }) { [unowned self] now in
            server.dropIdle(now: now)
            let gone = registry.expire(now: now) { kill($0, 0) == 0 || errno == EPERM }
            for pid in gone { note("build \(pid) stopped reporting; its share is free (\(registry.builds.count) builds)") }
            if let delegation, !delegation.grants.isEmpty {
                for pid in delegation.removeStale() { note("removed the cgroups of build \(pid), which has ended") }
            }
        }
        do {
            try loop.run(longestWait: 1) { stopping }
        } catch {
            throw SystemError(error.description)
        }
        delegation?.removeStale()
        let kept = delegation?.grants.count ?? 0
        note("daemon stopping; its builds keep their shares and run on"
             + (kept == 0 ? "" : " (\(kept) still in the cgroups it made: a daemon started again removes them once they end)"))
        return 0
    }

    /// `cgroup`: a subtree below the daemon's own for the sender's process (one per process, at most as many as
    /// builds), or an error that says why not.
    private func grantCgroup(_ delegation: CgroupDelegation, to peer: PeerCredentials) -> String {
        guard delegation.grants[peer.pid] != nil || delegation.grants.count < registry.maximumBuilds else {
            return "error the daemon has made \(registry.maximumBuilds) cgroups already"
        }
        do {
            let dirs = try delegation.grant(pid: peer.pid, uid: peer.uid, gid: peer.gid)
            note("made cgroups for process \(peer.pid) of uid \(peer.uid): \(dirs.all.joined(separator: " and "))")
            return CgroupGrant(unified: dirs.unified, memory: dirs.memory, freezer: dirs.freezer).line
        } catch {
            return "error \(error.description)"
        }
    }

    private func logBuilds(peer: PeerCredentials, joined: Bool) {
        let command = registry.builds[peer.pid]?.report.command ?? ""
        note("build \(peer.pid) of uid \(peer.uid) \(joined ? "joined (\(command))" : "left"); "
             + "\(registry.builds.count) build\(registry.builds.count == 1 ? "" : "s")")
    }

    /// Root, the daemon's own user, and members of the group (primary, or supplementary as /proc tells).
    static func admits(_ peer: PeerCredentials, group: gid_t?) -> Bool {
        if peer.isRoot || peer.uid == UInt32(geteuid()) { return true }
        guard let group else { return false }
        if peer.gid == group { return true }
        guard let status = readSmallFile("/proc/\(peer.pid)/status", limit: 64 << 10) else { return false }
        return PeerCredentials.supplementaryGroups(procStatus: status).contains(group)
    }

    /// The socket's directory, made if missing (searchable by all: the socket's own mode decides who connects);
    /// a socket left by a daemon that died is removed, one that answers is another daemon's. A socket systemd
    /// handed over is left as it is.
    private func prepareDirectory(activated: Bool) throws -> String {
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
        if activated { return directory }
        if access(directory, F_OK) != 0 {
            guard mkdir(directory, group == nil && geteuid() != 0 ? 0o700 : 0o755) == 0 || errno == EEXIST else {
                throw SystemError("cannot make the socket's directory", path: directory,
                                  hint: "make it, or give --socket in a directory that exists")
            }
        }
        guard access(path, F_OK) == 0 else { return directory }
        if let reply = try? ControlClient.sendLine(DaemonRequest.builds.line, to: path, timeoutMilliseconds: 1000,
                                                    unreachableHint: ""), !reply.isEmpty {
            throw SystemError("a jobgov daemon already listens at", path: path,
                              hint: "stop it first, or give this one another --socket")
        }
        unlink(path)
        return directory
    }
}
