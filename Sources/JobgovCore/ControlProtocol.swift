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
    /// `rerun PID STATUS` gives the recipe's raw wait status (exit code << 8, or the signal, | 0x80 for a core);
    /// `rerun PID` (jobgov-shell before it asked on every failure, which asked only after a SIGKILL) has none.
    case rerun(Int32, status: Int32? = nil)

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
            guard let status = Int32(words[2]), (0...0xffff).contains(status) else {
                return .failure(ControlProtocolError(message: "rerun takes a process id and a wait status (0-65535)"))
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
        case .rerun(let pid, let status?): return "rerun \(pid) \(status)"
        }
    }
}

public struct ControlProtocolError: Error, Equatable, Sendable {
    public var message: String
    public init(message: String) { self.message = message }
}

/// What `jobgov ctl status` reports about a running build.
public struct PoolStatus: Equatable, Sendable {
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

    /// One JSON object on one line; keys are stable for scripts.
    public var json: String {
        var w = JSONObjectWriter()
        w.add("pid", Int(pid))
        w.add("command", command)
        w.add("style", style)
        w.add("auth", auth)
        w.add("jobs", jobs)
        w.add("ceiling", ceiling)
        w.add("tokens_created", tokensCreated)
        w.add("tokens_in_pool", tokensInPool)
        w.add("tokens_outstanding", tokensOutstanding)
        w.add("peak_outstanding", peakOutstanding)
        w.add("tokens_recreated", tokensRecreated)
        w.add("tokens_absorbed", tokensAbsorbed)
        w.add("elapsed_seconds", elapsedSeconds)
        w.add("cgroup", cgroup)
        w.add("cgroup_v1_memory", cgroupV1Memory)
        w.add("frozen", frozen)
        w.add("memory_budget", Int(clamping: memoryBudget))
        w.add("memory_budget_source", memoryBudgetSource)
        w.add("pressure_events", pressureEvents)
        return w.text
    }

    /// Reads the fields back from `json` (used by `jobgov ctl status` and the tests).
    public static func parse(json: String) -> [String: String] {
        var fields: [String: String] = [:]
        var body = Substring(json.trimmingWhitespace())
        guard body.first == "{", body.last == "}" else { return fields }
        body = body.dropFirst().dropLast()
        var key = ""
        var current = ""
        var inString = false
        var escaped = false
        var unicodeDigits: String?
        var readingKey = true
        for c in body {
            if inString {
                if var digits = unicodeDigits {
                    digits.append(c)
                    if digits.count == 4 {
                        if let value = UInt32(digits, radix: 16), let scalar = Unicode.Scalar(value) {
                            current.unicodeScalars.append(scalar)
                        }
                        unicodeDigits = nil
                    } else {
                        unicodeDigits = digits
                    }
                    continue
                }
                if escaped {
                    escaped = false
                    switch c {
                    case "n": current.append("\n")
                    case "t": current.append("\t")
                    case "r": current.append("\r")
                    case "u": unicodeDigits = ""
                    default: current.append(c)
                    }
                    continue
                }
                if c == "\\" { escaped = true; continue }
                if c == "\"" { inString = false; continue }
                current.append(c)
                continue
            }
            switch c {
            case "\"": inString = true
            case ":" where readingKey: key = current; current = ""; readingKey = false
            case ",": fields[key] = current; current = ""; readingKey = true
            default: if c != " " { current.append(c) }
            }
        }
        if !readingKey { fields[key] = current }
        return fields
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

/// The exit status jobgov passes on: the build's own, or 128+N when a signal ended it (as shells report it).
public enum BuildExit: Equatable, Sendable {
    case exited(Int32)
    case signaled(Int32)

    public var shellStatus: Int32 {
        switch self {
        case .exited(let code): return code
        case .signaled(let signal): return 128 + signal
        }
    }
}
