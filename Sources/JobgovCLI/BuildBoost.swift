#if canImport(Glibc)
import Glibc
#endif
import JobgovCore
import LinuxSystem

/// The CPU boost of one governed build: `BoostPolicy` decides from each tick's CPU signals, `CPUBoost` writes
/// cpufreq. Raised and lowered as the build becomes CPU-bound and stops being so; lowered at the end, by the watchdog
/// if jobgov dies (it is told `originals` at start).
final class BuildBoost {
    let boost: CPUBoost
    private var policy: BoostPolicy
    private let say: (String) -> Void
    private var failed = false
    /// JOBGOV_DEBUG_BOOST: print each tick's CPU signals.
    private let debug = getenv("JOBGOV_DEBUG_BOOST") != nil

    /// The boost this machine allows and the line that says so at start, or why there is none.
    static func make(enabled: Bool, hasCgroup: Bool, root: String, cpus: Int,
                     say: @escaping (String) -> Void) -> (boost: BuildBoost?, note: String) {
        guard enabled else { return (nil, "CPU boost: off (--no-boost)") }
        guard hasCgroup else {
            return (nil, "CPU boost: off (the build has no cgroup, so no watchdog would give cpufreq back if jobgov died)")
        }
        switch CPUBoost.detect(root: root) {
        case .failure(let why):
            return (nil, "CPU boost: off: \(why)")
        case .success(let boost):
            return (BuildBoost(boost: boost, cpus: cpus, say: say),
                    "CPU boost: \(boost.summary) while the build is CPU-bound, given back after (--no-boost: never)")
        }
    }

    private init(boost: CPUBoost, cpus: Int, say: @escaping (String) -> Void) {
        self.boost = boost
        self.policy = BoostPolicy(settings: .init(cpus: cpus))
        self.say = say
    }

    func observe(_ signals: CPUSignals, now: Double) {
        if debug { say("debug: boost \(signals)") }
        guard !failed, let action = policy.observe(signals, now: now) else { return }
        apply(action, signals: signals)
    }

    func finish() {
        if let action = policy.finish() { apply(action, signals: nil) }
        boost.lower()
    }

    private func apply(_ action: BoostPolicy.Action, signals: CPUSignals?) {
        switch action {
        case .raise:
            let problems = boost.raise()
            if !boost.isRaised {
                // Nothing could be written (firmware that locks it, a read-only sysfs): said once, not every tick.
                failed = true
                say("CPU boost: cannot raise it (\(problems.first ?? "every knob changed since jobgov started")); the build goes on without")
                return
            }
            var why: [String] = []
            if let s = signals, let busy = s.cpusBusy { why.append("\(FanCurve.format(busy)) CPUs busy for \(s.runningJobs) jobs") }
            if let stall = signals?.cpuStall, stall >= 0.01 { why.append("waiting for a CPU \(Int((stall * 100).rounded()))% of the time") }
            say("CPU-bound" + (why.isEmpty ? "" : " (\(why.joined(separator: ", ")))") + ": CPU boost raised"
                + (problems.isEmpty ? "" : "; not all of it: \(problems[0])"))
        case .lower:
            boost.lower()
            if signals != nil { say("no longer CPU-bound: CPU boost given back") }
        }
    }
}
