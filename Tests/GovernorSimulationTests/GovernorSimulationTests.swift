#if canImport(Glibc)
import Glibc
#endif
import BuildSimulator
import JobgovCore
import Testing

/// The governor's loop (the same code `jobgov run` drives on the kernel) against thousands of seeded random simulated
/// builds: jobs of every memory shape, make's and ninja's order, durations jittered, histories right, wrong by half
/// and from another tree. Each run asserts the invariants; a failure prints the seed and the command that replays it.
@Suite("The governor in the simulator")
struct GovernorSimulationTests {
    /// Random trees per configuration (each is built four times: cold, warm, with a history that says every job
    /// needs half of what it does, and with another tree's history); JOBGOV_SIM_TREES and JOBGOV_SIM_FIRST_SEED
    /// explore further.
    static let trees = Int(getenv("JOBGOV_SIM_TREES").map { String(cString: $0) } ?? "") ?? 1300
    static let firstSeed = UInt64(getenv("JOBGOV_SIM_FIRST_SEED").map { String(cString: $0) } ?? "") ?? 1

    struct Runs {
        var cold: SimulatedBuild.Outcome
        var warm: SimulatedBuild.Outcome
        var half: SimulatedBuild.Outcome
        var other: SimulatedBuild.Outcome
        var all: [(String, SimulatedBuild.Outcome)] { [("cold", cold), ("warm", warm), ("half", half), ("other", other)] }
    }

    /// The four builds of one tree, as `jobgov-simulate` runs them (so a seed printed here replays there).
    static func runs(_ s: Scenario, swap: Bool) -> Runs {
        let cold = s.simulate(swap: swap, jitter: 0.3, runSeed: 1)
        let warm = s.simulate(history: cold.history, swap: swap, jitter: 0.3, runSeed: 2)
        let half = s.simulate(history: cold.history.scaledPeaks(0.5), swap: swap, jitter: 0.3, runSeed: 3)
        let otherTree = Scenario.random(seed: s.seed, family: s.family, tool: s.tool, variant: 7)
        let other = s.simulate(history: otherTree.simulate(swap: swap).history, swap: swap, jitter: 0.5, runSeed: 4)
        return Runs(cold: cold, warm: warm, half: half, other: other)
    }

    static func replay(_ s: Scenario, _ kind: String, swap: Bool) -> String {
        "replay: swift run -c release jobgov-simulate --seed \(s.seed) --log \(kind)\(swap ? " --swap" : "")"
    }

