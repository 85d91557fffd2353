#if canImport(Glibc)
import Glibc
#endif
import JobgovCore

/// A hwmon fan output and temperature sensors named the way people find them, resolved below a sysfs root:
/// `hwmon2/pwm1` (the directory of /sys/class/hwmon), `nct6798/pwm2` (the chip's `name`), `net:eth0/temp1_input` (a
/// network interface's device), `pci:0000:03:00.0/temp1_input` (a PCI device), or a path under /sys. The file may
/// be left out: `pwm1` for a fan, `temp1_input` for a sensor.
public enum FanDevice {
    /// `pwmN_enable`: 1 is manual control (software writes `pwmN`); 0 (full speed on most chips) and 2 or more
    /// (the chip's or firmware's own automatic modes) are the firmware's.
    public static let manualMode = "1"
    static let hwmon = "class/hwmon"

    /// The fan output as `class/hwmon/hwmonN/pwmM` below `root` (the path the watchdog is told).
    public static func resolveFan(_ spec: String, root: String) throws(FanError) -> String {
        let (dir, file) = try resolve(spec, defaultFile: "pwm1", root: root, what: "fan")
        guard SysfsTuning.numbered(file, "pwm") else {
            throw FanError("'\(spec)' names \(file), which is not a fan output: give a pwmN file, e.g. \(dir.name)/pwm1")
        }
        let path = hwmon + "/" + dir.name + "/" + file
        guard access(root + "/" + path, F_OK) == 0 else {
            let outputs = directoryEntries(root + "/" + hwmon + "/" + dir.name).filter { SysfsTuning.numbered($0, "pwm") }.sorted()
            throw FanError("\(root)/\(path) does not exist: \(describe(dir.name, root: root)) has "
                + (outputs.isEmpty ? "no fan output (no pwmN file)" : "the fan outputs \(outputs.joined(separator: ", "))"))
        }
        guard access(root + "/" + path + "_enable", F_OK) == 0 else {
            throw FanError("\(root)/\(path) has no \(file)_enable: its driver does not let software take this fan from the firmware")
        }
        return path
    }

    /// A temperature input, as a path below `root`.
    public static func resolveSensor(_ spec: String, root: String) throws(FanError) -> String {
        let (dir, file) = try resolve(spec, defaultFile: "temp1_input", root: root, what: "sensor")
        let path = dir.path + "/" + file
        guard file.hasPrefix("temp"), file.hasSuffix("_input") else {
            throw FanError("'\(spec)' names \(file), which is not a temperature: give a tempN_input file, e.g. \(dir.name)/temp1_input")
        }
        guard access(root + "/" + path, R_OK) == 0 else {
            let inputs = directoryEntries(root + "/" + dir.path).filter { $0.hasPrefix("temp") && $0.hasSuffix("_input") }.sorted()
            throw FanError("cannot read \(root)/\(path) (\(String(cString: strerror(errno)))): \(describe(dir.name, root: root)) has "
                + (inputs.isEmpty ? "no temperature input" : "the temperature inputs \(inputs.joined(separator: ", "))"))
        }
        return path
    }

    /// A sensor's temperature in degrees Celsius (hwmon gives millidegrees); nil when it cannot be read.
    public static func celsius(_ path: String, root: String) -> Double? {
        SysfsTuning.read(root, path).flatMap { Int($0) }.map { Double($0) / 1000 }
    }

    /// Every hwmon directory with its chip name, for messages (`hwmon0 (acpitz), hwmon2 (nct6798)`).
    public static func inventory(root: String) -> [(name: String, chip: String)] {
        directoryEntries(root + "/" + hwmon).filter { SysfsTuning.numbered($0, "hwmon") }
            .sorted { Int($0.dropFirst(5)) ?? 0 < Int($1.dropFirst(5)) ?? 0 }
            .map { ($0, SysfsTuning.read(root, hwmon + "/" + $0 + "/name") ?? "?") }
    }

    static func describe(_ name: String, root: String) -> String {
        SysfsTuning.read(root, hwmon + "/" + name + "/name").map { "\(name) (\($0))" } ?? name
    }

