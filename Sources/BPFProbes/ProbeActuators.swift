import CJobgovBPF
#if canImport(Glibc)
import Glibc
#endif

/// The in-kernel actuators: switches in map jg_config, and the pids they stopped in maps jg_gated and jg_braked.
extension BuildProbes {
    // MARK: the exec gate

    /// Closed: a process that executes a program inside the build stops itself (SIGSTOP) before its first
    /// instruction, and is reported as `.gateStopped`.
    public func closeGate() { config.gate_closed = 1; writeConfig() }

    /// Opened: new programs run. Processes already stopped stay stopped until admitted.
    public func openGate() { config.gate_closed = 0; writeConfig() }

    public var isGateClosed: Bool { config.gate_closed != 0 }

    /// Processes the gate stopped that were not admitted yet.
    public var gatedPIDs: [Int32] { (maps.gated?.keys() ?? []).map { Int32(bitPattern: $0) } }

    /// Lets one stopped process go on (SIGCONT). False if the gate did not stop it (or it ended).
    @discardableResult
    public func admit(pid: Int32) -> Bool { resume(pid, in: maps.gated) }

    /// Lets every process the gate stopped go on; returns their pids.
    @discardableResult
    public func admitAll() -> [Int32] { gatedPIDs.filter { admit(pid: $0) } }

    // MARK: the brake

    /// Armed: a build task that enters reclaim (direct, or at a cgroup limit) stops itself at once (SIGSTOP), unless
    /// its pid or tgid is in `pids`; reported as `.brakeStopped`.
    public func armBrake(protecting pids: [Int32]) {
        setProtected(pids)
        config.brake_armed = 1
        writeConfig()
    }

    /// Replaces the protected set (e.g. when the oldest job changes) without arming or disarming.
    public func setProtected(_ pids: [Int32]) {
        guard let protected = maps.protected else { return }
        let wanted = Set(pids.map { UInt32(bitPattern: $0) })
        for key in protected.keys() where !wanted.contains(key) { protected.delete(key) }
        for pid in wanted { protected.update(pid, 1) }
    }

    /// Disarmed: nothing new is stopped. Processes already stopped stay stopped until resumed.
    public func disarmBrake() { config.brake_armed = 0; writeConfig() }

    public var isBrakeArmed: Bool { config.brake_armed != 0 }

    /// Processes the brake stopped that were not resumed yet.
    public var brakedPIDs: [Int32] { (maps.braked?.keys() ?? []).map { Int32(bitPattern: $0) } }

    @discardableResult
    public func resumeBraked(pid: Int32) -> Bool { resume(pid, in: maps.braked) }

    @discardableResult
    public func resumeAllBraked() -> [Int32] { brakedPIDs.filter { resumeBraked(pid: $0) } }

    private func resume(_ pid: Int32, in map: OpenMap<UInt32, UInt64>?) -> Bool {
        // Only a pid still in the map: BPF removes it when the process ends, so a reused pid is never signalled.
        guard map?.delete(UInt32(bitPattern: pid)) == true else { return false }
        return kill(pid, SIGCONT) == 0
    }

    func writeConfig() {
        maps.config?.update(0, config)
    }
}
