#if canImport(Glibc)
import Glibc
#endif
import CJobgovShims
import JobgovCore

/// A zram device jobgov uses as swap for the duration of a build, so that a frozen job's memory can be paged out
/// (see `PageOut`) and the RAM go to the jobs still running. The pages stay in RAM, compressed (typically 2-4x for
/// a compiler's heap), and come back on demand when the job is thawed.
///
/// The device's swap header carries the label `jobgov-PID`: that is how `removeStale` and the watchdog tell
/// jobgov's devices from anyone else's, and know whose jobgov left one behind.
public final class CompressedSwap {
    /// The zram index: /dev/zramN, /sys/block/zramN.
    public let index: Int
    /// The swap label, `jobgov-PID`.
    public let label: String
    /// The compression algorithm the device uses.
    public let algorithm: String
    /// The uncompressed capacity (disksize as the kernel rounded it).
    public let sizeBytes: UInt64
    private let sysRoot: String
    private let devRoot: String
    public private(set) var removed = false
    /// swapoff and reset done (the label is gone with the data): only hot_remove is left.
    private var resetDone = false

    public var devicePath: String { Self.devicePath(index, devRoot: devRoot) }
    public var sysDirectory: String { Self.sysDirectory(index, sysRoot: sysRoot) }

    /// Highest swap priority: used before any swap someone adds meanwhile.
    public static let defaultPriority: Int32 = 32767
    /// Compression preferred when the kernel offers it. Measured here end to end (scripts/bench/pageout, a g++
    /// -O2 heap): against lzo-rle, the usual default, page-in ~13% faster per CPU second (450 against 400 MB/s),
    /// page-out the same (~340 MB/s; the kernel's per-page reclaim work dominates), ratio ~7% lower (3.8x against
    /// 4.1x of RAM used). A thawed job waits on page-in; the ratio only moves when mem_limit is reached.
    public static let preferredAlgorithm = "lz4"
    public static let labelPrefix = "jobgov-"

    init(index: Int, label: String, algorithm: String, sizeBytes: UInt64, sysRoot: String, devRoot: String) {
        self.index = index
        self.label = label
        self.algorithm = algorithm
        self.sizeBytes = sizeBytes
        self.sysRoot = sysRoot
        self.devRoot = devRoot
    }

    static func devicePath(_ index: Int, devRoot: String) -> String { devRoot + "/zram\(index)" }
    static func sysDirectory(_ index: Int, sysRoot: String) -> String { sysRoot + "/block/zram\(index)" }
    public static func label(owner pid: Int32) -> String { labelPrefix + String(pid) }

