/// jobgov's config file: `key = value` lines, `#` comments, keys named like `jobgov run`'s long options (the keys,
/// their checks and their messages come from `RunSettings`).
public enum ConfigFile {
    public static var keys: Set<String> { Set(RunSettings.all.map(\.key)).union(FanSettings.configKeys) }

    /// The file's settings by key, each checked where its line is known; typed by `RunSetting.value` where used.
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
            // The fan's keys are `jobgov fan`'s, checked by FanSettings where they are used.
            guard let setting = RunSettings.all.first(where: { $0.key == key }) else {
                out[key] = value
                continue
            }
            guard setting.accepts(value) else {
                throw .conflict("\(path):\(number + 1): \(key) = \(value): \(setting.expected)")
            }
            out[key] = value
        }
        return out
    }
}
