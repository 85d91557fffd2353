/// The build's memory over the next seconds, as the governor plans it.
///
/// A compiler or linker frees everything when it ends, so jobs that started at different times rarely hold their
/// peaks together. Each job is planned from what it holds now along its measured memory shape (the upper envelope of
/// the curve the same command showed before) to its expected end, and gone after that; a job whose shape is not
/// known is held at its full peak until its end, and a job whose end is not known (never measured, or running past
/// what it took before) is held at its peak throughout, which is the plain sum of peaks (Buck2's rule). Every
/// item's memory only grows until its end, so the build's highest point is at one of the ends.
public struct MemoryPlan: Sendable {
    public struct Item: Sendable, Equatable {
        /// Memory now, bytes.
        public var bytes: Double
        /// Memory at its peak.
        public var peakBytes: Double
        /// When it is expected to end (seconds, on the plan's clock); nil: never, for the plan.
        public var endsAt: Double?
        /// How it grows: its measured shape, how long it has run and how long it runs in all (seconds, frozen time
        /// not counted). Without all three it is held at its peak.
        public var shape: MemoryShape?
        public var ranSeconds: Double
        public var runSeconds: Double?

        public init(bytes: Double, peakBytes: Double, endsAt: Double?, shape: MemoryShape? = nil,
                    ranSeconds: Double = 0, runSeconds: Double? = nil) {
            self.bytes = bytes
            self.peakBytes = max(bytes, peakBytes)
            self.endsAt = endsAt
            self.shape = shape
            self.ranSeconds = ranSeconds
            self.runSeconds = runSeconds
        }

        /// Growth is planned this much faster than the shape was measured, as the end is planned later than
        /// measured: a job that ran under contention before may run alone now, and the reverse.
        public static let growthSpeedup = 1.5

        /// Its memory at time `t` of a plan made at `now`.
        func bytes(at t: Double, now: Double) -> Double {
            if let end = endsAt, t > end, end > now || t > now { return 0 }
            guard let shape, let run = runSeconds, run > 0 else { return peakBytes }
            let fraction = (ranSeconds + max(0, t - now) * Self.growthSpeedup) / run
            return max(bytes, peakBytes * shape.level(at: fraction))
        }
    }

    public let now: Double
    /// Memory outside the planned jobs (the jobserver client, page cache, frozen jobs), held as it is.
    public private(set) var baseBytes: Double
    public private(set) var items: [Item] = []
    /// The times the build's memory may peak at (now and each end), with the planned total there.
    private var points: [(time: Double, total: Double)]

    public init(now: Double, baseBytes: Double) {
        self.now = now
        self.baseBytes = baseBytes
        // A job with no planned end is counted at its peak once it has grown there; `infinity` is that point.
        self.points = [(now, baseBytes), (.infinity, baseBytes)]
    }

    public init(now: Double, baseBytes: Double, items: [Item]) {
        self.init(now: now, baseBytes: baseBytes)
        for item in items { add(item) }
    }

    /// The most memory the build is expected to hold from now on.
    public var peakBytes: Double { points.map(\.total).max() ?? baseBytes }

    /// Adds a job. `fromBase` is memory of it already counted in the base (a frozen job being thawed).
    public mutating func add(_ item: Item, fromBase: Double = 0) {
        baseBytes -= fromBase
        for k in points.indices { points[k].total += item.bytes(at: points[k].time, now: now) - fromBase }
        items.append(item)
        if let end = item.endsAt, end > now, !points.contains(where: { $0.time == end }) {
            points.append((end, items.reduce(baseBytes) { $0 + $1.bytes(at: end, now: now) }))
        }
    }

    public func adding(_ item: Item, fromBase: Double = 0) -> MemoryPlan {
        var copy = self
        copy.add(item, fromBase: fromBase)
        return copy
    }
}