    /// Adds a zram device and turns it on as swap.
    ///
    /// - Parameters:
    ///   - sizeBytes: the most memory, uncompressed, that can be paged out to it (zram's disksize). Costs nothing
    ///     until pages arrive (about 0.1% of it for the device's slot table).
    ///   - memoryLimitBytes: the most RAM the compressed pages may take (zram's mem_limit): once reached, page-out
    ///     fails for further pages and they stay in RAM. That RAM is not charged to any cgroup (zram allocates
    ///     it in the kernel), so the caller must count `usage.memoryUsedBytes` against the build itself.
    ///   - pid: whose device it is (the label `jobgov-PID`); jobgov's own pid.
    ///   - priority: swap priority (higher is used first).
    ///
    /// Needs root. On failure, what was made is undone and the error says what to do.
    public static func setUp(sizeBytes: UInt64, memoryLimitBytes: UInt64, owner pid: Int32 = getpid(),
                             priority: Int32 = defaultPriority,
                             sysRoot: String = "/sys", devRoot: String = "/dev") throws(SystemError) -> CompressedSwap {
        let control = sysRoot + "/class/zram-control"
        guard access(control + "/hot_add", F_OK) == 0 else {
            throw SystemError("cannot add a zram device", path: control + "/hot_add", errno: ENOENT,
                              hint: "this kernel has no zram (CONFIG_ZRAM); as a module: modprobe zram")
        }
        let text: String
        do {
            text = try readFile(control + "/hot_add")
        } catch {
            let e: Int32
            switch error {
            case .open(let n), .read(let n): e = n
            case .tooLarge: e = EIO
            }
            throw SystemError("cannot add a zram device", path: control + "/hot_add", errno: e,
                              hint: e == EACCES || e == EPERM ? "needs root" : nil)
        }
        guard let index = Int(text.trimmingWhitespace()) else {
            throw SystemError("cannot add a zram device", path: control + "/hot_add", errno: EIO,
                              hint: "unexpected answer '\(text.trimmingWhitespace())'")
        }
        let label = label(owner: pid)
        let sys = sysDirectory(index, sysRoot: sysRoot)
        // From here on every failure undoes the device (nothing else can be using it yet).
        func undo() { _ = try? removeDevice(index: index, sysRoot: sysRoot, devRoot: devRoot, swapOff: false) }
        do throws(SystemError) {
            var algorithm = currentAlgorithm(readSmallFile(sys + "/comp_algorithm") ?? "") ?? "?"
            if algorithm != preferredAlgorithm, availableAlgorithms(readSmallFile(sys + "/comp_algorithm") ?? "")
                .contains(preferredAlgorithm) {
                // Only before disksize: the kernel refuses a change on an initialised device.
                try writeSys(sys + "/comp_algorithm", preferredAlgorithm, "cannot choose the compression of")
                algorithm = preferredAlgorithm
            }
            try writeSys(sys + "/disksize", String(sizeBytes), "cannot size",
                         hint: "the size must be at least one page; ENOMEM: not enough memory for its slot table")
            try writeSys(sys + "/mem_limit", String(memoryLimitBytes), "cannot cap the memory of")
            let size = UInt64((readSmallFile(sys + "/disksize") ?? "").trimmingWhitespace()) ?? sizeBytes
            let device = devicePath(index, devRoot: devRoot)
            try waitForDeviceNode(device, sys: sys)
            try writeSwapHeader(device: device, sizeBytes: size, label: label)
            let rc = device.withCString { jobgov_swapon($0, priority) }
            guard rc == 0 else {
                throw SystemError("cannot turn on swap on", path: device,
                                  hint: errno == EPERM ? "needs root (CAP_SYS_ADMIN)" : errno == EINVAL ? "the kernel rejected the swap header" : nil)
            }
            return CompressedSwap(index: index, label: label, algorithm: algorithm, sizeBytes: size,
                                  sysRoot: sysRoot, devRoot: devRoot)
        } catch {
            undo()
            throw error
        }
    }

    /// Turns swap off on the device, resets it (frees its memory) and removes it. Idempotent.
    ///
    /// With pages in it, swapoff first reads every one back into RAM (decompressing it and charging it to its
    /// process's cgroup again): a build that paged out 2 GiB needs 2 GiB free and pays about a second of
    /// decompression per GiB; a cgroup at its hard limit can make swapoff fail with ENOMEM (then the device stays,
    /// and this can be called again once the build ended or its limits were lifted). After the build ended the
    /// device is usually empty and this takes milliseconds, but not always: swap is the machine's, and processes
    /// outside the build use it too (on cgroup v1 each memory cgroup keeps its own swappiness, 60 by default, and
    /// one at its limit swaps into the device). Measured on 6.18: when such a process's cgroup is still at its
    /// limit, swapoff fails with ENOMEM and, where that cgroup has the OOM killer on, the charge for its pages
    /// coming back OOM-kills it; with the OOM killer off it is left alone. So a caller retries for a while (the
    /// watchdog does) rather than insisting, and the device should live no longer than the build needs it.
    public func remove() throws(SystemError) {
        guard !removed else { return }
        if !resetDone {
            // Ours only while it carries our label: someone (removeStale of another jobgov cannot, ours is alive;
            // an administrator) may have removed it, and a later hot_add may have got the number again.
            guard Self.swapLabel(device: devicePath) == label else {
                removed = true
                return
            }
            try Self.swapOffAndReset(index: index, sysRoot: sysRoot, devRoot: devRoot)
            resetDone = true
        }
        try Self.hotRemove(index: index, sysRoot: sysRoot)
        removed = true
    }

    deinit { if !removed { try? remove() } }

    /// What the device holds, from mm_stat; nil once it is gone.
    public var usage: Usage? { Self.usage(index: index, sysRoot: sysRoot) }

    public static func usage(index: Int, sysRoot: String = "/sys") -> Usage? {
        Usage(mmStat: readSmallFile(sysDirectory(index, sysRoot: sysRoot) + "/mm_stat") ?? "")
    }

    /// zram's mm_stat: `orig_data_size compr_data_size mem_used_total mem_limit mem_used_max same_pages
    /// pages_compacted huge_pages huge_pages_since`.
    public struct Usage: Equatable, Sendable {
        /// The pages stored, uncompressed (what left the processes' RSS).
        public var originalBytes: UInt64
        /// Their compressed size.
        public var compressedBytes: UInt64
        /// The RAM the device takes for them, allocator overhead included: what the governor must count.
        public var memoryUsedBytes: UInt64
        /// mem_limit (0: none).
        public var memoryLimitBytes: UInt64
        public var memoryUsedMaxBytes: UInt64
        /// Pages stored as a single repeated word (zero pages mostly), which take no memory at all.
        public var samePages: UInt64

