#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The line protocol spoken on the control socket: one request line, one reply line.
///
///     jobs 6          → ok jobs=6
///     status          → {"pid":123,"jobs":6,...}
///     anything else   → error <message>
public enum ControlRequest: Equatable, Sendable {
    case setJobs(Int)
    case status
    /// Freeze or thaw the whole build's cgroup.
    case freeze
    case thaw
    /// Kill every process of the build (explicit only; jobgov never kills on its own).
    case kill
    /// From jobgov-shell: the recipe it ran (its own pid) failed; may it run again? → go | wait | no REASON.
    /// `rerun PID STATUS` gives the recipe's raw wait status (see `ExitStatus`); `rerun PID` (jobgov-shell before
    /// it asked on every failure, which asked only after a SIGKILL) has none.
    case rerun(Int32, status: ExitStatus? = nil)

    public static func parse(_ line: String) -> Result<ControlRequest, ControlProtocolError> {
        let words = line.split(separator: " ", omittingEmptySubsequences: true)
        switch words.first {
        case "status" where words.count == 1:
            return .success(.status)
        case "freeze" where words.count == 1:
            return .success(.freeze)
        case "thaw" where words.count == 1:
            return .success(.thaw)
        case "kill" where words.count == 1:
            return .success(.kill)
        case "rerun" where words.count == 2 || words.count == 3:
            guard let pid = Int32(words[1]), pid > 0 else {
                return .failure(ControlProtocolError(message: "rerun takes a process id and a wait status"))
            }
            guard words.count == 3 else { return .success(.rerun(pid)) }
            guard let raw = Int32(words[2]), (0...0xffff).contains(raw), let status = ExitStatus(waitStatus: raw) else {
                return .failure(ControlProtocolError(
                    message: "rerun takes a process id and the wait status of an ended process (0-65535)"))
            }
            return .success(.rerun(pid, status: status))
        case "jobs" where words.count == 2:
            do {
                return .success(.setJobs(try JobsRequest.parseCount(String(words[1]), option: "jobs")))
            } catch {
                return .failure(ControlProtocolError(message: error.description))
            }
        default:
            return .failure(ControlProtocolError(
                message: "unknown request '\(line)'; expected 'jobs N', 'status', 'freeze', 'thaw' or 'kill'"))
        }
    }

    public var line: String {
        switch self {
        case .setJobs(let n): return "jobs \(n)"
        case .status: return "status"
        case .freeze: return "freeze"
        case .thaw: return "thaw"
        case .kill: return "kill"
        case .rerun(let pid, nil): return "rerun \(pid)"
        case .rerun(let pid, let status?): return "rerun \(pid) \(status.waitStatus)"
        }
    }
}

public struct ControlProtocolError: Error, Equatable, Sendable {
    public var message: String
    public init(message: String) { self.message = message }
}

/// What `jobgov ctl status` reports about a running build.
public struct PoolStatus: Codable, Equatable, Sendable {
    public var pid: Int32
    public var command: String
    public var style: String
    public var auth: String
    public var jobs: Int
    public var ceiling: Int
    public var tokensCreated: Int
    public var tokensInPool: Int
    public var tokensOutstanding: Int
    public var peakOutstanding: Int
    public var tokensRecreated: Int
    public var tokensAbsorbed: Int
    public var elapsedSeconds: Double
    /// The build's cgroup (v2 directory, or the first v1 one), empty when it has none.
    public var cgroup: String = ""
    /// The v1 memory cgroup of the build on hybrid and v1 machines, empty otherwise.
    public var cgroupV1Memory: String = ""
    public var frozen: Bool = false
    /// The memory budget in bytes, and where it came from ("--memory-budget", "cgroup limit", "total memory").
    public var memoryBudget: UInt64 = 0
    public var memoryBudgetSource: String = ""
    /// How often the kernel's PSI trigger on the build's memory pressure fired.
    public var pressureEvents: Int = 0

    public init(
        pid: Int32, command: String, style: String, auth: String, jobs: Int, ceiling: Int, tokensCreated: Int,
        tokensInPool: Int, tokensOutstanding: Int, peakOutstanding: Int, tokensRecreated: Int, tokensAbsorbed: Int,
        elapsedSeconds: Double
    ) {
        self.pid = pid
        self.command = command
        self.style = style
        self.auth = auth
        self.jobs = jobs
        self.ceiling = ceiling
        self.tokensCreated = tokensCreated
        self.tokensInPool = tokensInPool
        self.tokensOutstanding = tokensOutstanding
        self.peakOutstanding = peakOutstanding
        self.tokensRecreated = tokensRecreated
        self.tokensAbsorbed = tokensAbsorbed
        self.elapsedSeconds = elapsedSeconds
    }

