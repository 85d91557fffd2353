import JobgovCore

// Pure parsers for /proc and cgroupfs text. `path` is only used in errors. Every kernel file ends in a newline,
// so a last line without one may have been cut by a short read: a failure there is reported as `truncated`
// rather than `malformed`. Required keys that are absent are `truncated` too.

/// One non-empty line of a kernel file.
private struct KernelLine {
    let number: Int
    let text: Substring
    /// The last line, without its newline: it may end mid-field.
    let mayBeCut: Bool

    var fields: [Substring] { text.split(whereSeparator: { $0 == " " || $0 == "\t" }) }

    func error(_ path: String, expected: String) -> SensorError {
        mayBeCut ? .truncated(path: path, expected: expected)
            : .malformed(path: path, line: number, text: String(text))
    }

    func number(_ field: Substring, _ path: String, expected: String) throws(SensorError) -> UInt64 {
        guard let value = UInt64(field) else { throw error(path, expected: expected) }
        return value
    }
}

private func kernelLines(_ text: String) -> [KernelLine] {
    let raw = text.split(separator: "\n", omittingEmptySubsequences: false)
    let endsCleanly = text.hasSuffix("\n")
    var out: [KernelLine] = []
    for (index, line) in raw.enumerated() where !line.allSatisfy({ $0 == " " || $0 == "\t" }) {
        out.append(KernelLine(number: index + 1, text: line, mayBeCut: !endsCleanly && index == raw.count - 1))
    }
    return out
}

/// `key value` lines (vmstat, memory.stat, memory.events, cpu.stat, oom_control).
private func parseKeyedCounters(
    _ text: String, path: String, expected: String
) throws(SensorError) -> [String: UInt64] {
    var counters: [String: UInt64] = [:]
    for line in kernelLines(text) {
        let fields = line.fields
        guard fields.count == 2 else { throw line.error(path, expected: "a value after \(fields.first ?? "")") }
        counters[String(fields[0])] = try line.number(fields[1], path, expected: "the value of \(fields[0])")
    }
    guard !counters.isEmpty else { throw .truncated(path: path, expected: expected) }
    return counters
}

/// The one field of a single-value file (memory.current, cpuacct.usage, ...).
private func singleValue(_ text: String, path: String) throws(SensorError) -> (line: KernelLine, value: Substring) {
    let lines = kernelLines(text)
    guard let line = lines.first else { throw .truncated(path: path, expected: "a number") }
    let fields = line.fields
    guard lines.count == 1, fields.count == 1 else {
        throw SensorError.malformed(path: path, line: line.number, text: String(line.text))
    }
    return (line, fields[0])
}

private func parseNumber(_ text: String, path: String) throws(SensorError) -> UInt64 {
    let (line, value) = try singleValue(text, path: path)
    return try line.number(value, path, expected: "a number")
}

/// A limit file: a number, or `max` (v2) or a huge number (v1) for none (nil). The one reading of "no limit", for
/// the sensors and for `CgroupLayout.effectiveMemoryLimit`.
func parseLimit(_ text: String, path: String) throws(SensorError) -> UInt64? {
    let (line, value) = try singleValue(text, path: path)
    if value == "max" && !line.mayBeCut { return nil }
    let bytes = try line.number(value, path, expected: "a number or max")
    // v1 shows "no limit" as PAGE_COUNTER_MAX in bytes (9223372036854771712 on x86_64, rounded to the page
    // size elsewhere); nothing this large is a real limit.
    return bytes < 1 << 62 ? bytes : nil
}

// MARK: - /proc

