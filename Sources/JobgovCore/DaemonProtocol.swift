#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The line protocol of `jobgov daemon`'s socket, on the control socket's framing (one request line, one reply line
/// per connection; see `ControlServer`). The peer is known by its credentials (`SO_PEERCRED`), never by what it says:
///
///     report {"pid":…,"demand":{…},…}   → share {"share_bytes":…,"budget_bytes":…,"builds":N}
///     leave                             → ok
///     builds                            → {"budget_bytes":…,"builds":[{…},…]}   (yours; root sees all)
///     priority PID W                    → ok weight=W
///     cgroup                            → cgroup {"unified":…,"memory":…}   (`jobgov daemon --cgroups` only)
///     anything else                     → error <message>
public enum DaemonRequest: Equatable, Sendable {
    case report(BuildReport)
    case leave
    case builds
    case priority(pid: Int32, weight: Int)
    /// A cgroup for the sender's process, which cannot make one itself (see `CgroupGrant`).
    case cgroup

    /// Requests longer than this are refused: a report is a few hundred bytes.
    public static let maximumBytes = 16 << 10

    public static func parse(_ line: String) -> Result<DaemonRequest, ControlProtocolError> {
        guard line.utf8.count <= maximumBytes else {
            return .failure(ControlProtocolError(message: "request longer than \(maximumBytes) bytes"))
        }
        let words = line.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        switch words.first {
        case "report" where words.count == 2:
            do {
                let report = try JSONDecoder().decode(BuildReport.self, from: Data(words[1].utf8))
                guard report.pid > 0 else { return .failure(ControlProtocolError(message: "report: pid must be positive")) }
                return .success(.report(report))
            } catch {
                return .failure(ControlProtocolError(message: "report: not a build report (\(Self.reason(error)))"))
            }
        case "leave" where words.count == 1:
            return .success(.leave)
        case "builds" where words.count == 1:
            return .success(.builds)
        case "cgroup" where words.count == 1:
            return .success(.cgroup)
        case "priority" where words.count == 2:
            let args = words[1].split(separator: " ")
            guard args.count == 2, let pid = Int32(args[0]), pid > 0, let weight = Int(args[1]),
                  BuildReport.weights.contains(weight) else {
                return .failure(ControlProtocolError(message:
                    "priority takes a build's process id and a weight from \(BuildReport.weights.lowerBound) to \(BuildReport.weights.upperBound)"))
            }
            return .success(.priority(pid: pid, weight: weight))
        default:
            let shown = line.count > 60 ? String(line.prefix(60)) + "…" : line
            return .failure(ControlProtocolError(message:
                "unknown request '\(shown)'; expected 'report JSON', 'leave', 'builds', 'priority PID WEIGHT' or 'cgroup'"))
        }
    }

    public var line: String {
        switch self {
        case .report(let r): return "report " + DaemonJSON.encode(r)
        case .leave: return "leave"
        case .builds: return "builds"
        case .priority(let pid, let weight): return "priority \(pid) \(weight)"
        case .cgroup: return "cgroup"
        }
    }

    private static func reason(_ error: any Error) -> String {
        if case DecodingError.keyNotFound(let key, _) = error { return "no \(key.stringValue)" }
        if case DecodingError.typeMismatch(_, let context) = error {
            return "wrong type at \(context.codingPath.map(\.stringValue).joined(separator: "."))"
        }
        return "bad JSON"
    }
}

/// What a build tells the daemon about itself on every report.
public struct BuildReport: Codable, Equatable, Sendable {
    /// Weights a build may ask for (`jobgov --priority`).
    public static let weights = 1...100
    public static let defaultWeight = 10
    public var pid: Int32
    /// When the build started, in seconds since the epoch: older builds come first.
    public var startedAt: Double
    public var command: String
    /// The build's cgroup (empty without one).
    public var cgroup: String
    public var weight: Int
    /// The budget the build would have alone.
    public var aloneBudgetBytes: UInt64
    public var demand: BuildDemand
    /// The share the build plans with now (nil: none yet). A restarted daemon starts from it, so that the builds
    /// coming back one by one do not find the first of them holding the whole budget.
    public var shareBytes: UInt64?
    /// The CPUs the build used over its last interval, from its own cgroup (nil: it cannot tell apart from the
    /// machine's use). The daemon shares the CPUs by it (`CPUSharing`).
    public var cpuUsed: Double?
    /// The build's control socket (`jobgov ctl`), so that `jobgov ctl --pid` finds a build the daemon serves
    /// wherever its runtime directory is.
    public var control: String?

    public init(pid: Int32, startedAt: Double, command: String, cgroup: String, weight: Int,
                aloneBudgetBytes: UInt64, demand: BuildDemand, shareBytes: UInt64? = nil, cpuUsed: Double? = nil,
                control: String? = nil) {
        self.shareBytes = shareBytes
        self.cpuUsed = cpuUsed
        self.control = control
        self.pid = pid
        self.startedAt = startedAt
        self.command = command
        self.cgroup = cgroup
        self.weight = weight
        self.aloneBudgetBytes = aloneBudgetBytes
        self.demand = demand
    }

