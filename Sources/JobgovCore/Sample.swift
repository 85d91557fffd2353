// What the sensors saw at one instant: plain values, parsed by LinuxSystem, judged by the governor.
// Counters are kept raw (cumulative since boot); rates come from two samples through the guarded helpers below.

/// One line (`some` or `full`) of a PSI file.
public struct PressureLine: Sendable, Equatable {
    /// The kernel's running averages of the stalled share, in percent (0...100).
    public var avg10: Double
    public var avg60: Double
    public var avg300: Double
    /// Stall time in microseconds, cumulative since boot (or since the cgroup was made).
    public var totalMicroseconds: UInt64

    public init(avg10: Double, avg60: Double, avg300: Double, totalMicroseconds: UInt64) {
        self.avg10 = avg10
        self.avg60 = avg60
        self.avg300 = avg300
        self.totalMicroseconds = totalMicroseconds
    }
}

/// A PSI file: `some` (at least one task stalled) and `full` (all non-idle tasks stalled).
public struct Pressure: Sendable, Equatable {
    public var some: PressureLine
    /// nil where the kernel writes no `full` line (system-wide CPU pressure before Linux 5.13).
    public var full: PressureLine?

    public init(some: PressureLine, full: PressureLine? = nil) {
        self.some = some
        self.full = full
    }
}

public enum PressureResource: String, Sendable, Equatable, Hashable, CaseIterable {
    case cpu, memory, io
}

public enum PressureRate {
    /// The share of `elapsedSeconds` (0...1) spent stalled between two readings of one PSI line. Finer than the
    /// kernel's avg10, which lags by seconds. nil when the interval is not positive or the counter went backwards
    /// (a cgroup re-created under the same path).
    public static func stalledFraction(
        previous: PressureLine, current: PressureLine, elapsedSeconds: Double
    ) -> Double? {
        guard elapsedSeconds > 0, elapsedSeconds.isFinite,
              current.totalMicroseconds >= previous.totalMicroseconds else { return nil }
        let stalled = Double(current.totalMicroseconds - previous.totalMicroseconds) / 1_000_000
        // The clock and the file are not read at the same instant, so a fully stalled interval can exceed 1.
        return min(1, stalled / elapsedSeconds)
    }
}

/// /proc/meminfo, in bytes.
public struct MemoryInfo: Sendable, Equatable {
    public var total: UInt64
    public var free: UInt64
    /// The kernel's estimate of memory available without swapping (MemAvailable): free plus reclaimable.
    public var available: UInt64
    public var cached: UInt64
    public var buffers: UInt64
    public var dirty: UInt64
    public var writeback: UInt64
    public var swapTotal: UInt64
    public var swapFree: UInt64
    public var shmem: UInt64
    public var activeFile: UInt64
    public var inactiveFile: UInt64
    public var activeAnon: UInt64
    public var inactiveAnon: UInt64
    /// Every key of the file. Values given in kB are converted to bytes; unitless ones (HugePages_*) are counts.
    public var values: [String: UInt64]

    public init(
        total: UInt64, free: UInt64, available: UInt64, cached: UInt64, buffers: UInt64, dirty: UInt64,
        writeback: UInt64, swapTotal: UInt64, swapFree: UInt64, shmem: UInt64, activeFile: UInt64,
        inactiveFile: UInt64, activeAnon: UInt64, inactiveAnon: UInt64, values: [String: UInt64]
    ) {
        self.total = total
        self.free = free
        self.available = available
        self.cached = cached
        self.buffers = buffers
        self.dirty = dirty
        self.writeback = writeback
        self.swapTotal = swapTotal
        self.swapFree = swapFree
        self.shmem = shmem
        self.activeFile = activeFile
        self.inactiveFile = inactiveFile
        self.activeAnon = activeAnon
        self.inactiveAnon = inactiveAnon
        self.values = values
    }
}

/// One zone of /proc/zoneinfo, in pages. kswapd wakes below `low` and sleeps above `high`; allocations stall
/// in direct reclaim below `min`.
public struct ZoneWatermarks: Sendable, Equatable {
    public var node: Int
    public var zone: String
    public var freePages: UInt64
    public var minPages: UInt64
    public var lowPages: UInt64
    public var highPages: UInt64
    public var managedPages: UInt64