    /// Where jobgov can take memory back (paging frozen jobs out, or, under make, ending the newest job early and
    /// running it again), no build that fits one job at a time gets an OOM kill or fails, whatever the history says.
    /// Everywhere: memory stays under the hard limit, the build never hangs, and some job always runs.
    @Test("no OOM kill, no failure, no hang where jobgov can take memory back (swap, or make)",
          arguments: [true, false])
    func safeWhereMemoryCanBeTakenBack(swap: Bool) {
        var builds = 0
        var ratios: [String: [Double]] = [:]
        for seed in Self.firstSeed..<(Self.firstSeed + UInt64(Self.trees)) {
            let s = Scenario.random(seed: seed, tool: swap ? nil : .make)
            let r = Self.runs(s, swap: swap)
            let clairvoyant = s.clairvoyantMakespan
            for (kind, o) in r.all {
                builds += 1
                #expect(o.peakBytes <= Double(s.hardLimit), "\(s) \(kind): memory passed the hard limit. \(Self.replay(s, kind, swap: swap))")
                #expect(o.longestStall < 10, "\(s) \(kind): nothing progressed for \(o.longestStall) s. \(Self.replay(s, kind, swap: swap))")
                #expect(!o.note.contains("did not finish"), "\(s) \(kind): \(o.note). \(Self.replay(s, kind, swap: swap))")
                #expect(o.allFrozenTicks <= 2, "\(s) \(kind): every running job frozen for \(o.allFrozenTicks) ticks. \(Self.replay(s, kind, swap: swap))")
                if s.fitsAlone {
                    #expect(o.oomKills == 0 && o.succeeded,
                            "\(s) \(kind): \(o.oomKills) OOM kills, \(o.succeeded ? "succeeded" : "failed: \(o.note)"). \(Self.replay(s, kind, swap: swap))")
                }
                if o.succeeded { ratios["\(s.tool.rawValue) \(kind)", default: []].append(o.makespan / clairvoyant) }
            }
        }
        print("simulator, swap \(swap ? "on" : "off"): \(builds) builds; makespan / clairvoyant, median (p90):")
        for key in ratios.keys.sorted() {
            let v = ratios[key]!.sorted()
            print("  \(key): \(Self.two(v[v.count / 2])) (\(Self.two(v[v.count * 9 / 10])))")
        }
        #expect(builds >= 4 * Self.trees)
    }

    /// ninja stops at the first failed job, and without swap nothing frozen gives memory back: a build can still
    /// end in an OOM kill there (measured and printed; see the README). Every kind is held to a small share: cold
    /// builds by the slow start for jobs of unknown size, the others by doubting the history until a job confirms it.
    @Test("ninja without swap: cold and warm builds rarely meet the OOM killer; never a hang")
    func ninjaWithoutSwap() {
        var failed: [String: Int] = [:]
        var count = 0
        for seed in Self.firstSeed..<(Self.firstSeed + UInt64(Self.trees / 2)) {
            let s = Scenario.random(seed: seed, tool: .ninja)
            guard s.fitsAlone else { continue }
            count += 1
            for (kind, o) in Self.runs(s, swap: false).all {
                #expect(!o.note.contains("did not finish"), "\(s) \(kind): \(o.note). \(Self.replay(s, kind, swap: false))")
                if o.oomKills > 0 || !o.succeeded { failed[kind, default: 0] += 1 }
            }
        }
        let share = { (kind: String) in Double(failed[kind] ?? 0) / Double(max(1, count)) }
        print("ninja without swap, \(count) trees: builds with an OOM kill: cold \(Self.pct(share("cold"))), warm \(Self.pct(share("warm"))), "
              + "half-size history \(Self.pct(share("half"))), another tree's history \(Self.pct(share("other")))")
        // A job of a new kind (the first link after the compiles) runs with no job of unknown size beside it:
        // without that, cold 2.9% and warm 0.6% of these builds failed, mostly at links that peak late.
        #expect(share("cold") <= 0.015)
        #expect(share("warm") <= 0.015)
        // Until a job confirms the history, its peaks count double here: a history wrong by half, or from another
        // tree, costs a slower start instead of a failed build (without that: 24% and 13% of these builds failed).
        #expect(share("half") <= 0.015)
        #expect(share("other") <= 0.05)
    }

    /// On builds that the history describes (warm), the makespan against a clairvoyant scheduler that knows every
    /// job's true peak and duration.
    @Test("makespan against a clairvoyant schedule: warm median within 1.15x per memory shape, cold within 1.30x")
    func warmMakespan() {
        var ratios: [Scenario.Family: [Double]] = [:]
        var atHard: [Scenario.Family: [Double]] = [:]
        var colds: [Double] = []
        for seed in Self.firstSeed..<(Self.firstSeed + 300) {
            let s = Scenario.random(seed: seed)
            let cold = s.simulate(swap: true, jitter: 0.3, runSeed: 1)
            let warm = s.simulate(history: cold.history, swap: true, jitter: 0.3, runSeed: 2)
            if cold.succeeded { colds.append(cold.makespan / s.clairvoyantMakespan) }
            guard warm.succeeded else { continue }
            ratios[s.family, default: []].append(warm.makespan / s.clairvoyantMakespan)
            atHard[s.family, default: []].append(warm.makespan / s.clairvoyantMakespanAtHardLimit)
        }
        for (family, v) in ratios.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
            let median = v.sorted()[v.count / 2]
            let hard = atHard[family]!.sorted()[v.count / 2]
            print("warm \(family.rawValue): median \(Self.two(median)) of clairvoyant with the same budget "
                  + "(\(Self.two(hard)) of one that may also use the reserve up to the hard limit), \(v.count) builds")
            #expect(median <= 1.15, "\(family.rawValue): median makespan \(Self.two(median))x the clairvoyant schedule")
        }
        let cold = colds.sorted()[colds.count / 2]
        print("cold, all shapes: median \(Self.two(cold)) of clairvoyant with the same budget, \(colds.count) builds")
        #expect(cold <= 1.30, "cold builds: median makespan \(Self.two(cold))x the clairvoyant schedule")
    }

    /// The failure the issue reports, in the simulator: real g++ compiles of 340-720 MB that reach most of their
    /// peak early, in an 1100 MB cgroup, make -j8, no history. Admitted four at a time at a prior of about
    /// 240 MB, they would be frozen at ~250 MB each, and the oldest could not finish beside them.
    @Test("28 early-peaking compiles of 340-720 MB in 1100 MB: cold and warm, make and ninja, swap or not", arguments: [
        (SimulatedTool.make, false), (.make, true), (.ninja, true), (.ninja, false),
    ])
    func earlyPeakingCompiles(tool: SimulatedTool, swap: Bool) {
        var rng = SplitMix(seed: 28)
        let jobs = (0..<28).map { i in
            SimulatedJob(command: "g++ -O2 -c test\(i).cpp", peakBytes: (340 + rng.unit() * 380) * Scenario.mib,
                         seconds: 8 + rng.unit() * 10, cpuShare: 0.95, shape: .early)
        }
        let s = Scenario(seed: 28, family: .early, tool: tool, jobs: jobs, budget: 1000 << 20, hardLimit: 1100 << 20,
                         maxJobs: 8)
        let cold = s.simulate(swap: swap, jitter: 0.2, runSeed: 1)
        let warm = s.simulate(history: cold.history, swap: swap, jitter: 0.2, runSeed: 2)
        for (kind, o) in [("cold", cold), ("warm", warm)] {
            #expect(o.succeeded && o.oomKills == 0, "\(kind): \(o.oomKills) OOM kills, \(o.note)")
        }
        // The second build is not slower than the first (a little jitter allowed: durations vary by ±20%).
        #expect(warm.makespan <= cold.makespan * 1.05, "warm \(warm.makespan) s, cold \(cold.makespan) s")
        print("\(tool.rawValue), swap \(swap): cold \(Self.two(cold.makespan)) s, warm \(Self.two(warm.makespan)) s, "
              + "one at a time \(Self.two(s.serialSeconds)) s, clairvoyant \(Self.two(s.clairvoyantMakespan)) s")
    }

    /// The issue's other build: 51 jobs (compiles of 80-800 MB, three links of ~1 GB) in a 1600 MB cgroup, built
    /// twice in the same place. The second build must not be slower or less safe than the first.
    @Test("a second build with the history is not slower or less safe than the first", arguments: [
        (SimulatedTool.make, false), (.make, true), (.ninja, true),
    ])
    func secondBuildNotWorse(tool: SimulatedTool, swap: Bool) {
        for seed in UInt64(1)...12 {
            var rng = SplitMix(seed: seed)
            var jobs: [SimulatedJob] = (0..<48).map { i in
                SimulatedJob(command: "c++ -c f\(i).cc", peakBytes: (80 + rng.unit() * 720) * Scenario.mib,
                             seconds: 1 + rng.unit() * 4, cpuShare: 0.2 + rng.unit() * 0.6,
                             shape: SimulatedShape.allCases[Int(rng.next() % 5)])
            }
            for k in 0..<3 {
                jobs.append(SimulatedJob(command: "ld -o bin\(k)", peakBytes: (950 + rng.unit() * 100) * Scenario.mib,
                                         seconds: 2 + rng.unit() * 2, cpuShare: 0.5, shape: .plateau,
                                         inputs: Array(0..<48)))
            }
            let s = Scenario(seed: seed, family: .mixed, tool: tool, jobs: jobs, budget: 1440 << 20,
                             hardLimit: 1584 << 20, maxJobs: 12)
            let cold = s.simulate(swap: swap, jitter: 0.15, runSeed: 1)
            let warm = s.simulate(history: cold.history, swap: swap, jitter: 0.15, runSeed: 2)
            #expect(cold.succeeded && cold.oomKills == 0, "seed \(seed) cold: \(cold.oomKills) OOM kills \(cold.note)")
            #expect(warm.succeeded && warm.oomKills == 0, "seed \(seed) warm: \(warm.oomKills) OOM kills \(warm.note)")
            #expect(warm.makespan <= cold.makespan * 1.05, "seed \(seed): warm \(Self.two(warm.makespan)) s, cold \(Self.two(cold.makespan)) s")
        }
    }

    @Test("the static -jK baseline: a K whose jobs pass the hard limit does not finish; spikes that do not meet do")
    func staticBaseline() {
        let mib = Scenario.mib
        func tree(_ shape: SimulatedShape, seconds: [Double]) -> Scenario {
            let jobs = seconds.enumerated().map { i, s in
                SimulatedJob(command: "cc \(i)", peakBytes: 600 * mib, seconds: s, cpuShare: 0.1, shape: shape)
            }
            return Scenario(seed: 1, family: .mixed, tool: .make, jobs: jobs, budget: UInt64(1000 * mib),
                            hardLimit: UInt64(1100 * mib), maxJobs: 2)
        }
        // Two jobs of 600 MiB held from the start: -j2 passes 1100 MiB, -j1 takes both lengths.
        let plateau = tree(.plateau, seconds: [2, 2])
        #expect(plateau.staticMakespan(jobs: 2) == nil)
        #expect(abs(plateau.staticMakespan(jobs: 1)! - 4) < 0.3)
        #expect(plateau.bestStatic()?.jobs == 1)
        // Spikes in the last 15% of runs of 2 s and 4 s never meet: -j2 fits and takes about the longer one.
        let spikes = tree(.spike, seconds: [2, 4])
        #expect(spikes.bestStatic()?.jobs == 2)
        #expect(abs(spikes.bestStatic()!.seconds - 4) < 0.3)
    }

    @Test("the same seed gives the same build, step for step")
    func deterministic() {
        let s = Scenario.random(seed: 4242)
        let a = s.simulate(jitter: 0.3, runSeed: 1)
        let b = s.simulate(jitter: 0.3, runSeed: 1)
        #expect(a.makespan == b.makespan && a.freezes == b.freezes && a.oomKills == b.oomKills)
        #expect(a.history == b.history)
    }

    static func two(_ x: Double) -> String { String(Double(Int((x * 100).rounded())) / 100) }
    static func pct(_ x: Double) -> String { "\(Double(Int((x * 1000).rounded())) / 10)%" }
}