    enum CodingKeys: String, CodingKey {
        case pid, command, cgroup, weight, demand
        case startedAt = "started_at", aloneBudgetBytes = "alone_budget_bytes", shareBytes = "share_bytes"
        case cpuUsed = "cpu_used", control
    }
}

/// The daemon's answer to a report.
public struct ShareReply: Codable, Equatable, Sendable {
    public var shareBytes: UInt64
    public var budgetBytes: UInt64
    /// How many builds share the budget now.
    public var builds: Int
    /// The build's share of the CPUs, for its CPU rule (nil from a daemon that does not share them).
    public var cpus: Double?
    /// True when the build must yield to an older one, even its oldest job (`BudgetSharing.yielding`); nil (as
    /// from a daemon that does not say) means no.
    public var yield: Bool?

    public init(shareBytes: UInt64, budgetBytes: UInt64, builds: Int, cpus: Double? = nil, yield: Bool? = nil) {
        self.shareBytes = shareBytes
        self.budgetBytes = budgetBytes
        self.builds = builds
        self.cpus = cpus
        self.yield = yield
    }

    enum CodingKeys: String, CodingKey {
        case shareBytes = "share_bytes", budgetBytes = "budget_bytes", builds, cpus, yield
    }

    /// Reads a reply line: `share {…}`, or `error MESSAGE`.
    public static func parse(_ line: String) throws(ControlProtocolError) -> ShareReply {
        if line.hasPrefix("error ") { throw ControlProtocolError(message: String(line.dropFirst(6))) }
        guard line.hasPrefix("share "),
              let reply = try? JSONDecoder().decode(ShareReply.self, from: Data(line.dropFirst(6).utf8)) else {
            throw ControlProtocolError(message: "not a daemon's reply: \(line.prefix(120))")
        }
        return reply
    }
}

/// The reply to `cgroup`: the directories, one per hierarchy, that `jobgov daemon --cgroups` made for the build
/// and handed to its user (the sender's jobgov process is already in their `supervisor` leaf); the build makes its
/// own cgroup below them.
public struct CgroupGrant: Codable, Equatable, Sendable {
    public var unified: String?
    public var memory: String?
    public var freezer: String?

    public init(unified: String?, memory: String?, freezer: String?) {
        self.unified = unified
        self.memory = memory
        self.freezer = freezer
    }

    public var line: String { "cgroup " + DaemonJSON.encode(self) }

    /// Reads a reply line: `cgroup {…}`, or `error MESSAGE`.
    public static func parse(_ line: String) throws(ControlProtocolError) -> CgroupGrant {
        if line.hasPrefix("error ") { throw ControlProtocolError(message: String(line.dropFirst(6))) }
        guard line.hasPrefix("cgroup "),
              let grant = try? JSONDecoder().decode(CgroupGrant.self, from: Data(line.dropFirst(7).utf8)),
              grant.unified != nil || grant.memory != nil else {
            throw ControlProtocolError(message: "not a daemon's cgroup reply: \(line.prefix(120))")
        }
        return grant
    }
}

/// One build as `builds` lists it (and `jobgov daemon --status` shows it).
public struct DaemonBuild: Codable, Equatable, Sendable {
    public var pid: Int32
    public var uid: UInt32
    public var command: String
    public var cgroup: String
    public var weight: Int
    public var shareBytes: UInt64
    public var demand: BuildDemand
    /// Seconds since the build joined, and since its last report.
    public var joinedSecondsAgo: Double
    public var reportedSecondsAgo: Double
    /// Its share of the CPUs and what it used of them (nil when it cannot tell).
    public var cpuShare: Double?
    public var cpuUsed: Double?
    /// Its control socket, as it reported it (checked by `jobgov ctl` before use: a socket owned by `uid`).
    public var control: String?

    public init(pid: Int32, uid: UInt32, command: String, cgroup: String, weight: Int, shareBytes: UInt64,
                demand: BuildDemand, joinedSecondsAgo: Double, reportedSecondsAgo: Double,
                cpuShare: Double? = nil, cpuUsed: Double? = nil, control: String? = nil) {
        self.control = control
        self.cpuShare = cpuShare
        self.cpuUsed = cpuUsed
        self.pid = pid
        self.uid = uid
        self.command = command
        self.cgroup = cgroup
        self.weight = weight
        self.shareBytes = shareBytes
        self.demand = demand
        self.joinedSecondsAgo = joinedSecondsAgo
        self.reportedSecondsAgo = reportedSecondsAgo
    }

    enum CodingKeys: String, CodingKey {
        case pid, uid, command, cgroup, weight, demand
        case shareBytes = "share_bytes", joinedSecondsAgo = "joined_seconds_ago"
        case reportedSecondsAgo = "reported_seconds_ago", cpuShare = "cpu_share", cpuUsed = "cpu_used", control
    }
}

