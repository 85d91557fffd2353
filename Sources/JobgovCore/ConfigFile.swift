/// jobgov's config file: `key = value` lines, `#` comments, keys named like `jobgov run`'s long options.
public enum ConfigFile {
    public static let keys: Set<String> = [
        "memory-threshold", "freeze-threshold", "cpu-threshold", "io-latency", "fixed-jobs", "no-history", "no-rerun",
        "no-swap", "trace-events",
    ]

    public static func parse(_ text: String, path: String) throws(CommandLineError) -> [String: String] {
        var out: [String: String] = [:]
        for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let trimmed = String(line).trimmingWhitespace()
            if trimmed.isEmpty { continue }
            guard let eq = trimmed.firstIndex(of: "=") else {
                throw .conflict("\(path):\(number + 1): expected `key = value`, found \"\(trimmed)\"")
            }
            let key = String(trimmed[..<eq]).trimmingWhitespace()
            let value = String(trimmed[trimmed.index(after: eq)...]).trimmingWhitespace()
            guard keys.contains(key) else {
                throw .conflict("\(path):\(number + 1): unknown key \"\(key)\"; known keys: \(keys.sorted().joined(separator: ", "))")
            }
            if ["fixed-jobs", "no-history", "no-rerun", "no-swap"].contains(key), value != "true" && value != "false" {
                throw .conflict("\(path):\(number + 1): \(key) is true or false, not \"\(value)\"")
            }
            out[key] = value
        }
        return out
    }

    /// `85` or `85%` (a bare number is a percentage): above 0, at most 100.
    public static func percent(_ text: String, option: String) throws(CommandLineError) -> Double {
        let s = text.trimmingWhitespace()
        guard let p = Double(s.hasSuffix("%") ? String(s.dropLast()) : s), p > 0, p <= 100 else {
            throw .invalidSize(option: option, value: text, reason: "expected a percentage above 0 and at most 100, such as 85")
        }
        return p / 100
    }

    public static func milliseconds(_ text: String, option: String) throws(CommandLineError) -> Double {
        let s = text.trimmingWhitespace()
        guard let ms = Double(s.hasSuffix("ms") ? String(s.dropLast(2)) : s), ms > 0, ms <= 600_000 else {
            throw .invalidSize(option: option, value: text, reason: "expected milliseconds above 0, such as 100")
        }
        return ms
    }
}
