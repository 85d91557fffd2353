#if canImport(Glibc)
import Glibc
#endif
import BPFProbes
import Dispatch
import GovernorRuntime
import JobgovCore
import LinuxSystem
import Synchronization

/// Processes whose page-out is to stop at its next batch (their job was thawed or ended meanwhile).
final class PageOutStops: Sendable {
    private let pids = Mutex<Set<Int32>>([])
    func stop(_ list: [Int32]) { pids.withLock { $0.formUnion(list) } }
    func clear(_ list: [Int32]) { pids.withLock { $0.subtract(list) } }
    func contains(_ pid: Int32) -> Bool { pids.withLock { $0.contains(pid) } }
}

/// The governor's loop on the real kernel: readings from cgroupfs, /proc and the eBPF observers; freezing through a
/// leaf cgroup per job, paging out with process_madvise, holding off the OOM killer and the build-wide freeze on the
/// build's cgroup.
final class KernelBuild: BuildSensing, BuildActuating {
    private let cgroup: BuildCgroup?
    private let sensors: SensorReader
    private let tree = ProcessTree()
    private let cpus: Int
    /// The sample the CPU and I/O rates are measured from, and the rates it gave.
    private var previous: Sample?
    private var lastRates: (cpuBusy: Double?, ioLatency: Double?) = (nil, nil)
    static let shortestRateInterval = 0.05
    private var leaves: [JobID: JobCgroup] = [:]
    /// The eBPF observers, once attached (a second into the build: loading them takes about 0.1 s; before the
    /// build starts where the exec gate is wanted).
    private(set) var probes: BuildProbes?
    /// Events drained between two ticks (when the ring buffer woke the loop), for the next tick.
    private var pendingEvents: [ProbeEvent] = []
    private var probesAttempted = false
    /// Page-outs run one after another, off the supervisor's loop.
    private let pageOutQueue = DispatchQueue(label: "jobgov.page-out")
    private let pageOutStops = PageOutStops()
    /// Who started whom in the build, from the fork events (to find the job of a process that lived between two
    /// readings).
    private var parents: [Int32: Int32] = [:]
    /// Processes jobgov paged out: their swap is read with their memory.
    private var pagedPIDs: Set<Int32> = []
    /// Machine-wide tuning for the last rung (root only; restored on every way out, by the watchdog too).
    let tuning: SystemTuning? = geteuid() == 0 ? SystemTuning() : nil
    /// JOBGOV_DEBUG_TICK: print what each tick's readings cost.
    private let debugTicks = getenv("JOBGOV_DEBUG_TICK") != nil
    private let say: @Sendable (String) -> Void
    /// The compressed swap made for the build: its memory is the build's, outside its cgroup.
    private let swap: CompressedSwap?
    /// The CPU signals of the last reading (for the CPU boost); `runningJobs` is the caller's to fill in.
    private(set) var cpuSignals = CPUSignals(cpusBusy: nil, runningJobs: 0)
    /// The CPUs the build used over the last rate interval, from its own cgroup (nil without one: the machine's
    /// use is no measure of the build's). Reported to `jobgov daemon`.
    private(set) var ownCPUsUsed: Double?
    /// The build's own CPU pressure and run-queue latency (eBPF) are read only where a CPU boost can use them.
    var readsCPUSignals = false
    private var lastRunQueue = LatencyHistogram(buckets: [])
    private var lastCPUPressure: (time: Double, some: PressureLine)?

    init(cgroup: BuildCgroup?, cpus: Int, swap: CompressedSwap?, say: @escaping @Sendable (String) -> Void) {
        self.cgroup = cgroup
        self.swap = swap
        self.cpus = cpus
        self.say = say
        // The build's own CPU time: v2's cpu.stat, else v1's cpuacct.usage where cpuacct shares the build's cpu
        // directory (a cpu directory is made only for --cpu-max: it costs fork-heavy builds time). Without either,
        // the sensors read the machine's CPU use from /proc/stat.
        self.sensors = SensorReader(cgroup: cgroup.map {
            let cpuacct = $0.directories.cpu.flatMap { access($0 + "/cpuacct.usage", F_OK) == 0 ? $0 : nil }
            return CgroupDirectories(unified: $0.directories.unified, memory: $0.directories.memory, cpuacct: cpuacct)
        })
    }

