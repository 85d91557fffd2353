/// Option values other than job counts and sizes, parsed from the text the user typed, so that a mistake gets a
/// message that says what to give (ArgumentParser alone says only that a value is invalid or, for a negative
/// number, that it is missing: `-5` looks like an option to it).
public enum OptionValues {
    /// `--pid`: the process id of a running jobgov.
    public static func processID(_ text: String, option: String) throws(CommandLineError) -> Int32 {
        guard let pid = Int32(text.trimmingWhitespace()), pid >= 1 else {
            throw .invalidValue(option: option, value: text,
                                reason: "give the process id of a running jobgov, a whole number above 0 "
                                    + "(`pgrep -a jobgov` lists them)")
        }
        return pid
    }

    /// Seconds as a decimal number within `range`, e.g. `monitor --interval 0.5`.
    public static func seconds(_ text: String, option: String, range: ClosedRange<Double>) throws(CommandLineError) -> Double {
        let s = text.trimmingWhitespace()
        guard let value = Double(s.hasSuffix("s") ? String(s.dropLast()) : s), value.isFinite, range.contains(value) else {
            throw .invalidValue(option: option, value: text,
                                reason: "give seconds from \(trimmed(range.lowerBound)) to \(trimmed(range.upperBound)), e.g. 0.5")
        }
        return value
    }

    /// A whole number of at least 1, e.g. `monitor --count 10` (`what` names what is counted).
    public static func positiveCount(_ text: String, option: String, what: String) throws(CommandLineError) -> Int {
        guard let n = Int(text.trimmingWhitespace()) else {
            throw .invalidValue(option: option, value: text, reason: "give a whole number of \(what), e.g. 10")
        }
        guard n >= 1 else {
            throw .invalidValue(option: option, value: text, reason: "the count must be at least 1")
        }
        return n
    }

    /// `--cpu-max`: CPUs as a decimal number, at least 0.01 (1% of one CPU) and at most `maximum`.
    public static func cpus(_ text: String, option: String, maximum: Int) throws(CommandLineError) -> Double {
        guard let cpus = Double(text.trimmingWhitespace()), cpus.isFinite, cpus >= 0.01, cpus <= Double(maximum) else {
            throw .invalidValue(option: option, value: text,
                                reason: "give a number of CPUs from 0.01 to \(maximum), such as 1.5")
        }
        return cpus
    }

    /// The option the user probably meant by an unknown one: the only known option it begins (`--summary` for
    /// `--summary-json`), else the nearest within two typing mistakes (`--memory-budge`, `--no-swp`), else nil.
    /// A value joined with `=` is ignored.
    public static func suggestion(for typed: String, among known: [String]) -> String? {
        let name = String(typed.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
        guard name.hasPrefix("-"), name.count > 1 else { return nil }
        if name.hasPrefix("--"), name.count > 3 {
            let extending = known.filter { $0.hasPrefix(name) && $0 != name }
            if extending.count == 1 { return extending[0] }
        }
        let scored = known.map { ($0, editDistance(name, $0)) }.filter { $0.1 <= 2 && $0.1 < name.count - 1 }
        return scored.min { $0.1 < $1.1 }?.0
    }

    /// Levenshtein distance (insertions, deletions and substitutions) between two short strings.
    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a.utf8), b = Array(b.utf8)
        if a.isEmpty { return b.count }
        var row = Array(0...b.count)
        for i in 1...a.count {
            var diagonal = row[0]
            row[0] = i
            for j in stride(from: 1, through: b.count, by: 1) {
                let above = row[j]
                row[j] = min(above + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1))
                diagonal = above
            }
        }
        return row[b.count]
    }

    /// `0.05`, `3600`: a bound as people write it.
    private static func trimmed(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(value)
    }
}