/// A PSI file: `some avg10=0.12 avg60=0.05 avg300=0.01 total=123456` and optionally a `full` line.
public func parsePressure(_ text: String, path: String) throws(SensorError) -> Pressure {
    var some: PressureLine?
    var full: PressureLine?
    for line in kernelLines(text) {
        let fields = line.fields
        guard let kind = fields.first, kind == "some" || kind == "full" else {
            throw line.error(path, expected: "a some or full line")
        }
        var values: [Substring: Substring] = [:]
        var stray = false
        for field in fields.dropFirst() {
            guard let eq = field.firstIndex(of: "="), field[field.index(after: eq)...].count > 0 else {
                stray = true
                continue
            }
            values[field[..<eq]] = field[field.index(after: eq)...]
        }
        // Missing keys first: a line cut short usually also ends in a stray fragment.
        for key in ["avg10", "avg60", "avg300", "total"] where values[Substring(key)] == nil {
            throw .truncated(path: path, expected: "\(key)= on the \(kind) line")
        }
        if stray { throw line.error(path, expected: "key=value fields on the \(kind) line") }
        func average(_ key: Substring) throws(SensorError) -> Double {
            guard let value = Double(values[key]!), value.isFinite, value >= 0 else {
                throw line.error(path, expected: "a number for \(key)")
            }
            return value
        }
        let parsed = PressureLine(
            avg10: try average("avg10"), avg60: try average("avg60"), avg300: try average("avg300"),
            totalMicroseconds: try line.number(values["total"]!, path, expected: "a number for total"))
        if kind == "some" { some = parsed } else { full = parsed }
    }
    guard let some else { throw .truncated(path: path, expected: "a \"some\" line") }
    return Pressure(some: some, full: full)
}

/// /proc/meminfo: `Key:   value kB` lines. Every key listed in `MemoryInfo` is required (all exist since 3.14).
public func parseMeminfo(_ text: String, path: String) throws(SensorError) -> MemoryInfo {
    var values: [String: UInt64] = [:]
    for line in kernelLines(text) {
        guard let colon = line.text.firstIndex(of: ":") else { throw line.error(path, expected: "Key: value") }
        let key = String(line.text[..<colon])
        let parts = line.text[line.text.index(after: colon)...].split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard parts.count == 1 || (parts.count == 2 && parts[1] == "kB") else {
            throw line.error(path, expected: "a value in kB for \(key)")
        }
        let number = try line.number(parts[0], path, expected: "a number for \(key)")
        if parts.count == 2 {
            let (bytes, overflow) = number.multipliedReportingOverflow(by: 1024)
            guard !overflow else { throw line.error(path, expected: "a value for \(key)") }
            values[key] = bytes
        } else {
            values[key] = number
        }
    }
    func need(_ key: String) throws(SensorError) -> UInt64 {
        guard let value = values[key] else { throw .truncated(path: path, expected: key) }
        return value
    }
    return MemoryInfo(
        total: try need("MemTotal"), free: try need("MemFree"), available: try need("MemAvailable"),
        cached: try need("Cached"), buffers: try need("Buffers"), dirty: try need("Dirty"),
        writeback: try need("Writeback"), swapTotal: try need("SwapTotal"), swapFree: try need("SwapFree"),
        shmem: try need("Shmem"), activeFile: try need("Active(file)"), inactiveFile: try need("Inactive(file)"),
        activeAnon: try need("Active(anon)"), inactiveAnon: try need("Inactive(anon)"), values: values)
}

/// /proc/zoneinfo: for each `Node N, zone NAME` section, `pages free`, `min`, `low`, `high` and `managed`.
/// (The per-CPU `high:` lines of the pagesets end in a colon and are not watermarks.)
public func parseZoneinfo(_ text: String, path: String) throws(SensorError) -> [ZoneWatermarks] {
    var zones: [ZoneWatermarks] = []
    var current: (node: Int, zone: String, values: [String: UInt64])?
    for line in kernelLines(text) {
        let fields = line.fields
        if fields.first == "Node" {
            if let current { zones.append(try zoneWatermarks(current, path: path)) }
            guard fields.count == 4, fields[1].hasSuffix(","), let node = Int(fields[1].dropLast()),
                  fields[2] == "zone" else { throw line.error(path, expected: "Node N, zone NAME") }
            current = (node, String(fields[3]), [:])
            continue
        }
        guard current != nil else { throw line.error(path, expected: "a Node line first") }
        let key: String, value: Substring
        if fields.count == 3 && fields[0] == "pages" && fields[1] == "free" {
            (key, value) = ("free", fields[2])
        } else if fields.count == 2, ["min", "low", "high", "managed"].contains(fields[0]) {
            (key, value) = (String(fields[0]), fields[1])
        } else {
            continue
        }
        current!.values[key] = try line.number(value, path, expected: "the \(key) of zone \(current!.zone)")
    }
    guard let current else { throw .truncated(path: path, expected: "a \"Node N, zone NAME\" line") }
    zones.append(try zoneWatermarks(current, path: path))
    return zones
}

