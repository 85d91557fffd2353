#if canImport(Glibc)
import Glibc
#endif
import GovernorRuntime
import JobgovCore

/// A random build to simulate, drawn from a seed: compiles of many sizes and shapes, then links that need some of
/// them, in a cgroup with a budget and a hard limit a reserve above it.
public struct Scenario: Sendable, CustomStringConvertible {
    /// What the jobs' memory curves are drawn from.
    public enum Family: String, CaseIterable, Sendable {
        case linear, early, plateau, spike, steps, mixed

        func draw(_ rng: inout SplitMix) -> SimulatedShape {
            switch self {
            case .linear: .linear
            case .early: .early
            case .plateau: .plateau
            case .spike: .spike
            case .steps: .steps
            case .mixed: SimulatedShape.allCases[Int(rng.next() % UInt64(SimulatedShape.allCases.count))]
            }
        }
    }

    public var seed: UInt64
    public var family: Family
    public var tool: SimulatedTool
    public var jobs: [SimulatedJob]
    public var budget: UInt64
    public var hardLimit: UInt64
    public var cpus = 2
    public var maxJobs: Int

    public static let mib = 1_048_576.0

    public init(seed: UInt64, family: Family, tool: SimulatedTool, jobs: [SimulatedJob], budget: UInt64,
                hardLimit: UInt64, cpus: Int = 2, maxJobs: Int) {
        self.seed = seed
        self.family = family
        self.tool = tool
        self.jobs = jobs
        self.budget = budget
        self.hardLimit = hardLimit
        self.cpus = cpus
        self.maxJobs = maxJobs
    }

    /// - Parameter tree: which tree's sizes to draw; builds with the same `tree` but other seeds have the same job
    ///   names with other sizes, shapes and durations (a history from another tree).
    public static func random(seed: UInt64, family: Family? = nil, tool: SimulatedTool? = nil,
                              variant: UInt64 = 0) -> Scenario {
        var rng = SplitMix(seed: seed &* 0x2545_F491_4F6C_DD1D ^ variant)
        let family = family ?? Family.allCases[Int(rng.next() % UInt64(Family.allCases.count))]
        let tool = tool ?? (rng.next() % 2 == 0 ? .make : .ninja)
        let budget = 1000.0 * mib
        let hard = budget + Double(MemorySize.reserve(forBudget: UInt64(budget)))
        let compiles = 6 + Int(rng.next() % 22)
        // Heavier or lighter trees: the median compile from a twelfth to a third of the budget.
        let median = budget * (1.0 / 12 + rng.unit() * (1.0 / 3 - 1.0 / 12))
        var jobs: [SimulatedJob] = []
        for i in 0..<compiles {
            let gauss = (rng.unit() + rng.unit() + rng.unit() - 1.5) * 1.4
            let peak = min(max(median * exp(0.5 * gauss), 16 * mib), 0.8 * budget)
            jobs.append(SimulatedJob(command: "c++ -O2 -c src/f\(i).cc", peakBytes: peak,
                                     seconds: 0.5 + rng.unit() * 5.5, cpuShare: 0.1 + rng.unit() * 0.8,
                                     shape: family.draw(&rng)))
        }
        let links = 1 + Int(rng.next() % 3)
        for k in 0..<links {
            // Each fits alone under the hard limit, with the build tool's own memory.
            let peak = budget * (0.3 + rng.unit() * 0.6)
            var inputs: [Int] = []
            for i in 0..<compiles where rng.next() % 3 == 0 || k == links - 1 { inputs.append(i) }
            jobs.append(SimulatedJob(command: "c++ -o bin/app\(k) ...", peakBytes: peak, seconds: 1 + rng.unit() * 3,
                                     cpuShare: 0.3 + rng.unit() * 0.5,
                                     shape: family == .mixed ? .plateau : family.draw(&rng), inputs: inputs))
        }
        let maxJobs = [4, 8, 12, 16][Int(rng.next() % 4)]
        return Scenario(seed: seed, family: family, tool: tool, jobs: jobs, budget: UInt64(budget),
                        hardLimit: UInt64(hard), maxJobs: maxJobs)
    }

    /// Every job fits when the jobs run one at a time.
    public var fitsAlone: Bool { jobs.allSatisfy { $0.peakBytes + 16 * Self.mib <= Double(hardLimit) } }

    public var description: String {
        "seed \(seed) (\(family.rawValue), \(tool.rawValue) -j\(maxJobs), \(jobs.count) jobs, budget \(MemorySize.format(budget)))"
    }

    /// Changes to the settings for every simulated run (`jobgov-simulate --set`), to compare controllers.
    nonisolated(unsafe) public static var tweak: (inout GovernorSettings) -> Void = { _ in }

