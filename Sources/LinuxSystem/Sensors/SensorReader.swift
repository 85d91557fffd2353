#if canImport(Glibc)
import Glibc
#endif
import JobgovCore

/// Reads one `Sample` from /proc and the build's cgroup files. Each piece that cannot be read is left out and
/// named in `Sample.unavailable` with the reason, so one missing file never costs the whole sample.
public struct SensorReader: Sendable {
    public let root: String
    /// The cgroup read: its v2 directory for PSI, `io.stat` and (on pure v2) memory and CPU use; its v1 memory and
    /// cpuacct directories, where set, for memory and CPU use. The paths are prefixed with `root`.
    public let cgroup: CgroupDirectories?
    private let clock: @Sendable () -> Double

    /// - Parameters:
    ///   - root: prefix for every path, so tests can point the reader at a recorded tree.
    ///   - clock: monotonic seconds for `Sample.time` (injectable for tests).
    public init(root: String = "/", cgroup: CgroupDirectories? = nil,
                clock: @escaping @Sendable () -> Double = monotonicSeconds) {
        self.root = root
        self.cgroup = cgroup
        self.clock = clock
    }

    /// What a sample holds: everything (`jobgov monitor`), or what the governor reads every tick (`.governor`),
    /// which leaves out the large files (zoneinfo, vmstat) and the pressure files it does not use.
    public enum Extent: Sendable {
        case full
        case governor
    }

    public func sample(_ extent: Extent = .full) -> Sample {
        var sample = Sample(time: clock())
        var missing: [String: String] = [:]
        let full = extent == .full
        for resource in PressureResource.allCases where full || resource == .cpu {
            sample.systemPressure[resource] = load(
                "pressure.\(resource.rawValue)", "/proc/pressure/\(resource.rawValue)", &missing, parsePressure)
        }
        sample.memory = load("meminfo", "/proc/meminfo", &missing, parseMeminfo)
        if full {
            sample.zones = load("zoneinfo", "/proc/zoneinfo", &missing, parseZoneinfo) ?? []
            sample.vmstat = load("vmstat", "/proc/vmstat", &missing, parseVmstat)
        }
        sample.disks = load("diskstats", "/proc/diskstats", &missing, parseDiskstats) ?? [:]
        if let cgroup {
            if let v2 = cgroup.unified {
                for resource in PressureResource.allCases where full || resource == .memory {
                    sample.cgroupPressure[resource] = load(
                        "cgroup.pressure.\(resource.rawValue)", "\(v2)/\(resource.rawValue).pressure", &missing,
                        parsePressure)
                }
            }
            if let v2 = cgroup.unified {
                // Only where the io controller is enabled; its absence is not an error.
                if full, access(prefixed("\(v2)/io.stat"), F_OK) == 0 {
                    sample.cgroupIO = load("cgroup.io", "\(v2)/io.stat", &missing, parseCgroupIOStat) ?? [:]
                }
            }
            sample.cgroupMemory = cgroupMemory(cgroup, &missing)
            sample.cgroupCPU = cgroupCPU(cgroup, &missing)
        }
        // The governor's CPU rule needs a CPU reading every tick: the build's cgroup's when it has one, else the
        // machine's (no cgroup for the build, or v1 without a cpuacct directory for it).
        if full || sample.cgroupCPU == nil {
            sample.cpu = load("stat", "/proc/stat", &missing, parseProcStat)
        }
        sample.unavailable = missing
        return sample
    }

    // MARK: - Pieces

    private func cgroupMemory(_ cgroup: CgroupDirectories, _ missing: inout [String: String]) -> CgroupMemory? {
        if let dir = cgroup.memory {
            guard let usage = optional("cgroup.memory", "\(dir)/memory.usage_in_bytes", &missing) else { return nil }
            let limit = optional("cgroup.memory.limit", "\(dir)/memory.limit_in_bytes", &missing)
            let maxUsage = optional("cgroup.memory.peak", "\(dir)/memory.max_usage_in_bytes", &missing)
            let stat = optional("cgroup.memory.stat", "\(dir)/memory.stat", &missing)
            let oomControl = optional("cgroup.memory.oom", "\(dir)/memory.oom_control", &missing)
            return attempt("cgroup.memory", &missing) { () throws(SensorError) in
                try parseCgroupV1Memory(usage: usage, limit: limit, maxUsage: maxUsage, stat: stat,
                                        oomControl: oomControl, directory: prefixed(dir))
            }
        }
        if let dir = cgroup.unified {
            // On a hybrid system without a v1 path, this is where "no memory controller here" shows.
            guard let current = optional("cgroup.memory", "\(dir)/memory.current", &missing) else { return nil }
            let max = optional("cgroup.memory.max", "\(dir)/memory.max", &missing)
            let high = optional("cgroup.memory.high", "\(dir)/memory.high", &missing)
            let peak = optional("cgroup.memory.peak", "\(dir)/memory.peak", &missing)
            let stat = optional("cgroup.memory.stat", "\(dir)/memory.stat", &missing)
            let events = optional("cgroup.memory.events", "\(dir)/memory.events", &missing)
            return attempt("cgroup.memory", &missing) { () throws(SensorError) in
                try parseCgroupV2Memory(current: current, max: max, high: high, peak: peak, stat: stat,
                                        events: events, directory: prefixed(dir))
            }
        }
        return nil
    }

    private func cgroupCPU(_ cgroup: CgroupDirectories, _ missing: inout [String: String]) -> CgroupCPU? {
        if let dir = cgroup.cpuacct {
            return load("cgroup.cpu", "\(dir)/cpuacct.usage", &missing) { (text, path) throws(SensorError) in
                try parseCgroupV1CPUAcct(usage: text, path: path)
            }
        }
        if let dir = cgroup.unified {
            return load("cgroup.cpu", "\(dir)/cpu.stat", &missing, parseCgroupV2CPUStat)
        }
        return nil
    }

    // MARK: - Reading

    /// Reads and parses one file; on failure records why under `key` and returns nil.
    private func load<T>(
        _ key: String, _ path: String, _ missing: inout [String: String],
        _ parse: (String, String) throws(SensorError) -> T
    ) -> T? {
        attempt(key, &missing) { () throws(SensorError) in
            try parse(try read(path), prefixed(path))
        }
    }

    private func attempt<T>(
        _ key: String, _ missing: inout [String: String], _ body: () throws(SensorError) -> T
    ) -> T? {
        do throws(SensorError) {
            return try body()
        } catch {
            missing[key] = error.description
            return nil
        }
    }

    /// A file's text, or nil with the reason recorded under `key`.
    private func optional(_ key: String, _ path: String, _ missing: inout [String: String]) -> String? {
        attempt(key, &missing) { () throws(SensorError) in try read(path) }
    }

    private func prefixed(_ path: String) -> String {
        var base = root
        while base.hasSuffix("/") { base.removeLast() }
        return base + (path.hasPrefix("/") ? path : "/" + path)
    }

    /// The whole file. Larger than `limit` is an error rather than a silently shortened reading.
    private func read(_ path: String, limit: Int = 4 << 20) throws(SensorError) -> String {
        let full = prefixed(path)
        do throws(FileReadFailure) {
            return try readFile(full, limit: limit)
        } catch {
            switch error {
            case .open(let code):
                throw code == ENOENT || code == ENOTDIR ? .missing(path: full) : .unreadable(path: full, errno: code)
            case .read(let code):
                throw .unreadable(path: full, errno: code)
            case .tooLarge(let limit):
                throw .truncated(path: full, expected: "an end within \(limit) bytes")
            }
        }
    }
}