private func zoneWatermarks(
    _ zone: (node: Int, zone: String, values: [String: UInt64]), path: String
) throws(SensorError) -> ZoneWatermarks {
    func need(_ key: String) throws(SensorError) -> UInt64 {
        guard let value = zone.values[key] else {
            throw .truncated(path: path, expected: "\"\(key)\" for node \(zone.node) zone \(zone.zone)")
        }
        return value
    }
    return ZoneWatermarks(
        node: zone.node, zone: zone.zone, freePages: try need("free"), minPages: try need("min"),
        lowPages: try need("low"), highPages: try need("high"), managedPages: try need("managed"))
}

/// /proc/vmstat: `name value` lines.
public func parseVmstat(_ text: String, path: String) throws(SensorError) -> VMStat {
    VMStat(counters: try parseKeyedCounters(text, path: path, expected: "counters"))
}

/// The aggregate `cpu` line of /proc/stat (the first eight counters; guest time is already inside user).
public func parseProcStat(_ text: String, path: String) throws(SensorError) -> CPUTimes {
    for line in kernelLines(text) {
        let fields = line.fields
        guard fields.first == "cpu" else { continue }
        guard fields.count >= 9 else { throw .truncated(path: path, expected: "eight counters on the cpu line") }
        var n: [UInt64] = []
        for field in fields[1...8] { n.append(try line.number(field, path, expected: "counters on the cpu line")) }
        return CPUTimes(user: n[0], nice: n[1], system: n[2], idle: n[3], iowait: n[4], irq: n[5], softirq: n[6],
                        steal: n[7])
    }
    throw .truncated(path: path, expected: "the \"cpu\" line")
}

/// /proc/diskstats: `major minor name` and at least 11 counters per device (14 fields before Linux 4.18, 18
/// with discards, 20 with flushes).
public func parseDiskstats(_ text: String, path: String) throws(SensorError) -> [String: DiskStat] {
    var disks: [String: DiskStat] = [:]
    for line in kernelLines(text) {
        let f = line.fields
        guard f.count >= 14, UInt32(f[0]) != nil, UInt32(f[1]) != nil else {
            throw line.error(path, expected: "14 fields for each device")
        }
        var n: [UInt64] = []
        for field in f[3...13] { n.append(try line.number(field, path, expected: "counters for \(f[2])")) }
        let name = String(f[2])
        disks[name] = DiskStat(
            name: name, readsCompleted: n[0], sectorsRead: n[2], readMilliseconds: n[3], writesCompleted: n[4],
            sectorsWritten: n[6], writeMilliseconds: n[7], inFlight: n[8], ioTicksMilliseconds: n[9],
            weightedMilliseconds: n[10])
    }
    guard !disks.isEmpty else { throw .truncated(path: path, expected: "a device line") }
    return disks
}

// MARK: - cgroups

/// The OOM kill count of a v2 `memory.events` or a v1 `memory.oom_control`; nil where the kernel does not count
/// them (v1 before Linux 4.13).
public func parseOOMKills(_ text: String, path: String) throws(SensorError) -> UInt64? {
    try parseKeyedCounters(text, path: path, expected: "counters")["oom_kill"]
}

