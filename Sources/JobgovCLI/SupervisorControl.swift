#if canImport(Glibc)
import Glibc
#endif
import GovernorRuntime
import JobgovCore
import Jobserver
import LinuxSystem

/// Replies to `jobgov ctl`. Freezing and thawing a v2 cgroup completes asynchronously: the reply waits for the
/// state on a timer of the loop (at most a second), so the loop goes on meanwhile.
extension BuildSupervisor {
    /// The reply line, or nil when it is sent later (by `checkFreezeState`).
    func respond(to request: Result<ControlRequest, ControlProtocolError>, connection: Int32, pool: TokenPool,
                 auth: String) -> String? {
        switch request {
        case .failure(let error):
            return "error \(error.message)"
        case .success(.setJobs(let n)):
            let old = ledger.targetJobs
            if let governing {
                // The user's number becomes the ceiling; the governor decides at once how much of it memory allows.
                governing.setCeiling(n)
                ledger.setJobs(min(n, governing.tick(now: monotonicSeconds() - startTime)))
            } else {
                ledger.setJobs(n)
            }
            refill(pool)
            return "ok jobs=\(n) was=\(old)"
        case .success(.rerun(let pid, let status)):
            guard let governing else { return "no the governor is off" }
            return governing.rerunVerdict(shellPID: pid, status: status, now: monotonicSeconds() - startTime)
        case .success(.freeze), .success(.thaw), .success(.kill):
            guard let cgroup else { return "error the build has no cgroup; freezing needs one (run as root or in a delegated cgroup)" }
            do {
                switch request {
                case .success(.freeze): try cgroup.freeze()
                case .success(.thaw): try cgroup.thaw()
                default: try cgroup.kill()
                }
            } catch {
                return "error \(error.description)"
            }
            if case .success(.kill) = request { return "ok killed" }
            let wantFrozen: Bool = if case .success(.freeze) = request { true } else { false }
            if cgroup.isFrozen == wantFrozen { return wantFrozen ? "ok frozen" : "ok thawed" }
            awaitFreezeState(connection: connection, frozen: wantFrozen)
            return nil
        case .success(.status):
            let inPool = pool.tokensInPool()
            var status = PoolStatus(
                pid: getpid(), command: options.plan.argv.joined(separator: " "), style: options.plan.style.rawValue,
                auth: auth, jobs: ledger.targetJobs, ceiling: options.plan.ceiling, tokensCreated: ledger.created,
                tokensInPool: inPool, tokensOutstanding: ledger.outstanding(inPool: inPool),
                peakOutstanding: ledger.peakOutstanding, tokensRecreated: ledger.recreated,
                tokensAbsorbed: ledger.absorbed, elapsedSeconds: monotonicSeconds() - startTime
            )
            status.cgroup = cgroup?.topDirectories.first ?? ""
            status.cgroupV1Memory = cgroup?.directories.memory ?? ""
            status.memoryBudget = budget?.bytes ?? 0
            status.memoryBudgetSource = budget?.source ?? ""
            if let daemon, let share = daemon.share, let governing {
                // Under `jobgov daemon`, the budget the governor plans with now is the build's share.
                status.memoryBudget = governing.governor.settings.budget
                status.memoryBudgetSource = "share \(MemorySize.format(share)) from jobgov daemon at \(daemon.path ?? "?")"
            }
            status.pressureEvents = pressureEvents
            status.frozen = cgroup?.isFrozen ?? false
            return status.json
        }
    }

    /// Replies once the build's cgroup is frozen (or thawed), or after a second with what it is doing.
    private func awaitFreezeState(connection: Int32, frozen: Bool) {
        freezeReplies.append((connection, frozen, monotonicSeconds() + 1))
        guard freezeReplies.count == 1, let loop else { return }
        loop.every("ctl freeze state", interval: { [unowned self] in freezeReplies.isEmpty ? nil : 0.01 }) { [unowned self] now in
            checkFreezeState(now: now)
        }
    }

    private func checkFreezeState(now: Double) {
        let isFrozen = cgroup?.isFrozen ?? false
        freezeReplies.removeAll { waiting in
            let reached = isFrozen == waiting.frozen
            guard reached || now >= waiting.deadline else { return false }
            let reply = switch (waiting.frozen, reached) {
            case (true, true): "ok frozen"
            case (false, true): "ok thawed"
            case (true, false): "ok freezing (not all tasks are frozen yet)"
            case (false, false): "ok thawing"
            }
            control?.reply(reply, to: waiting.connection)
            return true
        }
    }
}
