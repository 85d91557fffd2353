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

    /// Gives each setting its original value back, but only where it still holds jobgov's tuned value: a value
    /// someone else set meanwhile is theirs (the watchdog calls this without knowing whether jobgov tuned).
    public static func restore(_ settings: [Setting], procSys: String = "/proc/sys") {
        for s in settings where readSmallFile(procSys + "/" + s.path)?.trimmingWhitespace() == String(tunedWatermarkScale) {
            _ = write(procSys + "/" + s.path, s.original)
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