    // MARK: sensing

    func read() -> BuildReading {
        let t0 = monotonicSeconds()
        let sample = sensors.sample(.governor)
        let t1 = monotonicSeconds()
        var r = BuildReading()
        r.processes = tree.observe(below: getpid())
        // A process the exec gate holds has not started its job yet (as a job waiting for a token has not).
        if let probes, probes.isGateOn, case let held = Set(probes.gatedProcesses.map(\.pid)), !held.isEmpty {
            r.processes.removeAll { held.contains($0.pid) }
        }
        // A paged-out process's memory in swap is still its job's (read for those processes only: one more file).
        if !pagedPIDs.isEmpty {
            let alive = Set(r.processes.map(\.pid))
            pagedPIDs.formIntersection(alive)
            for k in r.processes.indices where pagedPIDs.contains(r.processes[k].pid) {
                r.processes[k].swapBytes = PageOut.memory(pid: r.processes[k].pid).swap ?? 0
            }
        }
        if debugTicks { note("debug: sample \(Int((t1 - t0) * 1e6)) us, processes \(Int((monotonicSeconds() - t1) * 1e6)) us (\(r.processes.count))") }
        let memory = sample.cgroupMemory
        let usage = memory?.usageBytes ?? 0
        let inactiveFile = memory?.stat["total_inactive_file"] ?? memory?.stat["inactive_file"] ?? 0
        r.memoryUsageBytes = usage
        r.memoryUsedBytes = usage > inactiveFile ? usage - inactiveFile : usage
        // Paged-out memory still takes RAM, compressed, outside the cgroup: the budget counts it.
        r.memoryUsedBytes += swap?.usage?.memoryUsedBytes ?? 0
        r.memoryPeakBytes = memory?.peakBytes
        r.memoryLimitBytes = memory?.limitBytes
        r.oomKills = memory?.oomKills
        r.underOOM = memory?.underOOM == true
        r.systemAvailableBytes = sample.memory?.available
        r.systemTotalBytes = sample.memory?.total
        // Rates need an interval long enough to mean something: /proc/stat counts in 10 ms ticks, and a tick the
        // control socket asks for can come milliseconds after the last. Until then the last rates stand.
        if let previous, sample.time - previous.time < Self.shortestRateInterval {
            r.cpuBusy = lastRates.cpuBusy
            r.ioLatencySeconds = lastRates.ioLatency
        } else {
            r.cpuBusy = previous.flatMap { buildCPUShare(from: $0, to: sample, cpus: cpus) }
            ownCPUsUsed = previous?.cgroupCPU != nil && sample.cgroupCPU != nil ? r.cpuBusy.map { $0 * Double(cpus) } : nil
            r.ioLatencySeconds = previous.flatMap { DiskStat.slowest(previous: $0.disks, current: sample.disks) }
                .map { $0.milliseconds / 1000 }
            lastRates = (r.cpuBusy, r.ioLatencySeconds)
            previous = sample
        }
        r.memoryPressure = sample.cgroupPressure[.memory]?.some.avg10 ?? sample.systemPressure[.memory]?.some.avg10 ?? 0
        r.cpuPressure = sample.systemPressure[.cpu]?.some.avg10 ?? 0
        if readsCPUSignals {
            cpuSignals = CPUSignals(cpusBusy: r.cpuBusy.map { $0 * Double(cpus) }, runningJobs: 0,
                                    cpuStall: buildCPUStall(now: sample.time), runQueueP90Seconds: runQueueP90())
        }
        return r
    }

    /// Takes the events waiting in the ring buffer now (its descriptor is readable), for the next `events()`.
    func collectEvents() {
        probes?.poll(milliseconds: 0) { pendingEvents.append($0) }
    }

