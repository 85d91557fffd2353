/// Who sent a request, as the kernel says (`SO_PEERCRED`).
public struct PeerCredentials: Equatable, Sendable {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32
    public init(pid: Int32, uid: UInt32, gid: UInt32) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
    }
    public var isRoot: Bool { uid == 0 }

    /// The supplementary groups in a /proc/PID/status text (its `Groups:` line), which `SO_PEERCRED` leaves out.
    public static func supplementaryGroups(procStatus: String) -> [UInt32] {
        for line in procStatus.split(separator: "\n") where line.hasPrefix("Groups:") {
            return line.dropFirst("Groups:".count).split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap { UInt32($0) }
        }
        return []
    }
}

/// The builds a `jobgov daemon` serves and their shares: answers each request, given who sent it. Pure (the clock is
/// the caller's); the daemon's socket code turns lines into requests and replies into lines.
///
/// A build is its jobgov process: it is known by the pid its connection's credentials give, so a report can only
/// speak for the process that sends it. A user sees and changes only their own builds; root sees and changes all.
public struct DaemonRegistry: Sendable {
    public struct Entry: Sendable, Equatable {
        public var report: BuildReport
        public var uid: UInt32
        public var joinedAt: Double
        public var reportedAt: Double
    }

    public private(set) var sharing: BudgetSharing
    public let budgetSource: String
    public private(set) var builds: [Int32: Entry] = [:]
    /// The CPUs shared between the builds (nil: none shared; each build's CPU rule counts all of them).
    public let cpus: Double?
    /// Each build's share of them, from the last division.
    public private(set) var cpuShares: [String: Double] = [:]
    /// The builds that must yield to older ones, from the last division (`BudgetSharing.yielding`).
    public private(set) var yielding: Set<String> = []
    /// At most this many builds at once; further ones are refused (and run alone on their own budget).
    public var maximumBuilds = 256

    /// - Parameter startedAt: when the daemon started (the caller's clock): builds of a daemon before it may be on
    ///   their way back for `DaemonTiming.rejoinSeconds`.
    public init(budget: UInt64, budgetSource: String, cpus: Double? = nil, startedAt: Double = -.infinity) {
        self.cpus = cpus.map { max(1, $0) }
        sharing = BudgetSharing(budget: budget)
        sharing.holdRises(until: startedAt + DaemonTiming.rejoinSeconds)
        self.budgetSource = budgetSource
    }

    public var budget: UInt64 { sharing.budget }

