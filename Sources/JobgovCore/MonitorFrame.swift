/// What `jobgov monitor` shows for one interval, computed from two consecutive samples. Pure, so the numbers and
/// the three renderings (screen, plain line, JSON line) are tested from fixtures.
public struct MonitorFrame: Equatable, Sendable {
    /// Stalled share of the interval (0...1) from PSI `total` deltas, per resource: `some` and `full`.
    public var systemStall: [PressureResource: (some: Double?, full: Double?)]
    public var cgroupStall: [PressureResource: (some: Double?, full: Double?)]
    public var memoryTotal: UInt64?
    public var memoryAvailable: UInt64?
    /// Free pages against the zones' watermarks, summed over zones, in bytes.
    public var watermarkFree: UInt64?
    public var watermarkMin: UInt64?
    public var watermarkLow: UInt64?
    public var watermarkHigh: UInt64?
    /// Pages scanned per second by kswapd and by allocating tasks (direct reclaim).
    public var kswapdScanPerSecond: Double?
    public var directScanPerSecond: Double?
    public var cpuBusy: Double?
    /// The slowest device's average request latency over the interval, in milliseconds.
    public var ioLatencyMilliseconds: Double?
    public var ioLatencyDevice: String?
    public var cgroupUsage: UInt64?
    public var cgroupLimit: UInt64?
    public var cgroupHigh: UInt64?
    public var cgroupOOMKills: UInt64?
    /// The cgroup's reads and writes per second, over every device in its io.stat (v2 io controller only).
    public var cgroupReadBytesPerSecond: Double?
    public var cgroupWriteBytesPerSecond: Double?
    public var systemOOMKills: UInt64?
    public var unavailable: [String: String]

    public static func == (a: MonitorFrame, b: MonitorFrame) -> Bool { a.jsonLine == b.jsonLine }

    public init(previous: Sample, current: Sample, pageSize: UInt64 = 4096) {
        let dt = current.time - previous.time
        func stalls(_ before: [PressureResource: Pressure], _ after: [PressureResource: Pressure])
            -> [PressureResource: (some: Double?, full: Double?)]
        {
            var out: [PressureResource: (some: Double?, full: Double?)] = [:]
            for resource in PressureResource.allCases {
                guard let b = before[resource], let a = after[resource] else { continue }
                let some = PressureRate.stalledFraction(previous: b.some, current: a.some, elapsedSeconds: dt)
                var full: Double?
                if let bf = b.full, let af = a.full {
                    full = PressureRate.stalledFraction(previous: bf, current: af, elapsedSeconds: dt)
                }
                out[resource] = (some, full)
            }
            return out
        }
        systemStall = stalls(previous.systemPressure, current.systemPressure)
        cgroupStall = stalls(previous.cgroupPressure, current.cgroupPressure)
        memoryTotal = current.memory?.total
        memoryAvailable = current.memory?.available
        if !current.zones.isEmpty {
            watermarkFree = current.zones.reduce(0) { $0 + $1.freePages } * pageSize
            watermarkMin = current.zones.reduce(0) { $0 + $1.minPages } * pageSize
            watermarkLow = current.zones.reduce(0) { $0 + $1.lowPages } * pageSize
            watermarkHigh = current.zones.reduce(0) { $0 + $1.highPages } * pageSize
        }
        func rate(_ before: UInt64?, _ after: UInt64?) -> Double? {
            guard let before, let after, after >= before, dt > 0 else { return nil }
            return Double(after - before) / dt
        }
        kswapdScanPerSecond = rate(previous.vmstat?.pgscanKswapd, current.vmstat?.pgscanKswapd)
        directScanPerSecond = rate(previous.vmstat?.pgscanDirect, current.vmstat?.pgscanDirect)
        if let b = previous.cpu, let a = current.cpu { cpuBusy = CPUTimes.utilization(previous: b, current: a) }
        if let slowest = DiskStat.slowest(previous: previous.disks, current: current.disks) {
            ioLatencyMilliseconds = slowest.milliseconds
            ioLatencyDevice = slowest.device
        }
        cgroupUsage = current.cgroupMemory?.usageBytes
        cgroupLimit = current.cgroupMemory?.limitBytes
        cgroupHigh = current.cgroupMemory?.highBytes
        cgroupOOMKills = current.cgroupMemory?.oomKills
        if !current.cgroupIO.isEmpty, !previous.cgroupIO.isEmpty {
            func total(_ io: [String: CgroupIO], _ field: (CgroupIO) -> UInt64) -> UInt64 { io.values.reduce(0) { $0 + field($1) } }
            cgroupReadBytesPerSecond = rate(total(previous.cgroupIO, \.readBytes), total(current.cgroupIO, \.readBytes))
            cgroupWriteBytesPerSecond = rate(total(previous.cgroupIO, \.writeBytes), total(current.cgroupIO, \.writeBytes))
        }
        systemOOMKills = current.vmstat?.oomKill
        unavailable = current.unavailable
    }