        public init(originalBytes: UInt64, compressedBytes: UInt64, memoryUsedBytes: UInt64,
                    memoryLimitBytes: UInt64 = 0, memoryUsedMaxBytes: UInt64 = 0, samePages: UInt64 = 0) {
            self.originalBytes = originalBytes
            self.compressedBytes = compressedBytes
            self.memoryUsedBytes = memoryUsedBytes
            self.memoryLimitBytes = memoryLimitBytes
            self.memoryUsedMaxBytes = memoryUsedMaxBytes
            self.samePages = samePages
        }

        public init?(mmStat: String) {
            let f = mmStat.split(whereSeparator: \.isWhitespace).map { UInt64($0) }
            guard f.count >= 6, let o = f[0], let c = f[1], let m = f[2], let l = f[3], let x = f[4], let s = f[5]
            else { return nil }
            self.init(originalBytes: o, compressedBytes: c, memoryUsedBytes: m, memoryLimitBytes: l,
                      memoryUsedMaxBytes: x, samePages: s)
        }

        /// Uncompressed per byte of RAM actually used (0 when empty).
        public var ratio: Double { memoryUsedBytes == 0 ? 0 : Double(originalBytes) / Double(memoryUsedBytes) }
        /// RAM the paged-out pages no longer take.
        public var savedBytes: Int64 { Int64(originalBytes) - Int64(memoryUsedBytes) }
    }

    // MARK: stale devices

    /// Removes zram swap devices labelled `jobgov-PID` whose jobgov no longer runs (what a jobgov and its watchdog
    /// both killed leave behind). A device with any other label, or none, is never touched. Returns the indices
    /// removed; a device that cannot be removed yet (swapoff needs memory it cannot get) is left for next time.
    @discardableResult
    public static func removeStale(sysRoot: String = "/sys", devRoot: String = "/dev",
                                   isRunning: (Int32) -> Bool = processIsRunning) -> [Int] {
        var removed: [Int] = []
        for index in zramIndices(sysRoot: sysRoot) {
            guard let label = swapLabel(device: devicePath(index, devRoot: devRoot)),
                  let pid = owner(ofLabel: label), pid != getpid(), !isRunning(pid) else { continue }
            if (try? removeDevice(index: index, expectedLabel: label, sysRoot: sysRoot, devRoot: devRoot)) == true {
                removed.append(index)
            }
        }
        return removed
    }

    /// Whether a process with this id exists (EPERM means it does, owned by someone else).
    public static func processIsRunning(_ pid: Int32) -> Bool { kill(pid, 0) == 0 || errno != ESRCH }

    /// The indices of the zram devices present (/sys/block/zramN).
    public static func zramIndices(sysRoot: String = "/sys") -> [Int] {
        directoryEntries(sysRoot + "/block").compactMap { name in
            name.hasPrefix("zram") ? Int(name.dropFirst(4)) : nil
        }.sorted()
    }

    /// The pid in a `jobgov-PID` label.
    public static func owner(ofLabel label: String) -> Int32? {
        guard label.hasPrefix(labelPrefix), let pid = Int32(label.dropFirst(labelPrefix.count)), pid > 0 else { return nil }
        return pid
    }

    /// Removes device `index` only if its swap header carries `expectedLabel`: for the watchdog, which knows the
    /// index jobgov had but not whether jobgov removed it already (and someone else's hot_add got the number
    /// again). True when it was removed; false when it is not ours (or no longer labelled: reset already, which
    /// frees its memory, so an empty device left behind costs nothing).
    public static func removeDevice(index: Int, expectedLabel: String, sysRoot: String = "/sys",
                                    devRoot: String = "/dev") throws(SystemError) -> Bool {
        guard swapLabel(device: devicePath(index, devRoot: devRoot)) == expectedLabel else { return false }
        return try removeDevice(index: index, sysRoot: sysRoot, devRoot: devRoot, swapOff: true)
    }

    /// swapoff, reset, hot_remove; each step accepts "already done". True when the device is gone.
    static func removeDevice(index: Int, sysRoot: String, devRoot: String, swapOff: Bool) throws(SystemError) -> Bool {
        try swapOffAndReset(index: index, sysRoot: sysRoot, devRoot: devRoot, swapOff: swapOff)
        try hotRemove(index: index, sysRoot: sysRoot)
        return true
    }