/// A v2 cgroup's memory files (texts as read; nil for a file that is absent, as in the root cgroup or before
/// memory.peak appeared in 5.19). `directory` names the cgroup in errors.
public func parseCgroupV2Memory(
    current: String, max: String?, high: String?, peak: String?, stat: String?, events: String?,
    directory: String
) throws(SensorError) -> CgroupMemory {
    let usage = try parseNumber(current, path: directory + "/memory.current")
    var memory = CgroupMemory(usageBytes: usage)
    if let max { memory.limitBytes = try parseLimit(max, path: directory + "/memory.max") }
    if let high {
        memory.highBytes = try parseLimit(high, path: directory + "/memory.high")
    }
    if let peak { memory.peakBytes = try parseNumber(peak, path: directory + "/memory.peak") }
    if let stat { memory.stat = try parseKeyedCounters(stat, path: directory + "/memory.stat", expected: "counters") }
    if let events {
        memory.events = try parseKeyedCounters(events, path: directory + "/memory.events", expected: "counters")
        memory.oomKills = try parseOOMKills(events, path: directory + "/memory.events")
        memory.oomEvents = memory.events["oom"]
    }
    return memory
}

/// A v1 memory cgroup's files (texts as read; nil for a file not read).
public func parseCgroupV1Memory(
    usage: String, limit limitText: String?, maxUsage: String?, stat: String?, oomControl: String?,
    directory: String
) throws(SensorError) -> CgroupMemory {
    let usageBytes = try parseNumber(usage, path: directory + "/memory.usage_in_bytes")
    var memory = CgroupMemory(usageBytes: usageBytes)
    if let limitText {
        memory.limitBytes = try parseLimit(limitText, path: directory + "/memory.limit_in_bytes")
    }
    if let maxUsage {
        memory.peakBytes = try parseNumber(maxUsage, path: directory + "/memory.max_usage_in_bytes")
    }
    if let stat { memory.stat = try parseKeyedCounters(stat, path: directory + "/memory.stat", expected: "counters") }
    if let oomControl {
        let path = directory + "/memory.oom_control"
        let events = try parseKeyedCounters(oomControl, path: path, expected: "oom_kill_disable")
        guard let disabled = events["oom_kill_disable"] else {
            throw .truncated(path: path, expected: "oom_kill_disable")
        }
        guard let under = events["under_oom"] else { throw .truncated(path: path, expected: "under_oom") }
        memory.events = events
        memory.oomKillDisabled = disabled != 0
        memory.underOOM = under != 0
        memory.oomKills = try parseOOMKills(oomControl, path: path)
    }
    return memory
}

/// v2 cpu.stat: `usage_usec` always; `throttled_usec` only where the cpu controller is enabled.
public func parseCgroupV2CPUStat(_ text: String, path: String) throws(SensorError) -> CgroupCPU {
    let counters = try parseKeyedCounters(text, path: path, expected: "usage_usec")
    guard let usage = counters["usage_usec"] else { throw .truncated(path: path, expected: "usage_usec") }
    return CgroupCPU(usageMicroseconds: usage, throttledMicroseconds: counters["throttled_usec"])
}

/// v1 cpuacct.usage, in nanoseconds.
public func parseCgroupV1CPUAcct(usage: String, path: String) throws(SensorError) -> CgroupCPU {
    CgroupCPU(usageMicroseconds: try parseNumber(usage, path: path) / 1000)
}

/// A v2 cgroup's `io.stat`: `MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N` per line. Devices without
/// I/O are absent; an empty file is a valid "no I/O yet".
public func parseCgroupIOStat(_ text: String, path: String) throws(SensorError) -> [String: CgroupIO] {
    var out: [String: CgroupIO] = [:]
    for (index, line) in text.split(separator: "\n").enumerated() {
        let words = line.split(separator: " ")
        guard let device = words.first, device.contains(":") else {
            throw .malformed(path: path, line: index + 1, text: String(line))
        }
        var values: [String: UInt64] = [:]
        for word in words.dropFirst() {
            let kv = word.split(separator: "=", maxSplits: 1)
            guard kv.count == 2, let v = UInt64(kv[1]) else {
                throw .malformed(path: path, line: index + 1, text: String(line))
            }
            values[String(kv[0])] = v
        }
        guard let rb = values["rbytes"], let wb = values["wbytes"], let ri = values["rios"], let wi = values["wios"] else {
            throw .truncated(path: path, expected: "rbytes, wbytes, rios and wios on each line")
        }
        out[String(device)] = CgroupIO(device: String(device), readBytes: rb, writeBytes: wb, readOperations: ri,
                                       writeOperations: wi)
    }
    return out
}
