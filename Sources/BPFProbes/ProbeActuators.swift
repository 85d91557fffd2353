import CJobgovBPF
import JobgovCore
#if canImport(Glibc)
import Glibc
#endif

/// The in-kernel actuator, the exec gate: switches in map jg_config, the pids it stopped in map jg_gated, the jobs it
/// admitted in map jg_admitted.
extension BuildProbes {
    // MARK: the exec gate

    /// Turns the gate on for the build tool that `supervisor` (jobgov: the tool's parent) starts. A job is a
    /// process the tool started; its first program runs only while the kernel's credit (`allowJobs`) allows one
    /// more job and no process is held, else it stops before its first instruction, is reported as
    /// `.gateStopped` and waits for `admit`. Later programs of an admitted job pass. Until `setGateTool` names the
    /// tool, any child of `supervisor` in the build is taken for it.
    public func startGate(supervisor: Int32, target: Int) {
        config.gate_supervisor = UInt32(bitPattern: supervisor)
        config.gate_tool = 0
        config.gate_on = 1
        allowJobs(target: target)
    }

    /// The build tool's pid, once started: processes jobgov adopts later (orphans) are not taken for tools.
    public func setGateTool(_ pid: Int32) {
        config.gate_tool = UInt32(bitPattern: pid)
        writeConfig()
    }

    /// Off: every program runs, and processes held go on.
    public func stopGate() {
        config.gate_on = 0
        writeConfig()
        admit(gatedProcesses)
    }

    public var isGateOn: Bool { config.gate_on != 0 }

    /// Processes the gate holds: pid, job, when stopped.
    public var gatedProcesses: [GateAdmission.Held] {
        guard let gated = maps.gated else { return [] }
        return gated.keys().compactMap { key in
            gated.lookup(key).map { GateAdmission.Held(pid: Int32(bitPattern: key), job: Int32(bitPattern: $0.job),
                                                       since: $0.since) }
        }
    }

    /// Jobs admitted whose root still runs.
    public var admittedJobs: Int { maps.admitted?.keys().count ?? 0 }

    /// Lets held processes go on (SIGCONT); their jobs are admitted, so their later programs pass. Returns the pids
    /// resumed (not those that ended meanwhile).
    @discardableResult
    public func admit(_ held: [GateAdmission.Held]) -> [Int32] {
        guard let gated = maps.gated, !held.isEmpty else { return [] }
        var resumed: [Int32] = []
        for h in held {
            maps.admitted?.update(UInt32(bitPattern: h.job), 1)
            // Only a pid still in the map: BPF removes it when the process ends, so a reused pid is never signalled.
            if gated.delete(UInt32(bitPattern: h.pid)) { resumed.append(h.pid) }
        }
        // Counted before they go on: the kernel admits nothing by itself while processes are held.
        config.gate_resumed += UInt64(resumed.count)
        writeConfig()
        return resumed.filter { kill($0, SIGCONT) == 0 }
    }

    /// Sets the kernel's credit so that it admits new jobs by itself while fewer than `target` jobs run (and none
    /// is held). Reads its counters in the order `GateAdmission.kernelCredit` needs.
    public func allowJobs(target: Int) {
        let admits = counter(UInt32(JG_CNT_GATE_ADMITS.rawValue))
        let running = admittedJobs
        let ends = counter(UInt32(JG_CNT_GATE_ENDS.rawValue))
        config.gate_credit = GateAdmission.kernelCredit(target: target, admittedJobs: running, admits: admits, ends: ends)
        writeConfig()
    }

    /// Processes the gate stopped in all, and jobs the kernel admitted by itself (for the summary and tests).
    public var gateCounts: (stopped: UInt64, admittedInKernel: UInt64) {
        (counter(UInt32(JG_CNT_GATE_STOPS.rawValue)), counter(UInt32(JG_CNT_GATE_ADMITS.rawValue)))
    }

    func writeConfig() {
        maps.config?.update(0, config)
    }
}
