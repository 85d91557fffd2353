// Runs the governor against many seeded random simulated builds and prints, per memory shape and build tool, the
// share of builds with OOM kills or failures, the makespan against a clairvoyant schedule (median, p90), and for
// cold and warm builds the median makespan against the best static -jK that finishes (`static`).
//   swift run -c release jobgov-simulate [BUILDS] [FIRST-SEED] [--swap] [--seed N]
#if canImport(Glibc)
import Glibc
#endif
import BuildSimulator
import JobgovCore

var builds = 400
var first: UInt64 = 1
var swap = false
var only: UInt64?
/// --log cold|warm|half|other: print that run's messages and per-tick trace.
var logKind: String?
/// --per-build: one line per build with each run's makespan against the clairvoyant schedule.
var perBuild = false
var positional: [String] = []
var args = CommandLine.arguments.dropFirst()
while let a = args.popFirst() {
    switch a {
    case "--swap": swap = true
    case "--seed": only = args.popFirst().flatMap { UInt64($0) }
    case "--log": logKind = args.popFirst()
    case "--per-build": perBuild = true
    case "--set":
        // --set NAME=VALUE: a governor setting for every run (memoryThreshold, freezeThreshold, raiseHold,
        // raiseMargin, endSlack, limit=hard|budget).
        guard let kv = args.popFirst()?.split(separator: "="), kv.count == 2, let v = Double(kv[1]) else { break }
        let name = String(kv[0])
        let previous = Scenario.tweak
        Scenario.tweak = { s in
            previous(&s)
            switch name {
            case "memoryThreshold": s.memoryThreshold = v
            case "freezeThreshold": s.freezeThreshold = v
            case "raiseHold": s.raiseHoldSeconds = v
            case "raiseMargin": s.raiseMargin = v
            case "endSlack": s.endSlack = v
            case "cpuThreshold": s.cpuThreshold = v
            case "growthHorizon": s.growthHorizonSeconds = v
            case "freezeHorizon": s.freezeHorizonSeconds = v
            case "budgetShare": s.budget = UInt64(Double(s.hardLimit) * v)
            default: print("unknown setting \(name)")
            }
        }
    default: positional.append(a)
    }
}
if positional.count > 0, let n = Int(positional[0]) { builds = n }
if positional.count > 1, let s = UInt64(positional[1]) { first = s }

struct Tally {
    var runs = 0, kills = 0, failed = 0, stuck = 0
    var freezes = 0, pageOuts = 0, evictions = 0
    var ratios: [Double] = []
    /// Makespan against the best static -jK of the same tree and job durations, where one finishes.
    var staticRatios: [Double] = []
    mutating func add(_ o: SimulatedBuild.Outcome, clairvoyant: Double, fits: Bool, bestStatic: Double?) {
        runs += 1
        if fits && o.oomKills > 0 { kills += 1 }
        if fits && !o.succeeded { failed += 1 }
        if o.longestStall > 10 { stuck += 1 }
        freezes += o.freezes
        pageOuts += o.pageOuts
        evictions += o.evictions
        if o.succeeded { ratios.append(o.makespan / clairvoyant) }
        if o.succeeded, let b = bestStatic { staticRatios.append(o.makespan / b) }
    }
    var staticMedian: Double { staticRatios.isEmpty ? .nan : staticRatios.sorted()[staticRatios.count / 2] }
    var median: Double { ratios.isEmpty ? .nan : ratios.sorted()[ratios.count / 2] }
    var p90: Double { ratios.isEmpty ? .nan : ratios.sorted()[min(ratios.count - 1, ratios.count * 9 / 10)] }
}

func f1(_ x: Double) -> String { x.isFinite ? String(Double(Int((x * 10).rounded())) / 10) : "-" }
func f2(_ x: Double) -> String { x.isFinite ? String(Double(Int((x * 100).rounded())) / 100) : "-" }
func pad(_ s: String, _ n: Int, right: Bool = false) -> String {
    let fill = String(repeating: " ", count: max(0, n - s.count))
    return right ? fill + s : s + fill
}

