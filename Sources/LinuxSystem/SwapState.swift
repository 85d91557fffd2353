#if canImport(Glibc)
import Glibc
#endif

/// Whether the machine already has swap or zswap. jobgov adds a compressed swap device of its own only to a machine
/// that has neither: an administrator's swap is theirs to size, and zswap already compresses what goes to swap.
public struct SwapState: Equatable, Sendable {
    /// One line of /proc/swaps.
    public struct Device: Equatable, Sendable {
        public var path: String
        public var type: String
        public var sizeBytes: UInt64
        public var usedBytes: UInt64
        public var priority: Int
        public init(path: String, type: String, sizeBytes: UInt64, usedBytes: UInt64, priority: Int) {
            self.path = path
            self.type = type
            self.sizeBytes = sizeBytes
            self.usedBytes = usedBytes
            self.priority = priority
        }
    }

    /// Active swap areas with a nonzero size.
    public var devices: [Device]
    /// /sys/module/zswap/parameters/enabled is Y (zswap is a cache in front of swap: alone it holds nothing).
    public var zswapEnabled: Bool

    public init(devices: [Device], zswapEnabled: Bool) {
        self.devices = devices
        self.zswapEnabled = zswapEnabled
    }

    public var hasSwap: Bool { !devices.isEmpty }

    /// Why jobgov should add no swap of its own, or nil when it may (no swap, no zswap).
    public var reasonToAddNothing: String? {
        if let d = devices.first {
            let more = devices.count > 1 ? " and \(devices.count - 1) more" : ""
            return "swap is already active (\(d.path), \(d.sizeBytes >> 20) MiB\(more))"
        }
        if zswapEnabled { return "zswap is enabled (it compresses what goes to swap)" }
        return nil
    }

    /// Reads /proc/swaps and zswap's parameter below injectable roots.
    public static func read(procRoot: String = "/proc", sysRoot: String = "/sys") -> SwapState {
        parse(procSwaps: readSmallFile(procRoot + "/swaps") ?? "",
              zswapEnabled: readSmallFile(sysRoot + "/module/zswap/parameters/enabled"))
    }

    /// `Filename Type Size Used Priority`, sizes in KiB; the header line and zero-sized areas are skipped.
    /// Paths with spaces appear as `\040` (the kernel escapes them) and are given back unescaped.
    public static func parse(procSwaps: String, zswapEnabled: String?) -> SwapState {
        var devices: [Device] = []
        for line in procSwaps.split(separator: "\n").dropFirst() {
            let f = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard f.count >= 5, let size = UInt64(f[2]), let used = UInt64(f[3]), let prio = Int(f[4]), size > 0
            else { continue }
            devices.append(Device(path: unescapeOctal(String(f[0])), type: String(f[1]), sizeBytes: size << 10,
                                  usedBytes: used << 10, priority: prio))
        }
        let z = zswapEnabled?.trimmingWhitespace() ?? ""
        return SwapState(devices: devices, zswapEnabled: z == "Y" || z == "1")
    }

    static func unescapeOctal(_ s: String) -> String {
        guard s.contains("\\") else { return s }
        var out: [UInt8] = []
        let b = Array(s.utf8)
        var i = 0
        while i < b.count {
            if b[i] == UInt8(ascii: "\\"), i + 3 < b.count,
               let v = UInt8(String(decoding: b[(i + 1)...(i + 3)], as: UTF8.self), radix: 8) {
                out.append(v)
                i += 4
            } else {
                out.append(b[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
