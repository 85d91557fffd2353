/// Sizes as people type them: `8G`, `512M`, `1.5GiB`, `2048` (bytes), or `75%` of a reference amount.
public enum MemorySize {
    public static func parse(_ text: String, option: String, percentOf reference: UInt64?) throws(CommandLineError) -> UInt64 {
        let s = text.trimmingWhitespace()
        if s.hasSuffix("%") {
            guard let reference else {
                throw .invalidSize(option: option, value: text, reason: "a percentage needs a known total")
            }
            guard let p = Double(s.dropLast()), p > 0, p <= 100 else {
                throw .invalidSize(option: option, value: text, reason: "a percentage must be above 0 and at most 100")
            }
            return UInt64(Double(reference) * p / 100)
        }
        var number = Substring(s)
        var multiplier: Double = 1
        let k = 1024.0, m = k * k, g = m * k, t = g * k
        let units: [(String, Double)] = [
            ("TiB", t), ("GiB", g), ("MiB", m), ("KiB", k), ("TB", t), ("GB", g), ("MB", m), ("KB", k),
            ("T", t), ("G", g), ("M", m), ("K", k), ("k", k), ("B", 1),
        ]
        for (suffix, factor) in units where number.hasSuffix(suffix) {
            number = number.dropLast(suffix.count)
            multiplier = factor
            break
        }
        guard let value = Double(number), value.isFinite, value > 0 else {
            throw .invalidSize(option: option, value: text, reason: "expected a size such as 8G, 512M or 75%")
        }
        let bytes = value * multiplier
        guard bytes >= 16 * m else {
            throw .invalidSize(option: option, value: text, reason: "below 16 MiB no build can run")
        }
        guard bytes < t * 1024 * 1024 else {
            throw .invalidSize(option: option, value: text, reason: "too large")
        }
        return UInt64(bytes)
    }

    /// `8.0 GiB`, `512 MiB`: for messages.
    public static func format(_ bytes: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        if unit == 0 { return "\(bytes) B" }
        let tenths = Int((value * 10).rounded())
        return tenths % 10 == 0 ? "\(tenths / 10) \(units[unit])" : "\(tenths / 10).\(tenths % 10) \(units[unit])"
    }

    /// The reserve kept between the budget (where jobgov acts) and the hard limit (where the kernel acts):
    /// a tenth of the budget, at least 64 MiB and at most 1 GiB.
    public static func reserve(forBudget budget: UInt64) -> UInt64 {
        min(max(budget / 10, 64 << 20), 1 << 30)
    }
}

/// The memory a build may use when the user names no budget: what the machine (or the cgroup jobgov runs in) has,
/// less the reserve kept between the budget and the hard limit.
public struct MemoryBudget: Equatable, Sendable {
    /// Kept free below a derived ceiling for jobgov, the build tool and the watchdog.
    public static let overhead: UInt64 = 32 << 20

    public var bytes: UInt64
    /// Where the number came from, for messages: "--memory-budget", "cgroup limit", "total memory".
    public var source: String

    public init(bytes: UInt64, source: String) {
        self.bytes = bytes
        self.source = source
    }

    /// - Parameters:
    ///   - totalMemory: MemTotal.
    ///   - cgroupLimit: the effective limit of jobgov's own cgroup (nil when unlimited).
    public static func derive(totalMemory: UInt64, cgroupLimit: UInt64?) -> MemoryBudget {
        let (ceiling, source): (UInt64, String) =
            if let limit = cgroupLimit, limit < totalMemory { (limit, "cgroup limit") } else { (totalMemory, "total memory") }
        // The build's hard limit (budget + its reserve) must stay below the ceiling with room for jobgov itself, the
        // build tool and the watchdog, which share the ceiling: else the outer cgroup's OOM killer acts first.
        let room = overhead + MemorySize.reserve(forBudget: ceiling)
        return MemoryBudget(bytes: ceiling > 2 * room ? ceiling - room : ceiling / 2, source: source)
    }
}