    func events() -> [BuildEvent] {
        probes?.drain { pendingEvents.append($0) }
        var out: [BuildEvent] = []
        var ended: [Int32] = []
        let batch = pendingEvents
        pendingEvents = []
        for event in batch {
            switch event {
            case .fork(let parent, let child):
                parents[child] = parent
            case .exit(let pid, _, let peak):
                out.append(.exited(pid: pid, peakBytes: peak))
                ended.append(pid)
            case .oomVictim(let pid, let command, _, let inBuild) where inBuild:
                var chain: [Int32] = []
                var at = pid
                while let up = parents[at], chain.count < 32 { chain.append(up); at = up }
                out.append(.oomVictim(pid: pid, command: command, ancestors: chain))
            default:
                break
            }
        }
        // Forgotten after the batch in which they ended: a victim's exit comes after its OOM event.
        for pid in ended { parents[pid] = nil }
        return out
    }

    func arguments(of pid: Int32) -> [String]? { tree.arguments(of: pid) }

    func oomKills() -> UInt64? { cgroup?.oomKills() }

    var namesOOMVictims: Bool { probes?.isAvailable(.oom) == true }

    /// Loads the observers jobgov uses (process exits with their exact peaks, reclaim stalls, OOM victims) and
    /// says once which are on and which are off and why. The high-frequency ones (per-page RSS, the scheduler,
    /// block I/O) are for `jobgov monitor`, not paid for during a build. With `gateTarget`, the exec gate too, on
    /// from then on with that many jobs allowed (for a build tool that takes no jobserver tokens).
    func attachProbes(unifiedDir: String, gateTarget: Int? = nil) {
        guard !probesAttempted else { return }
        probesAttempted = true
        do {
            var leaveOut: Set<ProbeObserver> = [.memory, .blockIO, .runQueue, .execGate]
            if readsCPUSignals { leaveOut.remove(.runQueue) }
            if gateTarget != nil { leaveOut.remove(.execGate) }
            let p = try BuildProbes.open(cgroupV2Path: unifiedDir, leaveOut: leaveOut)
            let wanted: [ProbeObserver] = [.processes, .reclaim, .oom] + (readsCPUSignals ? [.runQueue] : [])
                + (gateTarget != nil ? [.execGate] : [])
            let on = wanted.filter { p.isAvailable($0) }
            if on.isEmpty {
                let why = p.unavailable.first?.reason ?? "not available"
                say("eBPF observers off (\(why)); running on PSI, cgroup counters and /proc")
                p.close()
                return
            }
            probes = p
            if let gateTarget, p.isAvailable(.execGate) { p.startGate(supervisor: getpid(), target: gateTarget) }
            var line = "eBPF observers on: " + on.map(\.rawValue).joined(separator: ", ")
            let off = p.unavailable.filter { u in wanted.contains { $0.rawValue == u.observer } }
            if !off.isEmpty { line += "; off: " + off.map { "\($0.observer) (\($0.reason))" }.joined(separator: ", ") }
            say(line)
        } catch {
            say("eBPF observers off (\(error)); running on PSI, cgroup counters and /proc")
        }
    }

    /// The build tool started as `pid`: from now on only its children are jobs to the gate.
    func gateToolStarted(_ pid: Int32) {
        if gateIsOn { probes?.setGateTool(pid) }
    }

    /// Whether the exec gate holds the build tool's new jobs to the target.
    var gateIsOn: Bool { probes?.isGateOn == true }

    /// The exec gate's turn (each tick, and when a held process or an admitted job's end woke the loop): held
    /// processes go on, oldest job first, while `target` leaves room; what room is left is the kernel's to give.
    func admitHeld(target: Int) {
        guard let probes, probes.isGateOn else { return }
        let held = probes.gatedProcesses
        parked.formIntersection(held.map(\.pid))
        let release = GateAdmission.release(target: target, admittedJobs: probes.admittedJobs, held: held)
        // Admitted first, moved out of the frozen leaf after: a parked process runs the moment it leaves, and the
        // programs it starts must find its job admitted, or the gate would hold them as a job of their own.
        probes.admit(release)
        for h in release where parked.remove(h.pid) != nil { try? cgroup?.freezingBuildLeaf.adopt(h.pid) }
        probes.allowJobs(target: target)
        park(held.filter { h in !release.contains(h) && !parked.contains(h.pid) })
    }