    // MARK: renderings

    private static func percent(_ v: Double?) -> String {
        guard let v else { return "-" }
        let tenths = Int((v * 1000).rounded())
        return "\(tenths / 10).\(tenths % 10)%"
    }

    private static func size(_ v: UInt64?) -> String { v.map(MemorySize.format) ?? "-" }

    private static func number(_ v: Double?) -> String {
        guard let v else { return "-" }
        return v >= 100 ? String(Int(v.rounded())) : String(Int((v * 10).rounded()) / 10) + "." + String(Int((v * 10).rounded()) % 10)
    }

    private func psiText(_ stalls: [PressureResource: (some: Double?, full: Double?)]) -> String {
        PressureResource.allCases.compactMap { r in
            stalls[r].map { "\(r.rawValue) \(Self.percent($0.some))/\(Self.percent($0.full))" }
        }.joined(separator: " ")
    }

    /// One line for logs and pipes.
    public var plainLine: String {
        var parts = ["psi(some/full) \(psiText(systemStall))"]
        parts.append("mem avail \(Self.size(memoryAvailable)) of \(Self.size(memoryTotal))")
        if let free = watermarkFree {
            parts.append("free \(Self.size(free)) (wmark min \(Self.size(watermarkMin)) low \(Self.size(watermarkLow)) high \(Self.size(watermarkHigh)))")
        }
        parts.append("scan kswapd \(Self.number(kswapdScanPerSecond))/s direct \(Self.number(directScanPerSecond))/s")
        parts.append("cpu \(Self.percent(cpuBusy))")
        parts.append("io \(Self.number(ioLatencyMilliseconds)) ms\(ioLatencyDevice.map { " (\($0))" } ?? "")")
        if cgroupUsage != nil || !cgroupStall.isEmpty {
            var cg = "cgroup \(Self.size(cgroupUsage))"
            if let limit = cgroupLimit { cg += " of \(Self.size(limit))" }
            if let high = cgroupHigh { cg += " (high \(Self.size(high)))" }
            if !cgroupStall.isEmpty { cg += " psi \(psiText(cgroupStall))" }
            if let kills = cgroupOOMKills { cg += " oom_kills \(kills)" }
            if let r = cgroupReadBytesPerSecond, let w = cgroupWriteBytesPerSecond {
                cg += " io read \(Self.size(UInt64(r)))/s write \(Self.size(UInt64(w)))/s"
            }
            parts.append(cg)
        }
        return parts.joined(separator: " | ")
    }

