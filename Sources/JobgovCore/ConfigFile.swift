/// jobgov's config file: `key = value` lines, `#` comments, keys named like `jobgov run`'s long options.
public enum ConfigFile {
    public static let keys: Set<String> = Set([
        "memory-threshold", "freeze-threshold", "cpu-threshold", "io-latency", "fixed-jobs", "no-history", "no-rerun",
        "no-swap", "trace-events", "no-boost",
    ]).union(FanSettings.configKeys)

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
            if ["fixed-jobs", "no-history", "no-rerun", "no-swap", "no-boost"].contains(key), value != "true" && value != "false" {
                throw .conflict("\(path):\(number + 1): \(key) is true or false, not \"\(value)\"")
            }
            // Values are checked here, where the line is known, as well as where they are used.
            if key.hasSuffix("-threshold"), percentValue(value) == nil {
                throw .conflict("\(path):\(number + 1): \(key) = \(value): \(percentExpected)")
            }
            if key == "io-latency", millisecondsValue(value) == nil {
                throw .conflict("\(path):\(number + 1): \(key) = \(value): \(millisecondsExpected)")
            }
            out[key] = value
        }
        return out
    }

    /// `85` or `85%` (a bare number is a percentage): above 0, at most 100.
    public static func percent(_ text: String, option: String) throws(CommandLineError) -> Double {
        guard let p = percentValue(text) else {
            throw .invalidValue(option: option, value: text, reason: percentExpected)
        }
        return p
    }

    public static func milliseconds(_ text: String, option: String) throws(CommandLineError) -> Double {
        guard let ms = millisecondsValue(text) else {
            throw .invalidValue(option: option, value: text, reason: millisecondsExpected)
        }
        return ms
    }

    static let percentExpected = "expected a percentage above 0 and at most 100, such as 85"
    static let millisecondsExpected = "expected milliseconds above 0 (at most 600000), such as 100"

    private static func percentValue(_ text: String) -> Double? {
        let s = text.trimmingWhitespace()
        guard let p = Double(s.hasSuffix("%") ? String(s.dropLast()) : s), p > 0, p <= 100 else { return nil }
        return p / 100
    }

    private static func millisecondsValue(_ text: String) -> Double? {
        let s = text.trimmingWhitespace()
        guard let ms = Double(s.hasSuffix("ms") ? String(s.dropLast(2)) : s), ms > 0, ms <= 600_000 else { return nil }
        return ms
    }
}