    /// Settings as `jobgov run` makes them for this build.
    public func settings(swap: Bool) -> GovernorSettings {
        var s = GovernorSettings(maxJobs: maxJobs, budget: budget, cpus: cpus, hardLimit: hardLimit)
        s.priorJobPeakBytes = MemoryModel.defaultPrior(budget: budget, cpus: cpus)
        s.canPageOut = swap
        s.canEvict = tool == .make
        s.slowStart = !s.canPageOut && !s.canEvict
        Self.tweak(&s)
        return s
    }

    /// Runs it under the governor's loop.
    public func simulate(history: MemoryHistoryFormat.Contents = .init(), swap: Bool = false, jitter: Double = 0,
                         runSeed: UInt64 = 0, timeLimit: Double? = nil,
                         log: ((String) -> Void)? = nil) -> SimulatedBuild.Outcome {
        let build = SimulatedBuild(jobs: jobs, tool: tool, cpus: cpus, hardLimit: Double(hardLimit), swap: swap,
                                   seed: seed ^ runSeed, durationJitter: jitter)
        let loop = BuildGovernor(options: .init(settings: settings(swap: swap), history: history), sensor: build,
                                actuator: build) { message in log?("\(Int(build.now * 10)) \(message)") }
        if let log { loop.trace = { log("\(Int(build.now * 10)) \(build.memoryLine) \($0)") } }
        loop.launchedPID = 10
        build.loop = loop
        return build.run(timeLimit: timeLimit ?? self.timeLimit)
    }

    /// Bounded progress: the jobs one at a time take `serialSeconds`; a build that takes longer than twice that plus a
    /// minute is taken to be stuck.
    public var timeLimit: Double { 2 * serialSeconds * 1.5 + 60 }
    public var serialSeconds: Double { jobs.reduce(0) { $0 + $1.seconds } }

    /// The makespan of a clairvoyant scheduler given the same budget: it knows every job's true peak and duration
    /// and starts a ready job (in the tool's order) whenever the true peaks of the running jobs and its own fit in
    /// the budget (or it would run alone). Same CPU model as the simulated build, no governor, no tick delay beyond
    /// the simulator's step. `clairvoyantMakespanAtHardLimit` gives it the reserve too.
    public var clairvoyantMakespan: Double { clairvoyant(limit: Double(budget)) }
    public var clairvoyantMakespanAtHardLimit: Double { clairvoyant(limit: Double(hardLimit) - 8 * Self.mib) }

    func clairvoyant(limit: Double) -> Double {
        let order = SimulatedBuild.order(jobs, tool: tool)
        var done = Array(repeating: false, count: jobs.count)
        var started = Array(repeating: false, count: jobs.count)
        var progress: [Int: Double] = [:]
        var t = 0.0
        let dt = 0.1
        while done.contains(false) && t < 1e5 {
            var held = progress.keys.sorted().reduce(0.0) { $0 + jobs[$1].peakBytes }
            for i in order where !started[i] && progress.count < maxJobs && jobs[i].inputs.allSatisfy({ done[$0] }) {
                guard held + jobs[i].peakBytes <= limit || progress.isEmpty else { continue }
                started[i] = true
                progress[i] = 0
                held += jobs[i].peakBytes
            }
            _ = step(&progress, done: &done, lengths: jobs.map(\.seconds), dt: dt)
            t += dt
        }
        return t
    }

    /// Moves the jobs in `progress` (index: seconds of work done) on by `dt`, sharing the CPUs as the simulated
    /// build does; a job that reaches its length leaves `progress` and is marked in `done`. Returns each job's
    /// progress after the step (at most its length).
    func step(_ progress: inout [Int: Double], done: inout [Bool], lengths: [Double], dt: Double) -> [(Int, Double)] {
        let demand = progress.keys.sorted().reduce(0.0) { $0 + jobs[$1].cpuShare }
        let contention = max(1, demand / Double(cpus))
        var stepped: [(Int, Double)] = []
        for (i, p) in progress.sorted(by: { $0.key < $1.key }) {
            let job = jobs[i]
            let next = min(lengths[i], p + dt / ((1 - job.cpuShare) + job.cpuShare * contention))
            stepped.append((i, next))
            if next >= lengths[i] - 1e-9 {
                progress[i] = nil
                done[i] = true
            } else {
                progress[i] = next
            }
        }
        return stepped
    }
}

extension MemoryHistoryFormat.Contents {
    /// The same history with every peak scaled (0.5: every job predicted at half what it needs).
    public func scaledPeaks(_ factor: Double) -> Self {
        var copy = self
        copy.peaks = peaks.mapValues { UInt64(Double($0) * factor) }
        return copy
    }

    /// The same history recorded in another order.
    public func shuffledOrder(seed: UInt64) -> Self {
        var copy = self
        var rng = SplitMix(seed: seed)
        copy.order.shuffle(using: &rng)
        return copy
    }
}
