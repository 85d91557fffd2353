#if canImport(Glibc)
import Glibc
#endif
import JobgovCore

/// The machine-wide memory tuning jobgov applies while the whole build is frozen because the machine itself ran out
/// of memory (the last rung of the ladder), and undoes when it thaws, when it exits, and through the watchdog if it
/// dies: kswapd starts reclaiming earlier (a larger `vm.watermark_scale_factor`) and free memory is compacted once.
public final class SystemTuning {
    /// A sysctl under /proc/sys and the value to give it back.
    public struct Setting: Equatable, Sendable {
        public var path: String
        public var original: String
        public init(path: String, original: String) {
            self.path = path
            self.original = original
        }
    }

    public static let watermarkScale = "vm/watermark_scale_factor"
    /// 2% of memory between the watermarks instead of the default 0.1%: kswapd wakes sooner and reclaims more per
    /// wake-up, so allocations stall less in direct reclaim.
    public static let tunedWatermarkScale = 200

    private let procSys: String
    /// What the sysctls were when jobgov started: what is restored (also told to the watchdog).
    public let originals: [Setting]
    public private(set) var applied = false

    public init(procSys: String = "/proc/sys") {
        self.procSys = procSys
        let current = readSmallFile(procSys + "/" + Self.watermarkScale)?.trimmingWhitespace()
        originals = current.map { [Setting(path: Self.watermarkScale, original: $0)] } ?? []
    }

    /// Raises the watermark scale (never lowers it) and compacts memory once. Errors (not root) are returned, the
    /// build goes on without the tuning.
    @discardableResult
    public func apply() -> String? {
        guard !applied else { return nil }
        guard let original = originals.first, let value = Int(original.original) else {
            return "cannot read /proc/sys/\(Self.watermarkScale)"
        }
        if value < Self.tunedWatermarkScale {
            if let problem = Self.write(procSys + "/" + Self.watermarkScale, String(Self.tunedWatermarkScale)) {
                return problem
            }
        }
        applied = true
        _ = Self.write(procSys + "/vm/compact_memory", "1")
        return nil
    }

    public func restore() {
        guard applied else { return }
        Self.restore(originals, procSys: procSys)
        applied = false
    }

    /// The value jobgov gives each sysctl it tunes: what `restore` recognises as jobgov's. A path not listed here
    /// is never written back, so the watchdog's command line cannot be used to set arbitrary sysctls.
    public static let tunedValues: [String: String] = [
        watermarkScale: String(tunedWatermarkScale),
        SwappinessTuning.swappiness: String(SwappinessTuning.tunedSwappiness),
    ]

    /// Gives each setting its original value back, but only where it still holds jobgov's tuned value: a value
    /// someone else set meanwhile is theirs (the watchdog calls this without knowing whether jobgov tuned).
    public static func restore(_ settings: [Setting], procSys: String = "/proc/sys") {
        giveBack(settings, root: procSys) { path, current in tunedValues[path] == current }
    }

    /// Writes each setting's original value to its file below `root`, where `stillJobgovs(path, current value)`
    /// says the file still holds what jobgov put there. sysctls and sysfs knobs (`SysfsTuning`) both go through it.
    static func giveBack(_ settings: [Setting], root: String, stillJobgovs: (String, String) -> Bool) {
        for s in settings where !s.path.split(separator: "/").contains("..") {
            guard let current = readSmallFile(root + "/" + s.path)?.trimmingWhitespace(),
                  stillJobgovs(s.path, current) else { continue }
            _ = write(root + "/" + s.path, s.original)
        }
    }

    /// Writes a sysctl; nil, or why not.
    static func write(_ path: String, _ value: String) -> String? {
        do {
            try writeCgroupFile(path, value)
            return nil
        } catch {
            return error.description
        }
    }

    /// `path=value` for the watchdog's command line, and back.
    public static func encode(_ s: Setting) -> String { s.path + "=" + s.original }
    public static func decode(_ text: String) -> Setting? {
        guard let eq = text.firstIndex(of: "="), !text[..<eq].contains("..") else { return nil }
        return Setting(path: String(text[..<eq]), original: String(text[text.index(after: eq)...]))
    }

    deinit { restore() }
}


/// vm.swappiness at 0 while jobgov's compressed swap device exists, so that the machine's ordinary reclaim keeps
/// preferring page cache over other processes' anonymous memory: the swap is there for the frozen jobs jobgov pages
/// out on purpose (MADV_PAGEOUT ignores swappiness), not to push the user's editor or browser into zram. Restored
/// as `SystemTuning` restores: when the device goes, when jobgov exits, by the watchdog if it dies (only where the
/// value is still jobgov's 0).
///
/// Where it reaches: on cgroup v2, every cgroup (v2 has no per-cgroup swappiness). On cgroup v1 memory controllers
/// (a hybrid machine) only the root memory cgroup: each v1 memory cgroup has its own memory.swappiness, copied from
/// its parent when it is made, which vm.swappiness does not change afterwards (seen here on 6.18). The build's own
/// v1 cgroup gets 0 through `CgroupLimits.swappiness`; other v1 cgroups are not jobgov's to change.
public final class SwappinessTuning {
    public static let swappiness = "vm/swappiness"
    public static let tunedSwappiness = 0

    private let procSys: String
    /// What vm.swappiness was when this was made (for the watchdog too); empty when it cannot be read.
    public let originals: [SystemTuning.Setting]
    public private(set) var applied = false

    public init(procSys: String = "/proc/sys") {
        self.procSys = procSys
        let current = readSmallFile(procSys + "/" + Self.swappiness)?.trimmingWhitespace()
        originals = current.map { [SystemTuning.Setting(path: Self.swappiness, original: $0)] } ?? []
    }

    /// Sets vm.swappiness to 0. nil, or why not (not root): the build goes on, other processes may then be
    /// swapped by ordinary reclaim.
    @discardableResult
    public func apply() -> String? {
        guard !applied else { return nil }
        guard let original = originals.first, Int(original.original) != nil else {
            return "cannot read /proc/sys/\(Self.swappiness)"
        }
        if original.original != String(Self.tunedSwappiness),
           let problem = SystemTuning.write(procSys + "/" + Self.swappiness, String(Self.tunedSwappiness)) {
            return problem
        }
        applied = true
        return nil
    }

    public func restore() {
        guard applied else { return }
        SystemTuning.restore(originals, procSys: procSys)
        applied = false
    }

    deinit { restore() }
}