    /// The hwmon directory (its `hwmonN` name and its path below root) and the file a spec names.
    private static func resolve(_ spec: String, defaultFile: String, root: String,
                                what: String) throws(FanError) -> (dir: (name: String, path: String), file: String) {
        let known = inventory(root: root)
        let list = known.isEmpty
            ? "this machine has no hwmon device (\(root)/\(hwmon) is empty or missing), so no \(what) jobgov can use"
            : "this machine's hwmon devices: " + known.map { "\($0.name) (\($0.chip))" }.joined(separator: ", ")
        func split(_ text: Substring) -> (String, String) {
            guard let slash = text.firstIndex(of: "/") else { return (String(text), defaultFile) }
            let file = text[text.index(after: slash)...]
            return (String(text[..<slash]), file.isEmpty ? defaultFile : String(file))
        }
        if spec.hasPrefix("/") {
            // A path under /sys (below the root in tests): the hwmonN directory is the file's parent.
            let relative: String
            if spec.hasPrefix(root + "/") {
                relative = String(spec.dropFirst(root.count + 1))
            } else if spec.hasPrefix("/sys/") {
                relative = String(spec.dropFirst(5))
            } else {
                throw FanError("\(spec) is not under /sys: give a hwmon file there, or hwmonN/FILE; \(list)")
            }
            let parts = relative.split(separator: "/").map(String.init)
            guard parts.count >= 2, SysfsTuning.numbered(parts[parts.count - 2], "hwmon") else {
                throw FanError("\(spec) is not a file of a hwmon device (…/hwmonN/FILE); \(list)")
            }
            return ((parts[parts.count - 2], parts.dropLast().joined(separator: "/")), parts[parts.count - 1])
        }
        for (prefix, base, kind) in [("net:", "class/net", "network interface"), ("pci:", "bus/pci/devices", "PCI device")]
        where spec.hasPrefix(prefix) {
            let (device, file) = split(spec.dropFirst(prefix.count))
            let deviceDir = base + "/" + device + (prefix == "net:" ? "/device" : "")
            guard access(root + "/" + base + "/" + device, F_OK) == 0 else {
                throw FanError("no \(kind) \(device) (\(root)/\(base)/\(device) does not exist)")
            }
            guard let name = directoryEntries(root + "/" + deviceDir + "/hwmon").filter({ SysfsTuning.numbered($0, "hwmon") }).sorted().first else {
                throw FanError("the \(kind) \(device) has no hwmon device (\(root)/\(deviceDir)/hwmon does not exist): its driver reports no temperature or fan")
            }
            return ((name, deviceDir + "/hwmon/" + name), file)
        }
        let (head, file) = split(Substring(spec))
        if SysfsTuning.numbered(head, "hwmon") {
            guard known.contains(where: { $0.name == head }) else { throw FanError("no hwmon device \(head): \(list)") }
            return ((head, hwmon + "/" + head), file)
        }
        let matches = known.filter { $0.chip == head }
        guard let match = matches.first else { throw FanError("no hwmon device named \(head): \(list)") }
        guard matches.count == 1 else {
            throw FanError("\(matches.count) hwmon devices are named \(head) (\(matches.map(\.name).joined(separator: ", "))): give one as hwmonN/\(file)")
        }
        return ((match.name, hwmon + "/" + match.name), file)
    }
}

/// A fan jobgov drives: takes it into manual control, writes its duty, and gives it back (its `_enable` mode, and
/// its duty where the firmware was not driving it) at the end and from the watchdog (`originals`).
public final class FanControl {
    public let root: String
    /// `class/hwmon/hwmonN/pwmM`.
    public let path: String
    public var enablePath: String { path + "_enable" }
    public let originalMode: String
    public let originalDuty: String?
    public private(set) var taken = false

    public init(path: String, root: String) throws(FanError) {
        self.path = path
        self.root = root
        guard let mode = SysfsTuning.read(root, path + "_enable"), !mode.isEmpty else {
            throw FanError("cannot read \(root)/\(path)_enable (\(String(cString: strerror(errno))))")
        }
        originalMode = mode
        originalDuty = SysfsTuning.read(root, path)
    }

    /// The files and values to give back, the duty first (while the fan is still in jobgov's manual mode), and only
    /// where the fan was in manual mode before: in an automatic mode the firmware sets the duty itself.
    public var originals: [SystemTuning.Setting] {
        var out: [SystemTuning.Setting] = []
        if originalMode == FanDevice.manualMode, let duty = originalDuty { out.append(.init(path: path, original: duty)) }
        out.append(.init(path: enablePath, original: originalMode))
        return out
    }

    /// Takes the fan into manual control and sets its first duty.
    public func take(pwm: Int) throws(FanError) {
        try write(enablePath, FanDevice.manualMode)
        taken = true
        try set(pwm: pwm)
    }

    public func set(pwm: Int) throws(FanError) {
        try write(path, String(min(max(pwm, 0), FanPolicy.fullPWM)))
    }

    /// Whether the fan is still in manual mode: something else (another fan daemon, a person) may take it back.
    public var stillManual: Bool { SysfsTuning.read(root, enablePath) == FanDevice.manualMode }

    public func giveBack() {
        guard taken else { return }
        SysfsTuning.restore(originals, root: root)
        taken = false
    }

    private func write(_ file: String, _ value: String) throws(FanError) {
        do {
            try writeCgroupFile(root + "/" + file, value)
        } catch {
            let denied = error.errno == EACCES || error.errno == EPERM || error.errno == EROFS
            throw FanError(error.description + (denied
                ? "; driving a fan needs root (run `sudo jobgov fan …`, or give this user the file with a udev rule)"
                : ""))
        }
    }

    deinit { giveBack() }
}

public struct FanError: Error, CustomStringConvertible, Sendable, Equatable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
