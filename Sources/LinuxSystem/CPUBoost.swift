#if canImport(Glibc)
import Glibc
#endif
import JobgovCore

/// Raises the CPU's performance while a governed build is CPU-bound (when is `BoostPolicy`'s decision): the cpufreq
/// policy's `energy_performance_preference` (intel_pstate and amd_pstate in active mode) or else its
/// `scaling_governor` to `performance`, and turbo on where it is off (`intel_pstate/no_turbo`, `cpufreq/boost`,
/// a policy's own `boost`). Every value is read once at start (the watchdog is told them) and given back when the
/// boost is lowered, at the end of the build and from the watchdog if jobgov dies, only where the file still holds
/// jobgov's value (`SysfsTuning`).
public final class CPUBoost {
    public static let performance = "performance"

    /// One file jobgov writes while boosting.
    public struct Knob: Equatable, Sendable {
        /// Below the sysfs root, e.g. `devices/system/cpu/cpufreq/policy0/scaling_governor`.
        public var path: String
        public var original: String
        public var boosted: String
    }

    public let root: String
    public let knobs: [Knob]
    /// The knobs written by the last `raise`, for `lower` to give back.
    public private(set) var raised: [Knob] = []
    public var isRaised: Bool { !raised.isEmpty }

    static let cpu = "devices/system/cpu"
    static let cpufreq = cpu + "/cpufreq"

    /// What this machine offers to raise, or why nothing (said once by the caller): no cpufreq (virtual machines),
    /// everything already at full performance, or no permission to write it.
    public static func detect(root: String = SysfsTuning.defaultRoot) -> Result<CPUBoost, BoostUnavailable> {
        let policies = directoryEntries(root + "/" + cpufreq).filter { SysfsTuning.numbered($0, "policy") }
            .sorted { Int($0.dropFirst(6)) ?? 0 < Int($1.dropFirst(6)) ?? 0 }
        var knobs: [Knob] = []
        func add(_ path: String, to value: String, from current: String?) {
            if let current, !current.isEmpty, current != value { knobs.append(Knob(path: path, original: current, boosted: value)) }
        }
        for policy in policies {
            let dir = cpufreq + "/" + policy
            let governor = SysfsTuning.read(root, dir + "/scaling_governor")
            let preference = SysfsTuning.read(root, dir + "/energy_performance_preference")
            let preferences = words(SysfsTuning.read(root, dir + "/energy_performance_available_preferences"))
            let governors = words(SysfsTuning.read(root, dir + "/scaling_available_governors"))
            if governor != performance {
                // Under intel_pstate or amd_pstate in active mode the preference is the hint the hardware follows,
                // and the governor (powersave) stays as it is; elsewhere the governor sets the frequency.
                if preference != nil && preferences.contains(performance) {
                    add(dir + "/energy_performance_preference", to: performance, from: preference)
                } else if governors.contains(performance) {
                    add(dir + "/scaling_governor", to: performance, from: governor)
                }
            }
            add(dir + "/boost", to: "1", from: SysfsTuning.read(root, dir + "/boost"))
        }
        add(cpufreq + "/boost", to: "1", from: SysfsTuning.read(root, cpufreq + "/boost"))
        add(cpu + "/intel_pstate/no_turbo", to: "0", from: SysfsTuning.read(root, cpu + "/intel_pstate/no_turbo"))
        guard !knobs.isEmpty else {
            if policies.isEmpty && access(root + "/" + cpu + "/intel_pstate", F_OK) != 0 {
                return .failure(.noCpufreq(root + "/" + cpufreq))
            }
            return .failure(.nothingToRaise)
        }
        if let locked = knobs.first(where: { access(root + "/" + $0.path, W_OK) != 0 }) {
            return .failure(.notPermitted(root + "/" + locked.path, errno: errno))
        }
        return .success(CPUBoost(root: root, knobs: knobs))
    }

    public init(root: String, knobs: [Knob]) {
        self.root = root
        self.knobs = knobs
    }

    /// What the watchdog is to give back if jobgov dies: every knob's value at start.
    public var originals: [SystemTuning.Setting] { knobs.map { SystemTuning.Setting(path: $0.path, original: $0.original) } }

    /// Writes the boosted values. A knob someone else changed since jobgov read it is theirs and left alone. Returns
    /// the problems (a knob the kernel refused: firmware that locks turbo off, say); the others stay raised.
    @discardableResult
    public func raise() -> [String] {
        guard raised.isEmpty else { return [] }
        var problems: [String] = []
        for knob in knobs {
            guard SysfsTuning.read(root, knob.path) == knob.original else { continue }
            if let problem = SystemTuning.write(root + "/" + knob.path, knob.boosted) {
                problems.append(problem)
            } else {
                raised.append(knob)
            }
        }
        return problems
    }

    /// Gives back what `raise` wrote, where it still holds the boosted value.
    public func lower() {
        guard !raised.isEmpty else { return }
        SysfsTuning.restore(raised.map { SystemTuning.Setting(path: $0.path, original: $0.original) }, root: root)
        raised = []
    }

    /// For the line said at start: what a boost changes, e.g. `scaling_governor performance (2 policies), turbo on`.
    public var summary: String {
        var parts: [String] = []
        for name in ["energy_performance_preference", "scaling_governor"] {
            let n = knobs.filter { $0.path.hasSuffix("/" + name) }.count
            if n > 0 { parts.append("\(name) \(Self.performance) (\(n) polic\(n == 1 ? "y" : "ies"))") }
        }
        if knobs.contains(where: { $0.path.hasSuffix("/boost") || $0.path.hasSuffix("/no_turbo") }) { parts.append("turbo on") }
        return parts.joined(separator: ", ")
    }

    private static func words(_ text: String?) -> [String] { (text ?? "").split(separator: " ").map(String.init) }

    deinit { lower() }
}

/// Why there is no CPU boost on this machine, said once.
public enum BoostUnavailable: Error, Equatable, Sendable, CustomStringConvertible {
    case noCpufreq(String)
    case nothingToRaise
    case notPermitted(String, errno: Int32)

    public var description: String {
        switch self {
        case .noCpufreq(let dir):
            "this machine has no CPU frequency scaling (\(dir) lists no policy; usual in a virtual machine)"
        case .nothingToRaise:
            "the CPUs already run at full performance (governor or preference performance, turbo on)"
        case .notPermitted(let path, let e):
            "cannot write \(path) (\(String(cString: strerror(e)))): changing cpufreq needs root"
        }
    }
}
