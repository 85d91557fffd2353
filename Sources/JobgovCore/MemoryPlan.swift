/// The build's memory over the next seconds, as the governor plans it.
///
/// A compiler or linker grows towards its peak over its life and frees everything when it ends, so jobs that started
/// at different times rarely hold their peaks together. The plan models each job as growing linearly from its memory
/// now to its expected peak at its expected end, and gone after that; the build's highest point is then at one of
/// the jobs' ends. A job whose end is not known (nothing measured yet, or it outgrew its prediction) is held at its
/// peak throughout, which is the plain sum of peaks (Buck2's rule). Freezing remains the backstop for a plan that
/// turns out wrong.
public struct MemoryPlan: Sendable {
    public struct Item: Sendable, Equatable {
        /// Memory now, bytes.
        public var bytes: Double
        /// Memory at its end.
        public var peakBytes: Double
        /// When it is expected to end (seconds, on the plan's clock); nil: never, for the plan.
        public var endsAt: Double?

        public init(bytes: Double, peakBytes: Double, endsAt: Double?) {
            self.bytes = bytes
            self.peakBytes = max(bytes, peakBytes)
            self.endsAt = endsAt
        }

        /// Its memory at time `t` of a plan made at `now`.
        func bytes(at t: Double, now: Double) -> Double {
            guard let end = endsAt else { return peakBytes }
            guard end > now else { return t <= now ? peakBytes : 0 }
            if t > end { return 0 }
            return bytes + (peakBytes - bytes) * max(0, t - now) / (end - now)
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
        self.points = [(now, baseBytes)]
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
