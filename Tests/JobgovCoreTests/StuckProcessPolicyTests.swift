import Testing
@testable import JobgovCore

/// The guard's policy on hand-made looks: ranking, confirmation, pid reuse, counters that go back.
@Suite("Stuck-process policy")
struct StuckProcessPolicyTests {
    private func look(_ time: Double, memory: UInt64, cpu: UInt64 = 0, _ processes: [ProcessSnapshot]) -> GuardObservation {
        GuardObservation(time: time, memoryStallMicroseconds: memory, cpuStallMicroseconds: cpu, processes: processes, cpus: 2)
    }

    private func process(_ pid: Int32, _ command: String, rss: UInt64, reclaim: Double? = nil, start: UInt64 = 100,
                         cpu: Double = 0) -> ProcessSnapshot {
        ProcessSnapshot(pid: pid, parent: 1, command: command, startTicks: start, residentBytes: rss << 20,
                        cpuSeconds: cpu, reclaimSeconds: reclaim, cgroup: "/app")
    }

    @Test func ownReclaimStallOutranksGrowth() {
        var policy = StuckProcessPolicy()
        _ = policy.observe(look(0, memory: 0, [process(10, "grower", rss: 100, reclaim: 0), process(11, "staller", rss: 100, reclaim: 0)]))
        // grower: +500 MiB, no reclaim; staller: +10 MiB and 1 s of its own 2 s in reclaim.
        let found = policy.observe(look(2, memory: 1_000_000, [process(10, "grower", rss: 600, reclaim: 0),
                                                               process(11, "staller", rss: 110, reclaim: 1.0)]))
        #expect(found.count == 1)
        #expect(found.first?.pid == 11)
        #expect(found.first?.evidence.contains("its own reclaim stall (eBPF): 50% of the window") == true)
    }

    @Test func growthDecidesBetweenEqualStalls() {
        var policy = StuckProcessPolicy()
        _ = policy.observe(look(0, memory: 0, [process(10, "a", rss: 100), process(11, "b", rss: 100)]))
        let found = policy.observe(look(2, memory: 1_000_000, [process(10, "a", rss: 120), process(11, "b", rss: 400)]))
        #expect(found.map(\.pid) == [11])
    }

    @Test func belowThePressureThresholdNothingIsFound() {
        var policy = StuckProcessPolicy()
        _ = policy.observe(look(0, memory: 0, [process(10, "a", rss: 100)]))
        // 5% of the window stalled: under the default 10%.
        #expect(policy.observe(look(2, memory: 100_000, [process(10, "a", rss: 900)])).isEmpty)
    }

    @Test func actsOnlyAfterConfirmation() {
        var policy = StuckProcessPolicy()  // three looks in a row
        var rss: UInt64 = 100
        var windows: [Int] = []
        var act: [Bool] = []
        _ = policy.observe(look(0, memory: 0, [process(10, "a", rss: rss)]))
        for i in 1...4 {
            rss += 100
            let f = policy.observe(look(Double(i), memory: UInt64(i) * 500_000, [process(10, "a", rss: rss)]))
            windows.append(f.first?.windows ?? 0)
            act.append(f.first.map(policy.shouldAct) ?? false)
        }
        #expect(windows == [1, 2, 3, 4])
        #expect(act == [false, false, true, true])
        // A look without pressure ends the streak.
        _ = policy.observe(look(5, memory: 2_000_000, [process(10, "a", rss: rss + 100)]))
        let again = policy.observe(look(6, memory: 2_600_000, [process(10, "a", rss: rss + 200)]))
        #expect(again.first?.windows == 1)
    }

