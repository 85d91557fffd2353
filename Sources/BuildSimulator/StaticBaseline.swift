/// The baseline a user reaches without jobgov: the build tool at a fixed `-jK`, no governor, and the best K that
/// survives, as `scripts/bench/compare`'s sweep finds it on real builds. It knows nothing of the jobs either, but a
/// sweep picks the K after the fact, so it also wins where the jobs' peaks happen not to meet.
extension Scenario {
    /// The makespan of plain `-jK` with the same CPU model and job durations as a governed run (`jitter`,
    /// `runSeed` as in `simulate`); nil when the jobs' memory passes the hard limit at some moment, where the OOM
    /// killer would end a job and make or ninja stop.
    public func staticMakespan(jobs k: Int, jitter: Double = 0, runSeed: UInt64 = 0) -> Double? {
        let order = SimulatedBuild.order(jobs, tool: tool)
        var length = jobs.map(\.seconds)
        if jitter > 0 {
            var r = SplitMix(seed: (seed ^ runSeed) ^ 0x5eed)
            length = jobs.map { $0.seconds * (1 + jitter * (2 * r.unit() - 1)) }
        }
        var done = Array(repeating: false, count: jobs.count)
        var started = done
        var progress: [Int: Double] = [:]
        var t = 0.0
        let dt = 0.1
        while done.contains(false) && t < 1e5 {
            for i in order where !started[i] && progress.count < k && jobs[i].inputs.allSatisfy({ done[$0] }) {
                started[i] = true
                progress[i] = 0
            }
            let held = step(&progress, done: &done, lengths: length, dt: dt).reduce(SimulatedBuild.baseBytes) {
                $0 + jobs[$1.0].peakBytes * jobs[$1.0].shape.level(at: $1.1 / length[$1.0])
            }
            if held > Double(hardLimit) { return nil }
            t += dt
        }
        return t
    }

    /// The fastest `-jK` (K from 1 to the build's `-j`) that finishes; nil when none does.
    public func bestStatic(jitter: Double = 0, runSeed: UInt64 = 0) -> (jobs: Int, seconds: Double)? {
        var best: (jobs: Int, seconds: Double)?
        for k in 1...maxJobs {
            guard let s = staticMakespan(jobs: k, jitter: jitter, runSeed: runSeed) else { continue }
            if best == nil || s < best!.seconds { best = (k, s) }
        }
        return best
    }
}
