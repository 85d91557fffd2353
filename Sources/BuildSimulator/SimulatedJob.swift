import GovernorRuntime
import JobgovCore

/// How a simulated job's memory grows over its run: the share of its peak it holds at each share of its run.
public enum SimulatedShape: String, CaseIterable, Sendable {
    /// Linear to the peak at the end (what memjob does by default).
    case linear
    /// Concave, as a g++ -O2 compile measured: half the peak at 15% of the run, 90% at 60%.
    case early
    /// The peak within the first 10% of the run, held to the end (a linker that maps its inputs first).
    case plateau
    /// A quarter of the peak for most of the run, the peak in the last 15% (a heavy function late in a file).
    case spike
    /// Steps: a third, two thirds, then the peak.
    case steps

    public func level(at f: Double) -> Double {
        let x = min(1, max(0, f))
        switch self {
        case .linear: return x
        case .early:
            if x < 0.15 { return x / 0.15 * 0.5 }
            if x < 0.6 { return 0.5 + (x - 0.15) / 0.45 * 0.4 }
            return 0.9 + (x - 0.6) / 0.4 * 0.1
        case .plateau: return min(1, x / 0.1)
        case .spike: return x < 0.85 ? min(0.25, x / 0.1 * 0.25) : 0.25 + (x - 0.85) / 0.15 * 0.75
        case .steps: return x < 0.33 ? 0.33 : x < 0.66 ? 0.66 : 1
        }
    }
}

/// One job of a simulated build.
public struct SimulatedJob: Sendable {
    public var command: String
    public var peakBytes: Double
    /// Seconds it takes alone.
    public var seconds: Double
    /// The share of its time spent on a CPU (the rest waits: I/O, sleeping).
    public var cpuShare: Double
    public var shape: SimulatedShape
    /// Indices of the jobs it needs.
    public var inputs: [Int]

    public init(command: String, peakBytes: Double, seconds: Double, cpuShare: Double, shape: SimulatedShape,
                inputs: [Int] = []) {
        self.command = command
        self.peakBytes = peakBytes
        self.seconds = seconds
        self.cpuShare = cpuShare
        self.shape = shape
        self.inputs = inputs
    }
}

/// The build tool that starts the jobs: which ready job next, and whether a killed job fails the build.
public enum SimulatedTool: String, Sendable {
    /// make in the order the makefile lists its targets; under jobgov its recipes run through jobgov-shell, so a
    /// killed job can run again.
    case make
    /// ninja by longest path to the end first; a failed job ends the build.
    case ninja
}

/// A small, fast, seeded generator (SplitMix64): the same seed gives the same build on every machine.
public struct SplitMix: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    public mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
}