/// The reply to `builds`.
public struct DaemonStatus: Codable, Equatable, Sendable {
    public var budgetBytes: UInt64
    public var budgetSource: String
    /// The CPUs the daemon shares between the builds.
    public var cpus: Double?
    public var builds: [DaemonBuild]
    /// The pool for plain clients (`jobgov daemon --pool`): its FIFO, its size, the tokens in it now, and how many
    /// were re-created after clients died holding them; nil without one.
    public var pool: Pool?

    public struct Pool: Codable, Equatable, Sendable {
        public var path: String
        public var tokens: Int
        public var free: Int
        public var recreated: Int
        public init(path: String, tokens: Int, free: Int, recreated: Int) {
            self.path = path
            self.tokens = tokens
            self.free = free
            self.recreated = recreated
        }
    }

    public init(budgetBytes: UInt64, budgetSource: String, cpus: Double? = nil, builds: [DaemonBuild], pool: Pool? = nil) {
        self.cpus = cpus
        self.budgetBytes = budgetBytes
        self.budgetSource = budgetSource
        self.builds = builds
        self.pool = pool
    }

    enum CodingKeys: String, CodingKey {
        case budgetBytes = "budget_bytes", budgetSource = "budget_source", cpus, builds, pool
    }

    public static func decode(json: String) throws(ControlProtocolError) -> DaemonStatus {
        if json.hasPrefix("error ") { throw ControlProtocolError(message: String(json.dropFirst(6))) }
        guard let status = try? JSONDecoder().decode(DaemonStatus.self, from: Data(json.utf8)) else {
            throw ControlProtocolError(message: "not a daemon's status: \(json.prefix(120))")
        }
        return status
    }

    /// A table for people: one build a line.
    public var lines: [String] {
        var out = ["budget \(MemorySize.format(budgetBytes)) (\(budgetSource))" + (cpus.map { ", \(Self.cpuText($0)) CPUs" } ?? "")
                   + ", \(builds.count) build\(builds.count == 1 ? "" : "s")"]
        if let pool {
            out.append("pool for plain clients: MAKEFLAGS=--jobserver-auth=fifo:\(pool.path), \(pool.free) of "
                       + "\(pool.tokens) tokens free, \(pool.recreated) re-created")
        }
        if builds.isEmpty { return out }
        out.append("    PID   UID  WEIGHT     SHARE      HELD      NEED      WANT  JOBS  CPU USED/SHARE  COMMAND")
        for b in builds {
            func col(_ s: String, _ w: Int) -> String { String(repeating: " ", count: max(0, w - s.count)) + s }
            let d = b.demand
            out.append(col("\(b.pid)", 7) + col("\(b.uid)", 6) + col("\(b.weight)", 8)
                       + [b.shareBytes, d.heldBytes, d.needBytes, d.wantBytes].map { col(MemorySize.format($0), 10) }.joined()
                       + col("\(d.runningJobs)" + (d.frozenJobs > 0 ? "+\(d.frozenJobs)f" : ""), 6)
                       + col((b.cpuUsed.map(Self.cpuText) ?? "-") + "/" + (b.cpuShare.map(Self.cpuText) ?? "-"), 16)
                       + "  " + b.command)
        }
        return out
    }

    /// One line for `jobgov monitor` in a pipe: the budget, then each build's pid, uid, share, what it holds, needs
    /// and wants, and its jobs running (and frozen).
    public var summary: String {
        var text = "daemon \(MemorySize.format(budgetBytes)), \(builds.count) build\(builds.count == 1 ? "" : "s")"
        for b in builds {
            let d = b.demand
            text += "; \(b.pid) uid \(b.uid) share \(MemorySize.format(b.shareBytes)) held \(MemorySize.format(d.heldBytes))"
                + " need \(MemorySize.format(d.needBytes)) want \(MemorySize.format(d.wantBytes)) jobs \(d.runningJobs)"
                + (d.frozenJobs > 0 ? "+\(d.frozenJobs) frozen" : "")
                + (b.cpuShare.map { " cpus \(b.cpuUsed.map(Self.cpuText) ?? "-")/\(Self.cpuText($0))" } ?? "")
        }
        return text
    }

    /// CPUs with one decimal: "1.5", "0.3".
    static func cpuText(_ cpus: Double) -> String {
        let tenths = Int((cpus * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }
}

/// Encoding for the daemon's replies: one line, sorted keys.
public enum DaemonJSON {
    public static func encode<T: Encodable>(_ value: T) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Nothing here can fail to encode (every number is finite); the fallback only satisfies the type system.
        guard let data = try? encoder.encode(value) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }
}

/// The timing both sides agree on.
public enum DaemonTiming {
    /// A joined build reports (and learns its share) this often.
    public static let reportSeconds = 0.25
    /// A build that has not reported for this long is taken to be gone (its process is also checked).
    public static let staleSeconds = 5.0
    /// A build waits this long for the daemon's reply before it counts the daemon as gone.
    public static let replySeconds = 1.0
    /// After losing the daemon, a build tries again this often.
    public static let retrySeconds = 1.0
    /// A daemon that has just started gives no build more than it had for this long, while the builds of the
    /// daemon before it come back (each within `retrySeconds` and a report).
    public static let rejoinSeconds = 2.0
}
