#if canImport(Glibc)
import Glibc
#endif
import GovernorRuntime
import JobgovCore
import Jobserver
import LinuxSystem

/// The running build's event loop: each descriptor and timer jobgov waits on is a named source of one `EventLoop`.
/// Nothing here sits between a client and its tokens, so jobgov adds no latency to token hand-out.
extension BuildSupervisor {
    func runLoop(child: pid_t, pool: TokenPool, control: ControlServer, auth: String) throws -> ExitStatus {
        let loop = EventLoop(clock: monotonicSeconds)
        self.loop = loop
        self.control = control
        defer { self.loop = nil }
        var exit: ExitStatus?
        let tick = Double(options.tickMilliseconds) / 1000

        if let signals {
            loop.watch("signals", events: Int16(POLLIN), descriptors: { [signals.fd.rawValue] }) { [unowned self] _, _ in
                for delivery in signals.drain() {
                    if delivery.signal == SIGCHLD {
                        for (pid, status) in reapExitedChildren() where pid == child {
                            if let ended = ExitStatus(waitStatus: status) { exit = ended }
                        }
                    } else if !delivery.fromKernel {
                        // A terminal's Ctrl-C reaches the whole foreground group, the build included. A signal
                        // sent to jobgov alone (kill, a CI runner's timeout) is passed on the same way: to every
                        // process of the build, since make, on SIGINT, waits for jobs it expects got it too.
                        forwarding = (delivery.signal, monotonicSeconds() + 2, [])
                        forwardPending(child: child)
                    }
                }
            }
        }
        loop.watch("control socket", events: Int16(POLLIN), descriptors: { control.pollDescriptors }) { [unowned self] fd, _ in
            control.handleReadable(fd) { connection, request in
                respond(to: request, connection: connection, pool: pool, auth: auth)
            }
        }
        loop.watch("returned tokens", events: Int16(POLLIN),
                   descriptors: { [unowned self] in ledger.created > ledger.target ? [pool.reader.rawValue] : [] }) { [unowned self] _, _ in
            // Take returned tokens first and account afterwards: clients re-read within microseconds.
            let excess = ledger.created - ledger.target
            if excess > 0 { ledger.didAbsorbExcess(pool.take(upTo: excess)) }
        }
        loop.watch("memory pressure trigger", events: Int16(POLLPRI),
                   descriptors: { [unowned self] in trigger.map { [$0.fd.rawValue] } ?? [] }) { [unowned self] _, revents in
            if revents & Int16(POLLERR) != 0 {
                trigger?.close()
                trigger = nil
            } else {
                pressureEvents += 1
            }
        }
        loop.beforeWait = { [unowned self] in
            // While tokens are being taken back, jobgov runs at real-time priority so that it reads them first.
            let absorbing = ledger.created > ledger.target
            if absorbing != realtime { realtime = absorbing && setRealtimePriority(absorbing) }
        }
        loop.onWake = { [unowned self] in
            let outstanding = ledger.outstanding(inPool: refill(pool))
            ledger.noteOutstanding(outstanding)
            governing?.tokensOut = outstanding
        }

        // Processes forked while a signal was being passed on would miss it; for two seconds, each tick passes it
        // to any process of the build that has not had it yet.
        loop.every("signal forwarding", interval: { tick }) { [unowned self] now in
            if let f = forwarding, now < f.until { forwardPending(child: child) } else { forwarding = nil }
        }
        if let dir = cgroup?.directories.unified {
            // The kernel's PSI trigger wakes the loop when the build stalls on memory for 100 ms within a window,
            // instead of the next tick noticing. Windows must be multiples of 2 s without CAP_SYS_RESOURCE. It is
            // made, with the eBPF observers, once the build has run a second: the kernel starts a thread for it and
            // waits for an RCU grace period when it goes (measured: about 30 ms together), which a short build
            // should not pay.
            loop.after("eBPF observers and PSI trigger", max(0, startTime + 1 - monotonicSeconds())) { [unowned self] _ in
                kernel?.attachProbes(unifiedDir: dir)
                let window = PressureTrigger.allowsShortWindows ? 1_000_000 : 2_000_000
                trigger = try? PressureTrigger(path: dir + "/memory.pressure", kind: .some, stallMicroseconds: 100_000,
                                               windowMicroseconds: window)
            }
        }
        if let governing {
            // Every tick (100 ms) while memory matters; every fifth while the governor says all is calm. The first
            // comes a tick in, whatever the first decision said.
            loop.every("governor tick", first: tick, interval: { governing.lastDecision?.calm == true ? 5 * tick : tick }) { [unowned self] now in
                let target = governing.tick(now: now - startTime)
                if debugAccounting { note("debug: tick \(Int((monotonicSeconds() - now) * 1e6)) us") }
                if let boost, var signals = kernel?.cpuSignals {
                    signals.runningJobs = governing.table.running.filter { !$0.frozen }.count
                    boost.observe(signals, now: now)
                }
                if target != ledger.targetJobs {
                    ledger.setJobs(target)
                    refill(pool)
                }
                kernel?.admitHeld(target: target)
            }
            // The exec gate: a held process, or the end of a job while processes are held, wakes the loop at once.
            loop.watch("exec gate", events: Int16(POLLIN), descriptors: { [unowned self] in
                kernel.flatMap { $0.gateIsOn ? $0.probes?.pollDescriptor.map { [$0.rawValue] } : nil } ?? []
            }) { [unowned self] _, _ in
                kernel?.collectEvents()
                kernel?.admitHeld(target: governing.lastDecision?.targetJobs ?? governing.initialTarget)
            }
        }
        loop.every("lost-token check", interval: { [unowned self] in options.lostTokenCheckSeconds }) { [unowned self] _ in
            recoverLostTokens(pool: pool, outstanding: ledger.outstanding(inPool: pool.tokensInPool()))
        }

        do {
            try loop.run(longestWait: tick) { exit != nil }
        } catch {
            throw SystemError(error.description)
        }
        // The build tool may end within a tick of a signal being passed on (make, on SIGTERM, kills its recipes'
        // shells and exits), and their children, re-parented to jobgov meanwhile, have not had it: passed on to
        // them now, or they would outlive jobgov (a `sleep` under each `sh`, seen in TraceEventsBuildTests).
        for _ in 0..<3 where forwarding != nil {
            let before = forwarding?.sent.count ?? 0
            forwardPending(child: child)
            if forwarding?.sent.count == before { break }
            usleep(20_000)
        }
        return exit!
    }

