#if canImport(Glibc)
import Glibc
#endif
import BPFProbes
import JobgovCore
import LinuxSystem

/// `jobgov monitor`'s per-job view, from the eBPF observers: the build's jobs by memory with their peaks and
/// reclaim stalls, and the block I/O and run-queue latency of the last interval. Needs root and a cgroup v2
/// directory (the build's); without them the monitor shows what it showed before, and says why once.
final class MonitorJobs {
    private let probes: BuildProbes
    private let cgroupDirs: [String]
    private let buildPID: Int32?
    private var table = JobTable()
    private var lastIO = LatencyHistogram(buckets: [])
    private var lastRunQueue = LatencyHistogram(buckets: [])
    private let tree = ProcessTree()

    struct JobLine {
        var pid: Int32
        var rss: UInt64
        var peak: UInt64
        var stallNanoseconds: UInt64
        var command: String
    }

    /// nil, with the reason, when the observers cannot run here.
    static func open(v2Dir: String, otherDirs: [String], buildPID: Int32?) -> (MonitorJobs?, String?) {
        do {
            let p = try BuildProbes.open(cgroupV2Path: v2Dir, leaveOut: [.execGate])
            guard p.isAvailable(.memory) || p.isAvailable(.processes) else {
                let why = p.unavailable.first?.reason ?? "not available"
                p.close()
                return (nil, why)
            }
            return (MonitorJobs(probes: p, cgroupDirs: [v2Dir] + otherDirs, buildPID: buildPID), nil)
        } catch {
            return (nil, "\(error)")
        }
    }

    private init(probes: BuildProbes, cgroupDirs: [String], buildPID: Int32?) {
        self.probes = probes
        self.cgroupDirs = cgroupDirs
        self.buildPID = buildPID
        lastIO = probes.histogram(.blockIO)
        lastRunQueue = probes.histogram(.runQueue)
    }

    deinit { probes.close() }

    /// One reading: the jobs now (largest first), and the interval's latencies.
    func read(now: Double) -> (jobs: [JobLine], ioP99Microseconds: UInt64?, runQueueP90Microseconds: UInt64?) {
        probes.drain { _ in }
        let records = probes.records()
        // The build's processes with their parents: below the jobgov process, or listed by the cgroup.
        var processes: [ProcessObservation]
        if let buildPID {
            processes = tree.observe(below: buildPID)
        } else {
            var pids = Set<Int32>()
            for dir in cgroupDirs { pids.formUnion(BuildCgroup.processes(in: dir)) }
            processes = pids.compactMap { tree.observation(of: $0) }
        }
        for i in processes.indices {
            if let r = records[processes[i].pid] {
                processes[i].rssBytes = r.currentRSS
                processes[i].peakRSSBytes = r.peakRSS
            }
        }
        _ = table.update(processes, launched: buildPID.flatMap { tree.children(of: $0).first } ?? 0, now: now) {
            self.tree.arguments(of: $0)
        }
        var lines: [JobLine] = []
        for job in table.running {
            var stall: UInt64 = 0
            for pid in job.pids {
                if let r = records[pid] { stall += r.directReclaimNanoseconds + r.cgroupReclaimNanoseconds }
            }
            lines.append(JobLine(pid: job.id.pid, rss: job.rssBytes, peak: job.peakBytes, stallNanoseconds: stall,
                                 command: job.command))
        }
        lines.sort { $0.rss > $1.rss }
        let io = probes.histogram(.blockIO)
        let rq = probes.histogram(.runQueue)
        defer {
            lastIO = io
            lastRunQueue = rq
        }
        return (lines, io.subtracting(lastIO).quantileUpperBound(0.99), rq.subtracting(lastRunQueue).quantileUpperBound(0.90))
    }

    static func screen(_ r: (jobs: [JobLine], ioP99Microseconds: UInt64?, runQueueP90Microseconds: UInt64?)) -> String {
        var out = "jobs (eBPF)  \(r.jobs.count) running"
        if let io = r.ioP99Microseconds { out += "  block I/O p99 <= \(latency(io))" }
        if let rq = r.runQueueP90Microseconds { out += "  run-queue p90 <= \(latency(rq))" }
        out += "\n"
        for j in r.jobs.prefix(5) {
            let command = j.command.count > 48 ? String(j.command.prefix(45)) + "..." : j.command
            out += "  \(pad(String(j.pid), 7)) \(pad(MemorySize.format(j.rss), 10)) peak \(pad(MemorySize.format(j.peak), 10))"
                + " reclaim \(pad(String(j.stallNanoseconds / 1_000_000) + " ms", 8)) \(command)\n"
        }
        return out
    }

    static func json(_ r: (jobs: [JobLine], ioP99Microseconds: UInt64?, runQueueP90Microseconds: UInt64?)) -> String {
        var parts: [String] = []
        parts.append("\"jobs\":[" + r.jobs.prefix(10).map {
            var w = JSONObjectWriter()
            w.add("pid", Int($0.pid))
            w.add("rss_bytes", Int($0.rss))
            w.add("peak_bytes", Int($0.peak))
            w.add("reclaim_ms", Int($0.stallNanoseconds / 1_000_000))
            w.add("command", $0.command)
            return w.text
        }.joined(separator: ",") + "]")
        if let io = r.ioP99Microseconds { parts.append("\"block_io_p99_us\":\(io)") }
        if let rq = r.runQueueP90Microseconds { parts.append("\"run_queue_p90_us\":\(rq)") }
        return parts.joined(separator: ",")
    }

    private static func latency(_ us: UInt64) -> String { us >= 1000 ? "\(us / 1000) ms" : "\(us) us" }
    private static func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
}
