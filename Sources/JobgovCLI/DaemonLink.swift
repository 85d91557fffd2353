#if canImport(Glibc)
import Glibc
#endif
import GovernorRuntime
import JobgovCore
import Jobserver
import LinuxSystem

/// A build's tie to `jobgov daemon`: it reports its demand every `DaemonTiming.reportSeconds` and plans against the
/// share it gets back. Every exchange is non-blocking inside the build's event loop, so a daemon that is slow,
/// stopped or gone never holds the build up. When the daemon goes, the build keeps its last share (nothing is
/// frozen on that account: the governor thaws whatever its share lets it) and tries again every
/// `DaemonTiming.retrySeconds`, rejoining a restarted daemon with its next report.
final class DaemonLink {
    private let paths: [String]
    /// The socket of the daemon joined (or last joined).
    private(set) var path: String?
    let aloneBudget: UInt64
    let aloneHardLimit: UInt64
    let weight: Int
    private let startedAt: Double
    private let command: String
    private let cgroup: String
    private let controlPath: String?
    private let say: (String) -> Void
    /// The last share given, in bytes (nil: never joined).
    private(set) var share: UInt64?
    /// The last share of the CPUs given (nil: none, from a daemon that does not share them).
    private(set) var cpuShare: Double?
    private(set) var builds = 0
    /// The daemon's last word that this build must yield to an older one (see `GovernorSettings.yieldsToOlderBuild`).
    private var yieldGiven = false
    /// Whether to yield now: never while the daemon is out of reach, so that nothing waits on a daemon that is gone.
    var yields: Bool { yieldGiven && !lost }
    private var exchange: LineExchange?
    private var sentAt = 0.0
    private var lost = false
    private var nextReport = 0.0

    /// A share is never planned below this: the build's oldest job runs in any case.
    static let smallestBudget: UInt64 = 64 << 20

    init(paths: [String], aloneBudget: UInt64, aloneHardLimit: UInt64, weight: Int, command: String, cgroup: String,
         controlPath: String?, say: @escaping (String) -> Void) {
        self.controlPath = controlPath
        self.paths = paths
        self.aloneBudget = aloneBudget
        self.aloneHardLimit = max(aloneBudget, aloneHardLimit)
        self.weight = weight
        self.command = command
        self.cgroup = cgroup
        self.say = say
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        startedAt = Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }

    /// The budget and hard limit the governor plans with for a share: the share (never more than the build has
    /// alone), with the hard limit at the same proportion above it as alone.
    func limits(forShare share: UInt64) -> (budget: UInt64, hardLimit: UInt64) {
        let budget = max(Self.smallestBudget, min(share, aloneBudget))
        let ratio = Double(aloneHardLimit) / Double(max(1, aloneBudget))
        return (budget, max(budget, UInt64(Double(budget) * ratio)))
    }

    private func reportLine(_ demand: BuildDemand, cpuUsed: Double?) -> String {
        DaemonRequest.report(BuildReport(pid: getpid(), startedAt: startedAt, command: command, cgroup: cgroup,
                                         weight: weight, aloneBudgetBytes: aloneBudget, demand: demand,
                                         shareBytes: share, cpuUsed: cpuUsed, control: controlPath)).line
    }

    /// At the start: the first report, waited for (a second at most; no wait at all where nobody listens).
    /// Returns the start line's note, nil when no daemon answered.
    func join(demand: BuildDemand) -> String? {
        for candidate in paths {
            guard let reply = try? ControlClient.sendLine(reportLine(demand, cpuUsed: nil), to: candidate,
                                                          timeoutMilliseconds: Int32(DaemonTiming.replySeconds * 1000),
                                                          unreachableHint: "") else { continue }
            do {
                let given = try ShareReply.parse(reply)
                path = candidate
                share = given.shareBytes
                cpuShare = given.cpus
                yieldGiven = given.yield ?? false
                builds = given.builds
                return "joined jobgov daemon at \(candidate): share \(MemorySize.format(given.shareBytes)) of "
                    + "\(MemorySize.format(given.budgetBytes)) (\(given.builds) build\(given.builds == 1 ? "" : "s"))"
            } catch {
                say("jobgov daemon at \(candidate) refused this build (\(error.message)); running alone")
                return nil
            }
        }
        return nil
    }

    /// The connection waiting for its reply (raw, for poll).
    var pollDescriptors: [Int32] { exchange.map { [$0.fd] } ?? [] }

