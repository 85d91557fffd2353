#if canImport(Glibc)
import Glibc
#endif
import JobgovCore

/// The sysfs files jobgov changes for a while (the CPU boost, a fan's control mode and duty) and gives back as it
/// gives back sysctls (`SystemTuning.restore`): when it is done, and from the watchdog if it dies, only where the
/// file still holds jobgov's value. Paths are relative to the sysfs root (`/sys`, or `JOBGOV_SYSFS_ROOT` for a
/// hand-written tree in tests), so the watchdog is told the root once and the paths it may write.
public enum SysfsTuning {
    public static let defaultRoot = "/sys"

    /// `/sys`, or the directory `JOBGOV_SYSFS_ROOT` names (a fake tree for tests; never needed on a real machine).
    public static func root(environment: [String: String]) -> String {
        guard let given = environment["JOBGOV_SYSFS_ROOT"], given.hasPrefix("/") else { return defaultRoot }
        return given.count > 1 && given.hasSuffix("/") ? String(given.dropLast()) : given
    }

    /// What counts as "still jobgov's" for a file jobgov may change.
    public enum Ownership: Equatable, Sendable {
        /// The file holds exactly this value (jobgov's), e.g. `performance`.
        case holds(String)
        /// A fan's duty: jobgov's value changes every few seconds, so it is jobgov's while the fan's `_enable` file
        /// (this path) still says manual control (1), which is jobgov's mode.
        case whileManual(enablePath: String)
    }

    /// The files jobgov may change and give back, by their path below the sysfs root. Anything else is never
    /// written, so the watchdog's command line cannot be used to write arbitrary sysfs files.
    public static func ownership(of path: String) -> Ownership? {
        let c = path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        let cpu = ["devices", "system", "cpu"]
        if c.count == 6, Array(c[0..<4]) == cpu + ["cpufreq"], numbered(c[4], "policy") {
            switch c[5] {
            case "scaling_governor", "energy_performance_preference": return .holds(CPUBoost.performance)
            case "boost": return .holds("1")
            default: return nil
            }
        }
        if c == cpu + ["cpufreq", "boost"] { return .holds("1") }
        if c == cpu + ["intel_pstate", "no_turbo"] { return .holds("0") }
        if c.count == 4, c[0] == "class", c[1] == "hwmon", numbered(c[2], "hwmon") {
            if c[3].hasSuffix("_enable"), numbered(String(c[3].dropLast(7)), "pwm") { return .holds(FanDevice.manualMode) }
            if numbered(c[3], "pwm") { return .whileManual(enablePath: path + "_enable") }
        }
        return nil
    }

    /// Gives each file its original value back where it still holds jobgov's (see `Ownership`); files listed
    /// first are written first (a fan's duty before its mode).
    public static func restore(_ settings: [SystemTuning.Setting], root: String = defaultRoot) {
        SystemTuning.giveBack(settings, root: root) { path, current in
            switch ownership(of: path) {
            case .holds(let value)?: current == value
            case .whileManual(let enable)?: readSmallFile(root + "/" + enable)?.trimmingWhitespace() == FanDevice.manualMode
            case nil: false
            }
        }
    }

    /// `policy12`, `hwmon3`, `pwm1`: the prefix and a decimal number.
    static func numbered(_ name: String, _ prefix: String) -> Bool {
        guard name.hasPrefix(prefix) else { return false }
        let digits = name.dropFirst(prefix.count)
        return !digits.isEmpty && digits.allSatisfy { $0 >= "0" && $0 <= "9" }
    }

    /// Reads a sysfs attribute, trimmed; nil when it is missing or unreadable.
    static func read(_ root: String, _ path: String) -> String? {
        readSmallFile(root + "/" + path, limit: 4096)?.trimmingWhitespace()
    }
}