    /// Three equal spinners on two CPUs take turns at the top; each stays in the running, so the top one of the
    /// third look is confirmed even though it was not the top of the two before. A process that falls well behind
    /// loses its streak.
    @Test func equalHogsTakingTurnsAtTheTopAreConfirmed() {
        var policy = StuckProcessPolicy()  // three looks in a row
        func spinners(_ t: Double, _ a: Double, _ b: Double, _ c: Double) -> GuardObservation {
            look(t, memory: 0, cpu: UInt64(t * 700_000), [process(10, "a", rss: 1, cpu: a), process(11, "b", rss: 1, cpu: b),
                                                         process(12, "c", rss: 1, cpu: c)])
        }
        _ = policy.observe(spinners(0, 0, 0, 0))
        let first = policy.observe(spinners(1, 0.70, 0.65, 0.65))   // a on top
        let second = policy.observe(spinners(2, 1.35, 1.35, 1.30))  // b on top (a tie goes to the later one)
        let third = policy.observe(spinners(3, 2.00, 2.00, 2.00 + 0.02))  // c on top
        #expect(first.first?.windows == 1)
        #expect(second.first?.windows == 2)
        #expect(third.first?.pid == 12)
        #expect(third.first?.windows == 3)
        #expect(third.first.map(policy.shouldAct) == true)
        // c falls to a fifth of the top: out of the running, so its streak starts again when it comes back.
        _ = policy.observe(spinners(4, 2.9, 2.9, 2.2))
        let back = policy.observe(spinners(5, 3.5, 3.5, 3.0))
        #expect(back.first?.pid == 12)
        #expect(back.first?.windows == 1)
    }

    @Test func aReusedPIDIsANewProcess() {
        var policy = StuckProcessPolicy()
        _ = policy.observe(look(0, memory: 0, [process(10, "old", rss: 10, start: 100)]))
        // Same pid, another start time: there is no earlier look of it to measure growth against.
        #expect(policy.observe(look(2, memory: 1_000_000, [process(10, "new", rss: 900, start: 500)])).isEmpty)
    }

    @Test func aCounterThatWentBackIsNoEvidence() {
        var policy = StuckProcessPolicy()
        _ = policy.observe(look(0, memory: 5_000_000, [process(10, "a", rss: 100)]))
        #expect(policy.observe(look(2, memory: 10, [process(10, "a", rss: 900)])).isEmpty)
        #expect(policy.observe(look(2, memory: 20, [process(10, "a", rss: 900)])).isEmpty)  // no time passed
    }

    @Test func kernelThreadsAndProtectedProcessesAreNeverActedOn() {
        var settings = StuckProcessPolicy.Settings()
        settings.confirmWindows = 1
        settings.protectedPIDs.insert(10)
        var policy = StuckProcessPolicy(settings: settings)
        _ = policy.observe(look(0, memory: 0, cpu: 0, [process(10, "jobgov-like", rss: 1, cpu: 0)]))
        let f = policy.observe(look(1, memory: 0, cpu: 900_000, [process(10, "jobgov-like", rss: 1, cpu: 1.5)]))
        #expect(f.first?.cause == .cpu)
        #expect(f.first?.isProtected == true)
        #expect(f.first.map(policy.shouldAct) == false)
        #expect(StuckProcessPolicy.Settings.defaultProtectedCommands.isSuperset(of: ["sshd", "systemd", "Xorg", "gnome-shell", "jobgov"]))
    }

    @Test func aTaskWokenInBetweenStartsItsSleepAgain() {
        var settings = StuckProcessPolicy.Settings()
        settings.uninterruptibleSeconds = 5
        var policy = StuckProcessPolicy(settings: settings)
        func sleeper(_ switches: UInt64) -> ProcessSnapshot {
            var p = process(20, "dd", rss: 1)
            p.blockedTasks = [.init(tid: 20, switches: switches, waitChannel: "io_schedule")]
            return p
        }
        #expect(policy.observe(look(0, memory: 0, [sleeper(7)])).isEmpty)
        #expect(policy.observe(look(4, memory: 0, [sleeper(8)])).isEmpty)  // woke and slept again at 4
        #expect(policy.observe(look(8, memory: 0, [sleeper(8)])).isEmpty)  // 4 s
        let f = policy.observe(look(9, memory: 0, [sleeper(8)]))
        #expect(f.map(\.cause) == [.uninterruptible])
        #expect(f.first?.evidence.first == "task 20 has slept uninterruptibly (state D) for at least 5.0 s without being woken")
    }
}