    /// Held processes wait frozen in a leaf of their own (`job-gate`), no longer stopped: if jobgov died while
    /// processes of the build were stopped, the kernel would hang the build up (SIGHUP to a process group that
    /// lost its parent and has stopped members); frozen ones the watchdog thaws like any frozen job.
    private func park(_ held: [GateAdmission.Held]) {
        guard !held.isEmpty, let cgroup else { return }
        if parking == nil, let leaf = try? cgroup.makeFreezeLeaf("gate"), (try? leaf.freeze()) != nil { parking = leaf }
        guard let parking else { return }
        for h in held where (try? parking.adopt(h.pid)) != nil {
            parked.insert(h.pid)
            kill(h.pid, SIGCONT) // it freezes before it runs an instruction: the leaf is frozen
        }
    }
    private var parking: JobCgroup?
    private var parked: Set<Int32> = []

    /// The 90th percentile of the build's run-queue waits since the last call, in seconds (nil without the observer).
    private func runQueueP90() -> Double? {
        guard let probes, probes.isAvailable(.runQueue) else { return nil }
        let now = probes.histogram(.runQueue)
        defer { lastRunQueue = now }
        return now.subtracting(lastRunQueue).quantileUpperBound(0.90).map { Double($0) / 1e6 }
    }

    /// The share of the time since the last reading in which some task of the build waited for a CPU (its cgroup's
    /// cpu.pressure; the machine's without a cgroup v2 directory).
    private func buildCPUStall(now: Double) -> Double? {
        let path = cgroup?.directories.unified.map { $0 + "/cpu.pressure" } ?? "/proc/pressure/cpu"
        guard let text = readSmallFile(path, limit: 4096), let line = try? parsePressure(text, path: path).some else { return nil }
        defer { lastCPUPressure = (now, line) }
        return lastCPUPressure.flatMap {
            PressureRate.stalledFraction(previous: $0.some, current: line, elapsedSeconds: now - $0.time)
        }
    }

    /// Time the build's tasks spent in reclaim, from the observers; closes them (processes the gate holds go on).
    func closeProbes() -> Double? {
        guard let probes else { return nil }
        if probes.isGateOn {
            let counts = probes.gateCounts
            say("exec gate: \(counts.admittedInKernel) jobs started at once, \(counts.stopped) held at their start "
                + "until the target allowed them")
        }
        let stall = probes.totalStall
        probes.close()
        self.probes = nil
        return Double(stall.direct + stall.cgroup) / 1e9
    }

    // MARK: acting

    var holdsOOMKiller: Bool { cgroup?.directories.memory != nil }

    func freeze(_ job: Job) -> String? {
        guard let cgroup else { return "the build has no cgroup" }
        do throws(CgroupError) {
            let leaf: JobCgroup
            if let existing = leaves[job.id] { leaf = existing } else { leaf = try cgroup.makeFreezeLeaf("\(job.id.pid)") }
            leaves[job.id] = leaf
            for pid in job.pids { try? leaf.adopt(pid) }
            try leaf.freeze()
            return nil
        } catch {
            return error.description
        }
    }

    func thaw(_ job: Job) -> String? {
        guard let leaf = leaves[job.id] else { return nil }
        // A page-out queued or under way stops at its next batch (paging out a running job only makes it fault its
        // pages back in); the loop does not wait for it, nor for the page-outs of other jobs queued before it.
        pageOutStops.stop(job.pids)
        do throws(CgroupError) {
            try leaf.thaw()
            return nil
        } catch {
            return error.description
        }
    }

    /// Processes a frozen job forked while it was being moved are moved after it; only those (each move takes the
    /// kernel's cgroup lock, and this runs every tick).
    func keepFrozen(_ job: Job) {
        guard let leaf = leaves[job.id] else { return }
        let inside = Set(leaf.directories.all.flatMap { BuildCgroup.processes(in: $0) })
        for pid in job.pids where !inside.contains(pid) { try? leaf.adopt(pid) }
    }

