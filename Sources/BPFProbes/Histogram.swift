import CJobgovBPF

/// Which latency histogram.
public enum ProbeHistogram: Sendable, CaseIterable {
    /// Block request issue → completion, every device of the machine.
    case blockIO
    /// Run-queue wait of the build's tasks: woken (or preempted) → running again.
    case runQueue

    var index: UInt32 {
        switch self {
        case .blockIO: UInt32(JG_HIST_BLOCK_IO.rawValue)
        case .runQueue: UInt32(JG_HIST_RUNQ.rawValue)
        }
    }
}

/// A log2 histogram in microseconds: `buckets[i]` counts values in [2^i, 2^(i+1)) µs (bucket 0 also holds 0).
public struct LatencyHistogram: Sendable, Equatable {
    public var buckets: [UInt64]

    public init(buckets: [UInt64]) { self.buckets = buckets }

    public var count: UInt64 { buckets.reduce(0, +) }

    /// Lower bound of bucket `i`, in microseconds.
    public static func lowerBound(_ i: Int) -> UInt64 { i == 0 ? 0 : 1 << UInt64(i) }
    /// Upper bound (exclusive) of bucket `i`, in microseconds.
    public static func upperBound(_ i: Int) -> UInt64 { 1 << UInt64(i + 1) }

    /// How many values were at least `microseconds` (counting whole buckets whose lower bound reaches it).
    public func count(atLeast microseconds: UInt64) -> UInt64 {
        var total: UInt64 = 0
        for (i, n) in buckets.enumerated() where Self.lowerBound(i) >= microseconds { total += n }
        return total
    }

    /// The upper bound (µs) of the bucket holding the `fraction` quantile (0...1); nil when empty.
    public func quantileUpperBound(_ fraction: Double) -> UInt64? {
        let total = count
        guard total > 0 else { return nil }
        let target = UInt64((Double(total) * min(max(fraction, 0), 1)).rounded(.up))
        var seen: UInt64 = 0
        for (i, n) in buckets.enumerated() {
            seen += n
            if seen >= max(target, 1) { return Self.upperBound(i) }
        }
        return Self.upperBound(buckets.count - 1)
    }

    /// What was added since `earlier` (a snapshot of the same histogram); counters never go back.
    public func subtracting(_ earlier: LatencyHistogram) -> LatencyHistogram {
        LatencyHistogram(buckets: zip(buckets, earlier.buckets + Array(repeating: 0, count: max(0, buckets.count - earlier.buckets.count)))
            .map { $0 >= $1 ? $0 - $1 : 0 })
    }
}