    static func swapOffAndReset(index: Int, sysRoot: String, devRoot: String, swapOff: Bool = true) throws(SystemError) {
        let device = devicePath(index, devRoot: devRoot)
        let sys = sysDirectory(index, sysRoot: sysRoot)
        if swapOff, access(sys, F_OK) == 0, isActiveSwap(device) {
            // EINVAL: not (or no longer) a swap area.
            if device.withCString({ jobgov_swapoff($0) }) != 0 && errno != EINVAL {
                let e = errno
                throw SystemError("cannot turn off swap on", path: device, errno: e,
                                  hint: e == ENOMEM ? "not enough free memory to take its pages back; try again once the build ended or its memory limit was lifted" : e == EPERM ? "needs root" : nil)
            }
        }
        // reset frees the compressed pages and the slot table; EBUSY while anything holds the device open.
        if access(sys + "/reset", F_OK) == 0 {
            try writeSys(sys + "/reset", "1", "cannot reset",
                         hint: "something still holds it open (swapon, a mount, a process)")
        }
    }

    static func hotRemove(index: Int, sysRoot: String) throws(SystemError) {
        guard access(sysDirectory(index, sysRoot: sysRoot), F_OK) == 0 else { return }
        do {
            try writeCgroupFile(sysRoot + "/class/zram-control/hot_remove", String(index))
        } catch {
            if error.errno == ENODEV || error.errno == ENOENT { return }
            throw SystemError("cannot remove the zram device", path: sysDirectory(index, sysRoot: sysRoot),
                              errno: error.errno ?? EIO, hint: error.errno == EBUSY ? "something still holds it open" : nil)
        }
    }

    /// Whether /proc/swaps lists this device.
    static func isActiveSwap(_ device: String, procRoot: String = "/proc") -> Bool {
        let text = readSmallFile(procRoot + "/swaps") ?? ""
        return text.split(separator: "\n").dropFirst().contains { line in
            line.split(whereSeparator: { $0 == " " || $0 == "\t" }).first.map(String.init) == device
        }
    }

    // MARK: the swap header

    /// The swap header (include/linux/swap.h, `union swap_header`): the first page of the device holds
    /// `bootbits[1024]`, then `u32 version` (1), `u32 last_page`, `u32 nr_badpages`, `u8 uuid[16]`,
    /// `char volume[16]` (the label, at offset 1024 + 28), and at the page's end the magic `SWAPSPACE2`.
    /// (Checked against `mkswap -L` from util-linux 2.38: the label lands at byte 1052.)
    public enum Header {
        public static let versionOffset = 1024
        public static let lastPageOffset = 1028
        public static let badPagesOffset = 1032
        public static let uuidOffset = 1036
        public static let labelOffset = 1052
        public static let labelLength = 16
        public static let magic = Array("SWAPSPACE2".utf8)

        /// The first page of a swap area of `sizeBytes` with this label (at most 16 bytes, cut if longer).
        public static func page(sizeBytes: UInt64, label: String, pageSize: Int, uuid: [UInt8]) -> [UInt8] {
            var page = [UInt8](repeating: 0, count: pageSize)
            func put32(_ v: UInt32, at offset: Int) {
                // Native byte order, as the kernel reads it (it byte-swaps only a header of the other order).
                withUnsafeBytes(of: v) { for (i, b) in $0.enumerated() { page[offset + i] = b } }
            }
            put32(1, at: versionOffset)
            put32(UInt32(clamping: sizeBytes / UInt64(pageSize) - 1), at: lastPageOffset)
            put32(0, at: badPagesOffset)
            for (i, b) in uuid.prefix(16).enumerated() { page[uuidOffset + i] = b }
            for (i, b) in Array(label.utf8).prefix(labelLength).enumerated() { page[labelOffset + i] = b }
            for (i, b) in magic.enumerated() { page[pageSize - magic.count + i] = b }
            return page
        }

        /// The label of a swap header page, or nil when the page is not a swap header (no SWAPSPACE2 magic).
        public static func label(of page: [UInt8]) -> String? {
            guard page.count >= 4096, Array(page.suffix(magic.count)) == magic else { return nil }
            let raw = page[labelOffset..<(labelOffset + labelLength)].prefix { $0 != 0 }
            return String(decoding: raw, as: UTF8.self)
        }
    }