    /// The reply line to `request` from `peer` at time `now`, and whether the set of builds changed (for a log line).
    public mutating func respond(to request: Result<DaemonRequest, ControlProtocolError>, from peer: PeerCredentials,
                                 now: Double) -> (reply: String, joined: Bool, left: Bool) {
        switch request {
        case .failure(let error):
            return ("error \(error.message)", false, false)
        case .success(.report(var report)):
            guard report.pid == peer.pid else {
                return ("error a build reports for itself: pid \(report.pid) is not the sender (\(peer.pid))", false, false)
            }
            let joined = builds[peer.pid] == nil
            if joined && builds.count >= maximumBuilds {
                return ("error the daemon serves \(maximumBuilds) builds already; run this one alone", false, false)
            }
            report.weight = min(max(report.weight, BuildReport.weights.lowerBound), BuildReport.weights.upperBound)
            // No claim past the whole budget: one client's numbers cannot overflow the division.
            let d = report.demand
            report.demand = BuildDemand(heldBytes: min(d.heldBytes, budget), floorBytes: min(d.floorBytes, budget),
                                        needBytes: min(d.needBytes, budget), wantBytes: min(d.wantBytes, budget),
                                        runningJobs: d.runningJobs, frozenJobs: d.frozenJobs)
            if let old = builds[peer.pid] {
                // A weight set with `priority` holds over what the build itself keeps reporting.
                report.weight = old.report.weight
            } else if let had = report.shareBytes {
                sharing.adopt(String(peer.pid), share: had, now: now)
            }
            builds[peer.pid] = Entry(report: report, uid: peer.uid, joinedAt: builds[peer.pid]?.joinedAt ?? now,
                                     reportedAt: now)
            let shares = divide(now: now)
            let reply = ShareReply(shareBytes: shares[String(peer.pid)] ?? 0, budgetBytes: budget, builds: builds.count,
                                   cpus: cpuShares[String(peer.pid)],
                                   yield: yielding.contains(String(peer.pid)) ? true : nil)
            return ("share " + DaemonJSON.encode(reply), joined, false)
        case .success(.leave):
            guard builds.removeValue(forKey: peer.pid) != nil else { return ("error not a build of this daemon", false, false) }
            _ = divide(now: now)
            return ("ok", false, true)
        case .success(.builds):
            return (DaemonJSON.encode(status(for: peer, now: now)), false, false)
        case .success(.cgroup):
            // The daemon's socket code answers this itself when it makes cgroups (`--cgroups`).
            return ("error this daemon makes no cgroups for builds (start it with --cgroups)", false, false)
        case .success(.priority(let pid, let weight)):
            guard var entry = builds[pid], peer.isRoot || entry.uid == peer.uid else {
                // Someone else's build is reported as absent, not as forbidden: a user learns nothing of it.
                return ("error no build of yours has pid \(pid); `jobgov daemon --status` lists them", false, false)
            }
            entry.report.weight = weight
            builds[pid] = entry
            _ = divide(now: now)
            return ("ok weight=\(weight)", false, false)
        }
    }

    /// What `peer` may see: its own builds, or all for root.
    public func status(for peer: PeerCredentials, now: Double) -> DaemonStatus {
        let visible = builds.values.filter { peer.isRoot || $0.uid == peer.uid }
            .sorted { ($0.report.startedAt, $0.report.pid) < ($1.report.startedAt, $1.report.pid) }
        return DaemonStatus(budgetBytes: budget, budgetSource: budgetSource, cpus: cpus, builds: visible.map { e in
            DaemonBuild(pid: e.report.pid, uid: e.uid, command: e.report.command, cgroup: e.report.cgroup,
                        weight: e.report.weight, shareBytes: sharing.shares[String(e.report.pid)] ?? 0,
                        demand: e.report.demand, joinedSecondsAgo: now - e.joinedAt,
                        reportedSecondsAgo: now - e.reportedAt, cpuShare: cpuShares[String(e.report.pid)],
                        cpuUsed: e.report.cpuUsed, control: e.report.control)
        })
    }

    /// Forgets builds that stopped reporting for `DaemonTiming.staleSeconds` or whose process is gone; returns their pids.
    public mutating func expire(now: Double, isAlive: (Int32) -> Bool) -> [Int32] {
        let gone = builds.values.filter { now - $0.reportedAt > DaemonTiming.staleSeconds || !isAlive($0.report.pid) }
            .map(\.report.pid)
        for pid in gone { builds[pid] = nil }
        if !gone.isEmpty { _ = divide(now: now) }
        return gone.sorted()
    }

    private mutating func divide(now: Double) -> [String: UInt64] {
        let claims = builds.values.map {
            BudgetSharing.Claim(id: String($0.report.pid), startedAt: $0.report.startedAt, weight: $0.report.weight,
                                demand: $0.report.demand,
                                cap: $0.report.aloneBudgetBytes > 0 ? $0.report.aloneBudgetBytes : .max)
        }
        yielding = BudgetSharing.yielding(budget: budget, claims: claims)
        if let cpus {
            cpuShares = CPUSharing.divide(cpus: cpus, claims: builds.values.map {
                CPUSharing.Claim(id: String($0.report.pid), weight: $0.report.weight, used: $0.report.cpuUsed)
            })
        }
        return sharing.divide(claims, now: now)
    }
}