    public init(node: Int, zone: String, freePages: UInt64, minPages: UInt64, lowPages: UInt64,
                highPages: UInt64, managedPages: UInt64) {
        self.node = node
        self.zone = zone
        self.freePages = freePages
        self.minPages = minPages
        self.lowPages = lowPages
        self.highPages = highPages
        self.managedPages = managedPages
    }
}

/// /proc/vmstat. Accessors are nil when this kernel has none of their keys, never a made-up zero.
public struct VMStat: Sendable, Equatable {
    public var counters: [String: UInt64]

    public init(counters: [String: UInt64]) {
        self.counters = counters
    }

    // Reclaim counters are per node since Linux 4.8 (`pgscan_kswapd`) and were per zone before
    // (`pgscan_kswapd_normal`, ...); the per-zone ones are summed.
    public var pgscanKswapd: UInt64? { total("pgscan_kswapd") }
    public var pgscanDirect: UInt64? { total("pgscan_direct") }
    public var pgstealKswapd: UInt64? { total("pgsteal_kswapd") }
    public var pgstealDirect: UInt64? { total("pgsteal_direct") }
    /// Direct-reclaim stalls: one `allocstall` before Linux 4.8, one `allocstall_<zone>` per zone since.
    public var allocstall: UInt64? { total("allocstall") }
    public var oomKill: UInt64? { counters["oom_kill"] }
    /// Refaults of evicted pages (thrashing): `workingset_refault` before Linux 5.9, split into anon/file since.
    public var workingsetRefault: UInt64? {
        counters["workingset_refault"] ?? sum(counters["workingset_refault_anon"], counters["workingset_refault_file"])
    }

    private static let zoneNames: Set<Substring> = ["dma", "dma32", "normal", "highmem", "movable", "device"]

    /// `key` itself, or else the sum of `key_<zone>` (a suffix check, so `pgscan_direct_throttle` is not counted).
    private func total(_ key: String) -> UInt64? {
        if let value = counters[key] { return value }
        let prefix = key + "_"
        let zoned = counters.filter {
            $0.key.hasPrefix(prefix) && Self.zoneNames.contains($0.key.dropFirst(prefix.count))
        }
        return zoned.isEmpty ? nil : zoned.values.reduce(0, &+)
    }

    private func sum(_ a: UInt64?, _ b: UInt64?) -> UInt64? {
        guard a != nil || b != nil else { return nil }
        return (a ?? 0) &+ (b ?? 0)
    }
}

/// The first (`cpu`) line of /proc/stat: time spent by all CPUs together, in jiffies (USER_HZ).
public struct CPUTimes: Sendable, Equatable {
    public var user: UInt64
    public var nice: UInt64
    public var system: UInt64
    public var idle: UInt64
    public var iowait: UInt64
    public var irq: UInt64
    public var softirq: UInt64
    public var steal: UInt64

    public init(user: UInt64, nice: UInt64, system: UInt64, idle: UInt64, iowait: UInt64, irq: UInt64,
                softirq: UInt64, steal: UInt64) {
        self.user = user
        self.nice = nice
        self.system = system
        self.idle = idle
        self.iowait = iowait
        self.irq = irq
        self.softirq = softirq
        self.steal = steal
    }

    /// Time doing work, steal included: a stolen vCPU is no more use to the build than a busy one.
    var busy: UInt64 { user &+ nice &+ system &+ irq &+ softirq &+ steal }
    var waiting: UInt64 { idle &+ iowait }

    /// The busy share (0...1) of CPU time between two readings. nil when no time passed or a sum went backwards.
    /// idle and iowait are taken together because the kernel moves time between them and iowait alone can
    /// decrease on tickless kernels.
    public static func utilization(previous: CPUTimes, current: CPUTimes) -> Double? {
        guard current.busy >= previous.busy, current.waiting >= previous.waiting else { return nil }
        let busy = current.busy - previous.busy
        let total = busy + (current.waiting - previous.waiting)
        guard total > 0 else { return nil }
        return Double(busy) / Double(total)
    }
}