    /// The swap label on a device (its first page), or nil: not readable, not a swap area.
    public static func swapLabel(device: String) -> String? {
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        let fd = retryingInterrupts { open(device, O_RDONLY | O_CLOEXEC) }
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var page = [UInt8](repeating: 0, count: pageSize)
        let n = page.withUnsafeMutableBytes { raw in retryingInterrupts { pread(fd, raw.baseAddress, pageSize, 0) } }
        guard n == pageSize else { return nil }
        return Header.label(of: page)
    }

    /// Writes the swap header directly rather than running `mkswap -L`: it is one page of a fixed, documented
    /// layout, and writing it spares jobgov (and its watchdog, whose PATH lacks /usr/sbin) a child process and a
    /// dependency on where util-linux put mkswap. zram starts zeroed, so nothing else on the device needs clearing.
    static func writeSwapHeader(device: String, sizeBytes: UInt64, label: String) throws(SystemError) {
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard sizeBytes >= UInt64(pageSize) * 10 else {
            throw SystemError("cannot make swap on", path: device, errno: EINVAL, hint: "a swap area needs at least 10 pages")
        }
        var uuid = (0..<16).map { _ in UInt8.random(in: 0...255) }
        uuid[6] = (uuid[6] & 0x0f) | 0x40  // version 4 (random)
        uuid[8] = (uuid[8] & 0x3f) | 0x80  // RFC 4122 variant
        let page = Header.page(sizeBytes: sizeBytes, label: label, pageSize: pageSize, uuid: uuid)
        // O_EXCL on a block device: fails with EBUSY if it is mounted or someone else's swap.
        let fd = retryingInterrupts { open(device, O_WRONLY | O_EXCL | O_CLOEXEC) }
        guard fd >= 0 else { throw SystemError("cannot open", path: device, hint: "to write its swap header") }
        defer { close(fd) }
        let n = page.withUnsafeBytes { raw in retryingInterrupts { pwrite(fd, raw.baseAddress, raw.count, 0) } }
        guard n == pageSize else { throw SystemError("cannot write the swap header to", path: device) }
        guard fsync(fd) == 0 else { throw SystemError("cannot write the swap header to", path: device) }
    }

    /// devtmpfs creates /dev/zramN as hot_add returns; where /dev is not devtmpfs (a container), udev may take a
    /// moment or never come, so after a short wait the node is made from /sys/block/zramN/dev.
    static func waitForDeviceNode(_ device: String, sys: String) throws(SystemError) {
        for _ in 0..<50 {
            if access(device, F_OK) == 0 { return }
            usleep(10_000)
        }
        let numbers = (readSmallFile(sys + "/dev") ?? "").trimmingWhitespace().split(separator: ":").compactMap { UInt32($0) }
        guard numbers.count == 2 else {
            throw SystemError("cannot find the device node", path: device, errno: ENOENT, hint: "no \(sys)/dev")
        }
        // glibc's makedev() is a macro Swift does not import; this is its encoding.
        let (major, minor) = (UInt64(numbers[0]), UInt64(numbers[1]))
        let dev = ((major & 0xfffff000) << 32) | ((major & 0xfff) << 8) | ((minor & 0xffffff00) << 12) | (minor & 0xff)
        guard mknod(device, S_IFBLK | 0o600, __dev_t(dev)) == 0 || errno == EEXIST else {
            throw SystemError("cannot create the device node", path: device)
        }
    }

    // MARK: sysfs helpers

    /// The algorithm in brackets in comp_algorithm (`[lzo-rle] lzo lz4`).
    static func currentAlgorithm(_ text: String) -> String? {
        for word in text.split(whereSeparator: \.isWhitespace) where word.hasPrefix("[") && word.hasSuffix("]") {
            return String(word.dropFirst().dropLast())
        }
        return nil
    }

    static func availableAlgorithms(_ text: String) -> [String] {
        text.split(whereSeparator: \.isWhitespace).map { String($0).trimmingCharacters(in: "[]") }
    }

    static func writeSys(_ path: String, _ value: String, _ doing: String, hint: String? = nil) throws(SystemError) {
        do {
            try writeCgroupFile(path, value)
        } catch {
            let e = error.errno ?? EIO
            throw SystemError("\(doing) the zram device (writing '\(value)')", path: path, errno: e,
                              hint: e == EACCES || e == EPERM ? "needs root" : hint)
        }
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let c = s.first, set.contains(c) { s = s.dropFirst() }
        while let c = s.last, set.contains(c) { s = s.dropLast() }
        return String(s)
    }
}
