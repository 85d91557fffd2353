/// How a job's memory grew over its run, as measured: the share of its run time (frozen time not counted) at which
/// it first held 25%, 50%, 75%, 90% and 100% of its peak.
///
/// Compilers are concave (a g++ -O2 compile measured here held half its peak at 16% of its run), linkers map their
/// inputs first and plateau, some jobs spike at the end. None of that is assumed: the history keeps each command's
/// measured shape, and a job whose shape is not known is planned at its full peak from start to end.
public struct MemoryShape: Sendable, Equatable, CustomStringConvertible {
    /// The levels whose first reach is recorded, as shares of the peak.
    public static let levels: [Double] = [0.25, 0.5, 0.75, 0.9, 1.0]
    /// For each level, the share of the run (0...1) by which the job first held it; nondecreasing.
    public private(set) var reach: [Double]

    public init?(reach: [Double]) {
        guard reach.count == Self.levels.count, reach.allSatisfy({ $0.isFinite }) else { return nil }
        var clean: [Double] = []
        for r in reach { clean.append(min(1, max(clean.last ?? 0, r))) }
        self.reach = clean
    }

    /// The most a job of this shape holds at `fraction` of its run, as a share of its peak: an upper envelope (a step
    /// up to the next level at the moment the previous one was first reached), never an interpolation that could
    /// be below what the job really held.
    public func level(at fraction: Double) -> Double {
        for (i, r) in reach.enumerated() where fraction < r {
            return Self.levels[i]
        }
        return 1
    }

    /// The shape a job showed, from readings of its run: (seconds run, memory held) in time order, and its peak
    /// (the exact high-water mark from the kernel, which may be above every reading: then the peak is taken to have
    /// come at the end). Nil when the run was too short or too coarsely read to tell anything.
    public static func measured(_ readings: [(seconds: Double, bytes: UInt64)], peak: UInt64,
                                runSeconds: Double) -> MemoryShape? {
        guard runSeconds > 0, peak > 0, readings.count >= 2 else { return nil }
        var reach: [Double] = []
        for level in levels {
            let threshold = UInt64(Double(peak) * level * 0.98)
            let first = readings.first { $0.bytes >= threshold }?.seconds ?? runSeconds
            reach.append(first / runSeconds)
        }
        return MemoryShape(reach: reach)
    }

    /// Combines two measurements of the same command: for each level the earlier reach, so that the plan is never
    /// surprised by the faster of two runs.
    public func merged(with other: MemoryShape) -> MemoryShape {
        MemoryShape(reach: zip(reach, other.reach).map { min($0, $1) })!
    }

    /// `0.12,0.2,0.4,0.61,0.9`: the history file's field.
    public var description: String {
        reach.map { String(Double(Int(($0 * 1000).rounded())) / 1000) }.joined(separator: ",")
    }

    public init?(parsing text: Substring) {
        let parts = text.split(separator: ",").compactMap { Double($0) }
        guard parts.count == Self.levels.count else { return nil }
        self.init(reach: parts)
    }
}