/// One device of /proc/diskstats (cumulative counters).
public struct DiskStat: Sendable, Equatable {
    public var name: String
    public var readsCompleted: UInt64
    public var sectorsRead: UInt64
    public var readMilliseconds: UInt64
    public var writesCompleted: UInt64
    public var sectorsWritten: UInt64
    public var writeMilliseconds: UInt64
    /// Requests in flight now (a gauge, not a counter).
    public var inFlight: UInt64
    /// Time the device had at least one request in flight.
    public var ioTicksMilliseconds: UInt64
    /// In-flight time summed over requests (grows faster than wall time with a deep queue).
    public var weightedMilliseconds: UInt64

    public init(name: String, readsCompleted: UInt64, sectorsRead: UInt64, readMilliseconds: UInt64,
                writesCompleted: UInt64, sectorsWritten: UInt64, writeMilliseconds: UInt64, inFlight: UInt64,
                ioTicksMilliseconds: UInt64, weightedMilliseconds: UInt64) {
        self.name = name
        self.readsCompleted = readsCompleted
        self.sectorsRead = sectorsRead
        self.readMilliseconds = readMilliseconds
        self.writesCompleted = writesCompleted
        self.sectorsWritten = sectorsWritten
        self.writeMilliseconds = writeMilliseconds
        self.inFlight = inFlight
        self.ioTicksMilliseconds = ioTicksMilliseconds
        self.weightedMilliseconds = weightedMilliseconds
    }

    /// Mean time per completed read or write between two readings, in milliseconds. nil when nothing completed
    /// or a counter went backwards (they are 32-bit on 32-bit kernels and wrap; a device can be re-attached).
    public static func averageLatencyMilliseconds(previous: DiskStat, current: DiskStat) -> Double? {
        let before = (ops: previous.readsCompleted &+ previous.writesCompleted,
                      ms: previous.readMilliseconds &+ previous.writeMilliseconds)
        let after = (ops: current.readsCompleted &+ current.writesCompleted,
                     ms: current.readMilliseconds &+ current.writeMilliseconds)
        guard after.ops > before.ops, after.ms >= before.ms else { return nil }
        return Double(after.ms - before.ms) / Double(after.ops - before.ops)
    }

    /// The slowest device between two readings of every device: its name and its average time per completed
    /// request, in milliseconds (the governor's I/O rule and `jobgov monitor` both use this). loop and ram devices
    /// are left out: their requests are a file's or memory's, and a slow one says nothing of the disks. nil when no
    /// device completed a request.
    public static func slowest(previous: [String: DiskStat], current: [String: DiskStat])
        -> (device: String, milliseconds: Double)?
    {
        var worst: (device: String, milliseconds: Double)?
        for (name, after) in current where !name.hasPrefix("loop") && !name.hasPrefix("ram") {
            guard let before = previous[name],
                  let ms = averageLatencyMilliseconds(previous: before, current: after) else { continue }
            // Ties go to the first name in order, so that the device shown does not depend on hashing.
            if let w = worst, ms < w.milliseconds || (ms == w.milliseconds && name > w.device) { continue }
            worst = (name, ms)
        }
        return worst
    }
}

/// The memory controller of one cgroup, from v2 `memory.*` or v1 `memory.*_in_bytes` files.
public struct CgroupMemory: Sendable, Equatable {
    /// v2 memory.current; v1 memory.usage_in_bytes (which the kernel rounds; memory.stat's rss+cache is exact).
    public var usageBytes: UInt64
    /// The cgroup's own hard limit; nil when unlimited. In v1 an ancestor's limit still applies
    /// (`hierarchical_memory_limit` in `stat`).
    public var limitBytes: UInt64?
    /// v2 memory.high (reclaim and throttle above it); nil when unlimited or in v1.
    public var highBytes: UInt64?
    /// v2 memory.peak (Linux 5.19+); v1 memory.max_usage_in_bytes.
    public var peakBytes: UInt64?
    public var stat: [String: UInt64]
    /// Processes the OOM killer killed in this cgroup (v2 `oom_kill` event, v1 `oom_kill` since Linux 4.13).
    public var oomKills: UInt64?
    /// Times the cgroup hit its limit and the OOM path ran (v2 `oom` event); nil in v1.
    public var oomEvents: UInt64?
    /// v1 `under_oom`: tasks sleep at the limit because the OOM killer is disabled; nil in v2.
    public var underOOM: Bool?
    /// v1 `oom_kill_disable`; nil in v2, which has no such switch.
    public var oomKillDisabled: Bool?
    /// Every counter of v2 memory.events or v1 memory.oom_control.
    public var events: [String: UInt64]