    /// One JSON object on one line; keys are stable for scripts, and sorted (JSONEncoder keeps no other order).
    public var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Milliseconds are plenty for people and scripts, and keep the line short.
        var rounded = self
        rounded.elapsedSeconds = (elapsedSeconds * 1000).rounded() / 1000
        // Nothing here can fail to encode (every number is finite); the fallback only satisfies the type system.
        guard let data = try? encoder.encode(rounded) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    /// Reads a `status` reply (what `jobgov ctl status` and `jobgov monitor --pid` do).
    public static func decode(json: String) throws(ControlProtocolError) -> PoolStatus {
        do {
            return try JSONDecoder().decode(PoolStatus.self, from: Data(json.utf8))
        } catch {
            throw ControlProtocolError(message: "the reply is not a jobgov status (\(error)): \(json.prefix(200))")
        }
    }

    enum CodingKeys: String, CodingKey {
        case pid, command, style, auth, jobs, ceiling
        case tokensCreated = "tokens_created", tokensInPool = "tokens_in_pool"
        case tokensOutstanding = "tokens_outstanding", peakOutstanding = "peak_outstanding"
        case tokensRecreated = "tokens_recreated", tokensAbsorbed = "tokens_absorbed"
        case elapsedSeconds = "elapsed_seconds", cgroup, cgroupV1Memory = "cgroup_v1_memory", frozen
        case memoryBudget = "memory_budget", memoryBudgetSource = "memory_budget_source"
        case pressureEvents = "pressure_events"
    }

    /// The fields from `cgroup` on are optional, so that a reply of a jobgov that does not send them still reads.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            pid: try c.decode(Int32.self, forKey: .pid), command: try c.decode(String.self, forKey: .command),
            style: try c.decode(String.self, forKey: .style), auth: try c.decode(String.self, forKey: .auth),
            jobs: try c.decode(Int.self, forKey: .jobs), ceiling: try c.decode(Int.self, forKey: .ceiling),
            tokensCreated: try c.decode(Int.self, forKey: .tokensCreated),
            tokensInPool: try c.decode(Int.self, forKey: .tokensInPool),
            tokensOutstanding: try c.decode(Int.self, forKey: .tokensOutstanding),
            peakOutstanding: try c.decode(Int.self, forKey: .peakOutstanding),
            tokensRecreated: try c.decode(Int.self, forKey: .tokensRecreated),
            tokensAbsorbed: try c.decode(Int.self, forKey: .tokensAbsorbed),
            elapsedSeconds: try c.decode(Double.self, forKey: .elapsedSeconds))
        cgroup = try c.decodeIfPresent(String.self, forKey: .cgroup) ?? ""
        cgroupV1Memory = try c.decodeIfPresent(String.self, forKey: .cgroupV1Memory) ?? ""
        frozen = try c.decodeIfPresent(Bool.self, forKey: .frozen) ?? false
        memoryBudget = try c.decodeIfPresent(UInt64.self, forKey: .memoryBudget) ?? 0
        memoryBudgetSource = try c.decodeIfPresent(String.self, forKey: .memoryBudgetSource) ?? ""
        pressureEvents = try c.decodeIfPresent(Int.self, forKey: .pressureEvents) ?? 0
    }
}

/// A tiny writer for flat JSON objects, enough for status lines and summaries without Foundation.
public struct JSONObjectWriter: Sendable {
    private var parts: [String] = []
    public init() {}

    public mutating func add(_ key: String, _ value: String) {
        parts.append("\(Self.quote(key)):\(Self.quote(value))")
    }
    public mutating func add(_ key: String, _ value: Int) {
        parts.append("\(Self.quote(key)):\(value)")
    }
    public mutating func add(_ key: String, _ value: Double) {
        let rounded = (value * 1000).rounded() / 1000
        parts.append("\(Self.quote(key)):\(rounded)")
    }
    public mutating func add(_ key: String, _ value: Bool) {
        parts.append("\(Self.quote(key)):\(value)")
    }

    /// An array of objects written by other writers.
    public mutating func add(_ key: String, objects: [JSONObjectWriter]) {
        parts.append("\(Self.quote(key)):[" + objects.map(\.text).joined(separator: ",") + "]")
    }
    public mutating func add(_ key: String, strings: [String]) {
        parts.append("\(Self.quote(key)):[" + strings.map(Self.quote).joined(separator: ",") + "]")
    }

    public var text: String { "{" + parts.joined(separator: ",") + "}" }

    public static func quote(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}

extension String {
    public func trimmingWhitespace() -> String {
        let scalars = unicodeScalars
        guard let start = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
              let end = scalars.lastIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        return String(scalars[start...end])
    }
}