    func jobEnded(_ id: JobID) {
        leaves.removeValue(forKey: id)?.remove()
    }

    func setBuildFrozen(_ frozen: Bool) -> Result<String, ActuatorProblem> {
        guard let cgroup else { return .failure(ActuatorProblem("the build has no cgroup")) }
        do throws(CgroupError) {
            if frozen { try cgroup.freeze() } else { try cgroup.thaw() }
        } catch {
            return .failure(ActuatorProblem(error.description))
        }
        guard let tuning else { return .success("") }
        if frozen {
            if let problem = tuning.apply() { return .success(" (no tuning: \(problem))") }
            return .success("; kswapd set to reclaim earlier (vm.watermark_scale_factor \(SystemTuning.tunedWatermarkScale)), memory compacted")
        }
        tuning.restore()
        return .success("; vm.watermark_scale_factor restored")
    }

    func setOOMKiller(enabled: Bool) -> Bool {
        guard let cgroup else { return false }
        return (try? cgroup.apply(CgroupLimits(oomKillDisabled: !enabled))) != nil
    }

    func pageOut(_ job: Job) -> Result<UInt64, ActuatorProblem> {
        // Compressing is the calling thread's work (about 3 ms of CPU per MiB measured here): done off the loop, so
        // that a page-out of a large job does not hold up tokens, the control socket or the next tick. The job is
        // frozen, so its memory does not change meanwhile; its swap is read with its memory from now on.
        let pids = job.pids
        for pid in pids { pagedPIDs.insert(pid) }
        pageOutStops.clear(pids)
        let say = self.say
        let stops = pageOutStops
        pageOutQueue.async {
            var problems: [String] = []
            var freed: UInt64 = 0
            for pid in pids {
                let result = PageOut.process(pid: pid, shouldStop: { stops.contains(pid) })
                freed += result.freedBytes
                if let error = result.error { problems.append("\(error)") }
            }
            if freed == 0, let first = problems.first { say("page-out of job \(pids.first ?? 0) freed nothing: \(first)") }
        }
        return .success(job.rssBytes)
    }

    func end(_ job: Job) -> String? {
        // The root (jobgov-shell) stays: it sees its recipe die and asks to run it again.
        pageOutStops.stop(job.pids)
        for pid in job.pids.dropFirst() { kill(pid, SIGKILL) }
        if let leaf = leaves[job.id] { try? leaf.thaw() }
        return nil
    }

    func finish() {
        // Page-outs still queued or running are of no use any more: stopped, then waited for (at most a batch).
        pageOutStops.stop(Array(pagedPIDs))
        pageOutQueue.sync {}
        for (_, leaf) in leaves { try? leaf.thaw() }
        if let parking {
            // Held processes left at the end (jobgov stopping early) go on; the gate lets them go as it closes.
            for pid in parked { try? cgroup?.freezingBuildLeaf.adopt(pid) }
            try? parking.thaw()
            parking.remove()
        }
        if let cgroup, cgroup.isFrozen { try? cgroup.thaw() }
        tuning?.restore()
    }
}

/// The build's CPU time between two samples as a share of all CPUs (from its cgroup), else the machine's busy
/// share when the build has no cgroup.
func buildCPUShare(from a: Sample, to b: Sample, cpus: Int) -> Double? {
    if let x = a.cgroupCPU, let y = b.cgroupCPU, b.time > a.time, y.usageMicroseconds >= x.usageMicroseconds {
        return Double(y.usageMicroseconds - x.usageMicroseconds) / 1e6 / (b.time - a.time) / Double(cpus)
    }
    guard let x = a.cpu, let y = b.cpu else { return nil }
    return CPUTimes.utilization(previous: x, current: y)
}

func makeDirectories(_ path: String) {
    var prefix = ""
    for part in path.split(separator: "/") {
        prefix += "/" + part
        mkdir(prefix, 0o755)
    }
}
