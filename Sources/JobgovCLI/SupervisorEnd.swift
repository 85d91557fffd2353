#if canImport(Glibc)
import Glibc
#endif
import GovernorRuntime
import JobgovCore
import Jobserver
import LinuxSystem

/// The end of the build (the governor's history and files, the swap made for it) and what is said at its start.
extension BuildSupervisor {
    /// Ends the governor's work: thaws and restores everything, keeps the history, closes the trace.
    func finishGoverning() {
        guard let governing else { return }
        let history = governing.finish(now: monotonicSeconds() - startTime)
        if let stall = kernel?.closeProbes() { governing.reclaimStallSeconds = stall }
        if let path = historyPath {
            let text = MemoryHistoryFormat.encode(history.peaks, seconds: history.seconds, order: history.order,
                                                  shapes: history.shapes)
            let directory = String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)])
            makeDirectories(directory)
            let tmp = path + ".tmp.\(getpid())"
            let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            if fd >= 0 {
                writeAll(fd, text)
                close(fd)
                rename(tmp, path)
            }
        }
        try? traceFile?.close()
        traceFile = nil
        tearDownSwap()
        boost?.finish()
    }

    /// For a build tool that takes no jobserver tokens (`xargs -P`, a script forking workers), the exec gate holds
    /// its new jobs to the governor's target; attached before the build starts, so that its first burst is held
    /// too. Returns what the start line says of it (nil: not such a tool).
    func startGate() -> String? {
        guard let kernel, let governing, GateAdmission.wanted(argv: options.plan.argv) else { return nil }
        let tool = options.plan.argv.first.map { $0.split(separator: "/").last.map(String.init) ?? $0 } ?? "the build"
        if options.governor?.gate == false {
            return "\(tool) takes no jobserver tokens; exec gate off (--no-gate): its jobs are held back only by freezing"
        }
        // Without a cgroup v2 directory there is neither gate nor freezing; the tier line says so.
        guard let dir = cgroup?.directories.unified else { return nil }
        kernel.attachProbes(unifiedDir: dir, gateTarget: governing.initialTarget)
        guard kernel.gateIsOn else {
            return "\(tool) takes no jobserver tokens and the exec gate is off (see the eBPF line): "
                + "its jobs are held back only by freezing"
        }
        return "\(tool) takes no jobserver tokens: the exec gate starts its jobs as the governor's target allows"
    }

    /// Writes the build's timeline once, at its end (`--trace-events`), and closes the file.
    func writeTraceEvents(exit: ExitStatus?) {
        guard let fd = traceEventsFile, let timeline = governing?.timeline else { return }
        var other = [("command", options.plan.argv.joined(separator: " "))]
        switch exit {
        case .exited(let code)?: other.append(("exit_status", "\(code)"))
        case .signaled(let sig)?: other.append(("exit_status", "\(128 + sig)"))
        case nil: other.append(("exit_status", "unknown: jobgov stopped before the build ended"))
        }
        writeAll(fd.rawValue, timeline.traceEventsJSON(end: monotonicSeconds() - startTime, otherData: other))
        try? fd.close()
        traceEventsFile = nil
    }

    /// Decides where frozen jobs' memory can go, and says so once: existing swap (or zswap) is used as it is; as root
    /// without swap a zram device is made for the build, sized to the budget, its compressed memory capped at a
    /// quarter of the budget (and counted against the budget by the governor), with vm.swappiness at 0 meanwhile
    /// so that the machine's other processes are not pushed into it (jobgov's page-out ignores swappiness).
    func setUpSwap(choices: GovernorChoices, budget: UInt64) -> Bool {
        guard choices.swap else {
            swapNote = "swap: off (--no-swap): frozen jobs keep their memory"
            return false
        }
        let state = SwapState.read()
        // Swap with room for a good part of the budget is used as it is; a nearly full or small one (another
        // program's, another jobgov's zram that goes when it does) would page out part of a job and leave the rest.
        let room = state.devices.reduce(UInt64(0)) { $0 + ($1.sizeBytes - min($1.sizeBytes, $1.usedBytes)) }
        if state.zswapEnabled || (state.hasSwap && (room >= budget / 2 || geteuid() != 0)) {
            swapNote = "swap: frozen jobs are paged out to the swap this machine has (\(state.reasonToAddNothing ?? "swap"))"
            return state.hasSwap
        }
        guard geteuid() == 0 else {
            swapNote = "swap: none on this machine, and adding a compressed one needs root: frozen jobs keep their memory"
            return false
        }
        CompressedSwap.removeStale()
        do {
            let swap = try CompressedSwap.setUp(sizeBytes: budget, memoryLimitBytes: max(budget / 4, 64 << 20))
            compressedSwap = swap
            let tuning = SwappinessTuning()
            if tuning.apply() == nil { swappiness = tuning }
            swapNote = "swap: zram\(swap.index) (\(swap.algorithm), \(MemorySize.format(swap.sizeBytes))) for the build's frozen jobs, "
                + "removed at exit; vm.swappiness 0 meanwhile"
            return true
        } catch {
            swapNote = "swap: cannot add a compressed swap (\(error)): frozen jobs keep their memory"
            return false
        }
    }

    func tearDownSwap() {
        if let swap = compressedSwap {
            do { try swap.remove() } catch { note("cannot remove zram\(swap.index): \(error); the watchdog retries") }
        }
        swappiness?.restore()
    }

}

/// Prints one line of jobgov's own on stderr, marked so it stands out from the build's output.
func note(_ message: String) {
    let line = "jobgov: \(message)\n"
    writeStandardError(line)
}

extension BuildSupervisor {
    /// Where this build's memory history is kept: $XDG_STATE_HOME/jobgov/history (else ~/.local/state), one file
    /// per directory and command.
    func historyFile(env: [String: String]) -> String? {
        let base: String
        if let state = env["XDG_STATE_HOME"], state.hasPrefix("/") {
            base = state
        } else if let home = env["HOME"], home.hasPrefix("/") {
            base = home + "/.local/state"
        } else {
            return nil
        }
        var cwd = [CChar](repeating: 0, count: 4096)
        guard getcwd(&cwd, cwd.count) != nil else { return nil }
        let directory = String(decoding: cwd.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let command = options.plan.argv.filter { !$0.hasPrefix("-j") }
        return base + "/jobgov/history/" + MemoryHistoryFormat.fileName(directory: directory, command: command)
    }

    /// The line that says at start what jobgov can do here.
    func privilegeTier(cgroup: BuildCgroup?, governed: Bool) -> String {
        guard governed else { return "fixed job count (--fixed-jobs): the governor is off" }
        guard let cgroup else {
            return "tier: jobserver only (no cgroup for the build): parallelism from memory, CPU and I/O; no freezing, no limits"
        }
        var can = ["parallelism from memory, CPU and I/O", "a memory limit"]
        can.append(cgroup.directories.unified != nil || cgroup.directories.freezer != nil ? "freezing single jobs" : "no freezing")
        can.append(cgroup.backend == .unified ? "memory.high as the throttle" : "the OOM killer held off")
        return "tier: \(geteuid() == 0 ? "root" : "delegated cgroup") (\(cgroup.backend.rawValue) cgroups): " + can.joined(separator: ", ")
    }
}