var tallies: [String: Tally] = [:]
/// The clairvoyant schedule (true peaks held from start to end) against the best static -jK, per shape: where it is
/// above 1, a lucky fixed -jK beats any schedule that plans a job at its peak throughout.
var clairvoyantVsStatic: [String: [Double]] = [:]
let seeds: [UInt64] = only.map { [$0] } ?? Array(first..<(first + UInt64(builds)))
for seed in seeds {
    let s = Scenario.random(seed: seed)
    let c = s.clairvoyantMakespan
    // The same job durations as the cold and warm runs (jitter 0.3, run seeds 1 and 2).
    let staticCold = s.bestStatic(jitter: 0.3, runSeed: 1)?.seconds
    let staticWarm = s.bestStatic(jitter: 0.3, runSeed: 2)?.seconds
    if let b = s.bestStatic()?.seconds { clairvoyantVsStatic[s.family.rawValue, default: []].append(c / b) }
    func log(_ kind: String) -> ((String) -> Void)? { logKind == kind ? { print($0) } : nil }
    let cold = s.simulate(swap: swap, jitter: 0.3, runSeed: 1, log: log("cold"))
    let warm = s.simulate(history: cold.history, swap: swap, jitter: 0.3, runSeed: 2, log: log("warm"))
    let wrong = s.simulate(history: cold.history.scaledPeaks(0.5), swap: swap, jitter: 0.3, runSeed: 3, log: log("half"))
    let other = Scenario.random(seed: seed, family: s.family, tool: s.tool, variant: 7)
    let otherTree = s.simulate(history: other.simulate(swap: swap).history, swap: swap, jitter: 0.5, runSeed: 4,
                               log: log("other"))
    if perBuild {
        // A first build with the other-tree run's job durations, to tell the history's effect from the durations'.
        let coldAsOther = s.simulate(swap: swap, jitter: 0.5, runSeed: 4)
        print("\(s): " + [("cold", cold), ("warm", warm), ("half", wrong), ("other", otherTree),
                          ("cold-as-other", coldAsOther)].map {
            "\($0.0) \($0.1.succeeded ? f2($0.1.makespan / c) : "failed")"
        }.joined(separator: " "))
    }
    for (kind, o) in [("cold", cold), ("warm", warm), ("half", wrong), ("other", otherTree)] {
        let best = kind == "cold" ? staticCold : kind == "warm" ? staticWarm : nil
        for group in [s.family.rawValue, "all"] {
            tallies["\(s.tool.rawValue) \(kind) \(group)", default: Tally()].add(o, clairvoyant: c, fits: s.fitsAlone,
                                                                              bestStatic: best)
        }
        if only != nil || (s.fitsAlone && (o.oomKills > 0 || !o.succeeded)) {
            print("\(s) \(kind): \(o.succeeded ? "ok" : "FAILED") \(f1(o.makespan)) s "
                  + "(clairvoyant \(f1(c))), \(o.oomKills) OOM kills, \(o.freezes) freezes, "
                  + "\(o.pageOuts) page-outs, \(o.evictions) evictions, stall \(f1(o.longestStall)) s \(o.note)")
        }
    }
}
print("case                         runs  oom-runs  failed  stuck  median  p90   freezes page-outs ends (per build)  static")
for key in tallies.keys.sorted() {
    let t = tallies[key]!
    print(pad(key, 28) + pad("\(t.runs)", 6, right: true) + pad("\(t.kills)", 10, right: true)
          + pad("\(t.failed)", 8, right: true) + pad("\(t.stuck)", 7, right: true) + pad(f2(t.median), 8, right: true)
          + pad(f2(t.p90), 6, right: true) + pad(f1(Double(t.freezes) / Double(t.runs)), 10, right: true)
          + pad(f1(Double(t.pageOuts) / Double(t.runs)), 10, right: true)
          + pad(f1(Double(t.evictions) / Double(t.runs)), 5, right: true)
          + pad(f2(t.staticMedian), 15, right: true))
}
print("clairvoyant / best static -jK, median: " + clairvoyantVsStatic.keys.sorted().map { family in
    let r = clairvoyantVsStatic[family]!.sorted()
    return "\(family) \(f2(r[r.count / 2]))"
}.joined(separator: ", "))