    /// A block redrawn in place on a terminal.
    public var screen: String {
        var lines: [String] = []
        func row(_ label: String, _ value: String) { lines.append(label.padding(16) + value) }
        row("pressure", "some / full, share of the last interval")
        for r in PressureResource.allCases {
            let sys = systemStall[r].map { "\(Self.percent($0.some)) / \(Self.percent($0.full))" } ?? "-"
            let cg = cgroupStall[r].map { "   cgroup \(Self.percent($0.some)) / \(Self.percent($0.full))" } ?? ""
            row("  " + r.rawValue, sys + cg)
        }
        row("memory", "available \(Self.size(memoryAvailable)) of \(Self.size(memoryTotal))")
        if let free = watermarkFree {
            row("  watermarks", "free \(Self.size(free)); min \(Self.size(watermarkMin)), low \(Self.size(watermarkLow)), high \(Self.size(watermarkHigh))")
        }
        row("  reclaim", "kswapd \(Self.number(kswapdScanPerSecond)) pages/s, direct \(Self.number(directScanPerSecond)) pages/s")
        if let oom = systemOOMKills { row("  oom kills", "\(oom) since boot") }
        row("cpu", "busy \(Self.percent(cpuBusy))")
        row("io", "latency \(Self.number(ioLatencyMilliseconds)) ms\(ioLatencyDevice.map { " (\($0))" } ?? "")")
        if cgroupUsage != nil {
            var text = "\(Self.size(cgroupUsage))"
            if let limit = cgroupLimit { text += " of \(Self.size(limit)) limit" }
            if let high = cgroupHigh { text += ", high \(Self.size(high))" }
            if let kills = cgroupOOMKills { text += ", \(kills) OOM kills" }
            row("cgroup memory", text)
        }
        if let r = cgroupReadBytesPerSecond, let w = cgroupWriteBytesPerSecond {
            row("cgroup io", "read \(Self.size(UInt64(r)))/s, write \(Self.size(UInt64(w)))/s")
        }
        if !unavailable.isEmpty {
            row("unavailable", unavailable.keys.sorted().joined(separator: ", "))
        }
        return lines.joined(separator: "\n")
    }

    /// One JSON object for scripts; keys are stable.
    public var jsonLine: String {
        var w = JSONObjectWriter()
        for r in PressureResource.allCases {
            if let s = systemStall[r] {
                if let v = s.some { w.add("psi_\(r.rawValue)_some", v) }
                if let v = s.full { w.add("psi_\(r.rawValue)_full", v) }
            }
            if let s = cgroupStall[r] {
                if let v = s.some { w.add("cgroup_psi_\(r.rawValue)_some", v) }
                if let v = s.full { w.add("cgroup_psi_\(r.rawValue)_full", v) }
            }
        }
        func add(_ key: String, _ v: UInt64?) { if let v { w.add(key, Int(clamping: v)) } }
        func add(_ key: String, _ v: Double?) { if let v { w.add(key, v) } }
        add("mem_total", memoryTotal)
        add("mem_available", memoryAvailable)
        add("wmark_free", watermarkFree)
        add("wmark_min", watermarkMin)
        add("wmark_low", watermarkLow)
        add("wmark_high", watermarkHigh)
        add("kswapd_scan_per_s", kswapdScanPerSecond)
        add("direct_scan_per_s", directScanPerSecond)
        add("cpu_busy", cpuBusy)
        add("io_latency_ms", ioLatencyMilliseconds)
        if let d = ioLatencyDevice { w.add("io_latency_device", d) }
        add("cgroup_usage", cgroupUsage)
        add("cgroup_limit", cgroupLimit)
        add("cgroup_high", cgroupHigh)
        add("cgroup_oom_kills", cgroupOOMKills)
        add("cgroup_read_bytes_per_s", cgroupReadBytesPerSecond)
        add("cgroup_write_bytes_per_s", cgroupWriteBytesPerSecond)
        add("oom_kills", systemOOMKills)
        if !unavailable.isEmpty { w.add("unavailable", unavailable.keys.sorted().joined(separator: ",")) }
        return w.text
    }
}

extension String {
    func padding(_ width: Int) -> String { count >= width ? self + " " : self + String(repeating: " ", count: width - count) }
}