    /// Called every report interval: starts the next report, or gives up on one unanswered for too long.
    func report(now: Double, demand: () -> BuildDemand, cpuUsed: () -> Double?) {
        if exchange != nil {
            guard now - sentAt > DaemonTiming.replySeconds else { return }
            exchange?.close()
            exchange = nil
            loseDaemon(now: now, why: "no reply")
            return
        }
        guard now >= nextReport, let path else { return }
        guard let started = try? LineExchange(path: path, line: reportLine(demand(), cpuUsed: cpuUsed())) else {
            loseDaemon(now: now, why: "not listening")
            return
        }
        exchange = started
        sentAt = now
    }

    /// The reply arrived (or the connection ended): returns whether the share (of memory or of the CPUs) changed.
    func readable(now: Double) -> Bool {
        guard let current = exchange else { return false }
        let progress = current.receive()
        if progress == .waiting { return false }
        current.close()
        exchange = nil
        guard case .reply(let line) = progress else {
            loseDaemon(now: now, why: "connection ended")
            return false
        }
        let given: ShareReply
        do {
            given = try ShareReply.parse(line)
        } catch {
            loseDaemon(now: now, why: "it refused the report: \(error.message)")
            return false
        }
        nextReport = now + DaemonTiming.reportSeconds
        if lost {
            lost = false
            say("rejoined jobgov daemon at \(path ?? "?"): share \(MemorySize.format(given.shareBytes))")
        }
        builds = given.builds
        let yieldNow = given.yield ?? false
        guard given.shareBytes != share || given.cpus != cpuShare || yieldNow != yieldGiven else { return false }
        share = given.shareBytes
        cpuShare = given.cpus
        yieldGiven = yieldNow
        return true
    }

    private func loseDaemon(now: Double, why: String) {
        nextReport = now + DaemonTiming.retrySeconds
        guard !lost else { return }
        lost = true
        say("jobgov daemon at \(path ?? "?") is out of reach (\(why)); keeping the share of "
            + "\(MemorySize.format(share ?? aloneBudget)) and trying again every \(Int(DaemonTiming.retrySeconds)) s")
    }

    /// At the end: tells the daemon the build is done, so that its share is free at once (a daemon that does not
    /// hear it finds out within `DaemonTiming.staleSeconds`).
    func leave() {
        exchange?.close()
        exchange = nil
        guard let path, !lost else { return }
        _ = try? ControlClient.sendLine(DaemonRequest.leave.line, to: path, timeoutMilliseconds: 200, unreachableHint: "")
    }
}

extension BuildSupervisor {
    /// Joins a listening `jobgov daemon` (governed builds only: a fixed job count has no budget to share).
    /// Returns the start line's note, or nil when the build runs alone.
    func setUpDaemon(controlPath: String) -> String? {
        guard let governing, let budget, let choices = options.governor, choices.daemon else { return nil }
        let paths = DaemonSocketPath.candidates(explicit: choices.daemonSocket, environment: options.environment)
        guard !paths.isEmpty else { return nil }
        let settings = governing.governor.settings
        let link = DaemonLink(paths: paths, aloneBudget: budget.bytes, aloneHardLimit: settings.hardLimit,
                              weight: choices.priority, command: options.plan.argv.joined(separator: " "),
                              cgroup: cgroup?.topDirectories.first ?? "", controlPath: controlPath) { [quiet = options.quiet] in
            if !quiet { note($0) }
        }
        guard let joined = link.join(demand: governing.demand) else { return nil }
        daemon = link
        applyShare()
        ledger.setJobs(governing.initialTarget)
        return joined
    }

    /// Plans with the daemon's last shares: of the memory budget, and of the CPUs for the CPU rule.
    func applyShare() {
        guard let daemon, let governing else { return }
        let limits = daemon.limits(forShare: daemon.share ?? daemon.aloneBudget)
        governing.setBudget(limits.budget, hardLimit: limits.hardLimit)
        governing.setCPUShare(daemon.cpuShare)
        governing.setYieldsToOlderBuild(daemon.yields)
    }

    /// The daemon's two sources in the build's loop: the report timer and the reply.
    func watchDaemon(_ loop: EventLoop) {
        guard let daemon, let governing else { return }
        loop.every("daemon report", interval: { DaemonTiming.reportSeconds / 2 }) { [unowned self] now in
            let yielded = daemon.yields
            daemon.report(now: now, demand: { governing.demand }, cpuUsed: { [unowned self] in kernel?.ownCPUsUsed })
            if daemon.yields != yielded { applyShare() }
        }
        loop.watch("daemon reply", events: Int16(POLLIN), descriptors: { daemon.pollDescriptors }) { [unowned self] _, _ in
            let yielded = daemon.yields
            if daemon.readable(now: monotonicSeconds()) || daemon.yields != yielded { applyShare() }
        }
    }
}