    public init(usageBytes: UInt64, limitBytes: UInt64? = nil, highBytes: UInt64? = nil, peakBytes: UInt64? = nil,
                stat: [String: UInt64] = [:], oomKills: UInt64? = nil, oomEvents: UInt64? = nil,
                underOOM: Bool? = nil, oomKillDisabled: Bool? = nil, events: [String: UInt64] = [:]) {
        self.usageBytes = usageBytes
        self.limitBytes = limitBytes
        self.highBytes = highBytes
        self.peakBytes = peakBytes
        self.stat = stat
        self.oomKills = oomKills
        self.oomEvents = oomEvents
        self.underOOM = underOOM
        self.oomKillDisabled = oomKillDisabled
        self.events = events
    }
}

/// CPU use of one cgroup: v2 cpu.stat, or v1 cpuacct.usage.
public struct CgroupCPU: Sendable, Equatable {
    public var usageMicroseconds: UInt64
    /// Time the cgroup was held back by cpu.max; nil without the v2 cpu controller.
    public var throttledMicroseconds: UInt64?

    public init(usageMicroseconds: UInt64, throttledMicroseconds: UInt64? = nil) {
        self.usageMicroseconds = usageMicroseconds
        self.throttledMicroseconds = throttledMicroseconds
    }
}

/// One device's line of a v2 cgroup's `io.stat`: bytes and operations so far.
public struct CgroupIO: Sendable, Equatable {
    public var device: String
    public var readBytes: UInt64
    public var writeBytes: UInt64
    public var readOperations: UInt64
    public var writeOperations: UInt64

    public init(device: String, readBytes: UInt64, writeBytes: UInt64, readOperations: UInt64, writeOperations: UInt64) {
        self.device = device
        self.readBytes = readBytes
        self.writeBytes = writeBytes
        self.readOperations = readOperations
        self.writeOperations = writeOperations
    }
}

/// Everything read in one tick. A piece that could not be read is nil or empty and named in `unavailable`.
public struct Sample: Sendable, Equatable {
    /// Monotonic seconds at the start of the reading.
    public var time: Double
    public var systemPressure: [PressureResource: Pressure]
    public var cgroupPressure: [PressureResource: Pressure]
    public var memory: MemoryInfo?
    public var zones: [ZoneWatermarks]
    public var vmstat: VMStat?
    public var cpu: CPUTimes?
    /// Keyed by device name (`vda`, `nvme0n1`, `nvme0n1p1`).
    public var disks: [String: DiskStat]
    public var cgroupMemory: CgroupMemory?
    public var cgroupCPU: CgroupCPU?
    /// The cgroup's `io.stat` per device (`MAJ:MIN`), where the io controller is enabled.
    public var cgroupIO: [String: CgroupIO] = [:]
    /// What could not be read (`pressure.memory`, `meminfo`, `cgroup.memory.peak`, ...) and why.
    public var unavailable: [String: String]

    public init(
        time: Double, systemPressure: [PressureResource: Pressure] = [:],
        cgroupPressure: [PressureResource: Pressure] = [:], memory: MemoryInfo? = nil, zones: [ZoneWatermarks] = [],
        vmstat: VMStat? = nil, cpu: CPUTimes? = nil, disks: [String: DiskStat] = [:],
        cgroupMemory: CgroupMemory? = nil, cgroupCPU: CgroupCPU? = nil, unavailable: [String: String] = [:]
    ) {
        self.time = time
        self.systemPressure = systemPressure
        self.cgroupPressure = cgroupPressure
        self.memory = memory
        self.zones = zones
        self.vmstat = vmstat
        self.cpu = cpu
        self.disks = disks
        self.cgroupMemory = cgroupMemory
        self.cgroupCPU = cgroupCPU
        self.unavailable = unavailable
    }
}