    /// Passes the signal being forwarded to the build's processes that have not had it yet.
    func forwardPending(child: pid_t) {
        guard var f = forwarding else { return }
        // The whole tree is read before anything is signalled: make, on SIGTERM, kills its recipes' shells at
        // once, and a walk after that no longer finds their children below them. The build's cgroup lists the
        // processes a walk can miss (re-parented while it ran).
        let build = [child] + tree.descendants(of: getpid()) + (cgroup?.processes() ?? [])
        for pid in build where !f.sent.contains(pid) && pid != watchdog?.pid && pid != getpid() {
            kill(pid, f.signal)
            f.sent.insert(pid)
        }
        forwarding = f
    }

    /// Writes or absorbs tokens until the pool matches the target (absorbing only what is there to take), and
    /// returns the pool's fill level afterwards (read once more only when something was done).
    @discardableResult
    func refill(_ pool: TokenPool) -> Int {
        let inPool = pool.tokensInPool()
        switch ledger.action(inPool: inPool) {
        case .none:
            return inPool
        case .write(let n):
            ledger.didWrite(pool.add(n))
        case .absorb(let n):
            let taken = pool.take(upTo: min(n, inPool))
            if taken > 0 { ledger.didAbsorb(taken, inPoolBefore: inPool) }
        }
        return pool.tokensInPool()
    }

    func recoverLostTokens(pool: TokenPool, outstanding: Int) {
        guard outstanding > 0 else {
            _ = detector.observe(outstanding: 0, bound: 0)
            return
        }
        // A client at the memory limit (or a frozen job's parent) can hold a token it has read but not yet forked
        // a job for, for as long as the pressure lasts: nothing is lost, so nothing is counted until it is over.
        if let decision = governing?.lastDecision, decision.rung >= .throttle {
            _ = detector.observe(outstanding: 0, bound: 0)
            return
        }
        let processes = tree.snapshot(below: getpid(), poolPath: pool.fifoPath)
        let bound = tokenHoldingBound(processes: processes, launchedPID: launchedPID)
        let lost = detector.observe(outstanding: outstanding, bound: bound)
        if debugAccounting {
            note("debug: outstanding \(outstanding) bound \(bound) lost \(lost) processes \(processes)")
        }
        guard lost > 0 else { return }
        let written = pool.add(lost)
        ledger.didRecreate(written)
        if !options.quiet {
            note("re-created \(written) token\(written == 1 ? "" : "s") lost with a client that died while holding them")
        }
    }

}
