#if canImport(Glibc)
import Glibc
#endif
import BPFProbes
import JobgovCore
import LinuxSystem

/// What `jobgov guard` does to a process found: nothing, freeze it in a cgroup of its own (with a watchdog that
/// thaws it if jobgov dies), or kill it.
struct GuardActuator {
    let action: GuardCommand.Action
    let sensor: StuckProcessSensor
    private var freezer: ProcessFreezer?
    private var watchdog: WatchdogHandle?
    private var actedOn: Set<Int32> = []

    init(action: GuardCommand.Action, layout: CgroupLayout, sensor: StuckProcessSensor) throws {
        self.action = action
        self.sensor = sensor
        guard action == .freeze else { return }
        guard let mount = layout.unifiedMount, let own = layout.ownUnifiedDirectory else {
            throw CgroupError("--action freeze needs a cgroup v2 hierarchy (cgroup.freeze); this machine has none: use --action kill or report")
        }
        guard geteuid() == 0 else {
            throw CgroupError("--action freeze moves other users' processes between cgroups: run it as root")
        }
        let freezer = try ProcessFreezer(mount: mount, parent: own)
        self.freezer = freezer
        var plan = WatchdogPlan(runtimeDirectory: nil, cgroup: CgroupDirectories(unified: freezer.directory),
                                removeWhenEmpty: [freezer.directory])
        plan.sysctls = []
        do {
            watchdog = try WatchdogHandle(executable: BuildSupervisor.ownExecutable(), plan: plan)
        } catch {
            freezer.close()
            throw error
        }
    }

    mutating func act(on finding: StuckProcessFinding) {
        guard !actedOn.contains(finding.pid) else { return }
        actedOn.insert(finding.pid)
        switch action {
        case .report:
            say("would act on pid \(finding.pid) (\(finding.command)): dry run (--action freeze or kill to act)")
        case .freeze:
            guard let freezer else { return }
            do {
                let record = try freezer.freeze(pid: finding.pid, startTicks: finding.startTicks, sensor: sensor)
                say("froze pid \(record.pid) (\(finding.command)): moved from cgroup \(record.originalCgroup) to "
                    + "\(record.leaf); it is thawed and moved back when jobgov guard ends")
            } catch {
                say("cannot freeze pid \(finding.pid) (\(finding.command)): \(error)")
            }
        case .kill:
            do {
                try killProcess(pid: finding.pid, startTicks: finding.startTicks, sensor: sensor)
                say("killed pid \(finding.pid) (\(finding.command)) with SIGKILL")
            } catch {
                say("cannot kill pid \(finding.pid) (\(finding.command)): \(error)")
            }
        }
    }

    /// Thaws and moves back every frozen process, removes the cgroups, and lets the watchdog go.
    mutating func close() {
        if let freezer {
            for record in freezer.frozen {
                if let back = freezer.release(record) {
                    say("thawed pid \(record.pid) and moved it back to cgroup \(back)")
                } else {
                    say("pid \(record.pid) exited while frozen")
                }
            }
            freezer.close()
        }
        freezer = nil
        watchdog?.finish(.done)
        watchdog = nil
    }
}

/// The build's reclaim-stall observer pointed at a whole cgroup tree (the v2 root, or --cgroup): per process, the
/// time its threads spent in direct and cgroup reclaim.
final class GuardReclaimProbes {
    private let probes: BuildProbes

    private init(_ probes: BuildProbes) { self.probes = probes }

    static func open(layout: CgroupLayout, within: String?) -> GuardReclaimProbes? {
        guard geteuid() == 0, let mount = layout.unifiedMount else { return nil }
        do {
            let probes = try BuildProbes.open(
                cgroupV2Path: joinPath(mount, within ?? "/"),
                leaveOut: [.memory, .oom, .blockIO, .runQueue, .execGate])
            guard probes.isAvailable(.reclaim) else {
                let reason = probes.unavailable.first { $0.observer == ProbeObserver.reclaim.rawValue }?.reason ?? "unknown"
                say("no eBPF reclaim observer (\(reason)); using cgroup PSI")
                probes.close()
                return nil
            }
            return GuardReclaimProbes(probes)
        } catch {
            say("no eBPF reclaim observer (\(error)); using cgroup PSI")
            return nil
        }
    }

    /// Adds each process's reclaim time; a process the observer has no entry for has not stalled.
    func annotate(_ observation: inout GuardObservation) {
        probes.drain { _ in }  // fork/exec/exit records are not needed; the ring buffer must not fill
        let records = probes.records()
        for (pid, record) in records where record.exited { _ = probes.record(of: pid) }  // forget the ended
        for i in observation.processes.indices {
            let r = records[observation.processes[i].pid]
            let ns = (r?.directReclaimNanoseconds ?? 0) + (r?.cgroupReclaimNanoseconds ?? 0)
            observation.processes[i].reclaimSeconds = Double(ns) / 1e9
        }
    }

    deinit { probes.close() }
}
