import JobgovCore
@testable import LinuxSystem
import Testing

/// The guard's ranking on two recorded looks at a desktop (Fixtures/guard, see its README).
@Suite("Stuck-process guard on recorded procfs")
struct StuckProcessSensorTests {
    private func look(_ name: String, at time: Double, within: String? = nil) throws -> GuardObservation {
        let root = fixtureTree("guard/" + name)
        return try StuckProcessSensor(procRoot: root + "/proc", cgroupV2Mount: root + "/unified", within: within,
                                      ticksPerSecond: 100).observe(time: time, cpus: 2)
    }

    @Test func readsProcessesTasksAndCgroupPressure() throws {
        let t1 = try look("t1", at: 102)
        let byPID = Dictionary(uniqueKeysWithValues: t1.processes.map { ($0.pid, $0) })
        #expect(byPID.count == 7)
        let hog = try #require(byPID[3001])
        #expect(hog.command == "hog")
        #expect(hog.residentBytes == 900 << 20)
        #expect(hog.cpuSeconds == 4.8)
        #expect(hog.majorFaults == 905)
        #expect(hog.startTicks == 50000)
        #expect(hog.cgroup == "/user.slice/app-hog.scope")
        #expect(hog.blockedTasks == [.init(tid: 3001, switches: 90, waitChannel: "shrink_folio_list")])
        #expect(byPID[812]?.runQueueWaitSeconds == 42.5)
        #expect(byPID[2]?.isKernelThread == true)
        #expect(byPID[1]?.isKernelThread == false)
        #expect(t1.memoryStallMicroseconds == 1_500_000)
        #expect(t1.cpuStallMicroseconds == 6_600_000)
        #expect(t1.cgroupMemoryStallMicroseconds["/user.slice/app-hog.scope"] == 1_700_000)
    }

    @Test func findsTheMemoryHogTheCPUHogAndTheStuckTask() throws {
        var settings = StuckProcessPolicy.Settings()
        settings.uninterruptibleSeconds = 2
        settings.confirmWindows = 1
        var policy = StuckProcessPolicy(settings: settings)
        #expect(policy.observe(try look("t0", at: 100)).isEmpty)
        let findings = policy.observe(try look("t1", at: 102))
        let byCause = Dictionary(uniqueKeysWithValues: findings.map { ($0.cause, $0) })
        #expect(findings.count == 3)

        let memory = try #require(byCause[.memory])
        #expect(memory.pid == 3001)  // grew 800 MiB with its cgroup stalled 75%; firefox grew 60 MiB at 2%
        #expect(memory.evidence.contains("resident 900 MiB, grew 800 MiB in the window"))
        #expect(memory.evidence.contains("its cgroup /user.slice/app-hog.scope stalled on memory 75% of the window"))
        #expect(memory.evidence.contains("900 major page faults in the window"))
        #expect(policy.shouldAct(on: memory))

        let cpu = try #require(byCause[.cpu])
        #expect(cpu.pid == 4000)  // 3.8 s of CPU in 2 s; gnome-shell used 0.25 CPUs
        #expect(cpu.evidence.contains("it used 1.9 of 2 CPUs"))
        #expect(cpu.evidence.first == "CPU pressure: runnable tasks waited 80% of the last 2.0 s")

        // rsync (switches unchanged across both looks) is stuck; the hog's task only entered D by the second.
        let stuck = try #require(byCause[.uninterruptible])
        #expect(stuck.pid == 5000)
        #expect(stuck.evidence.contains("waiting in nfs_wait_bit_killable"))
        #expect(!policy.shouldAct(on: stuck))  // only reported: neither freezing nor SIGKILL reaches it in D
    }

    @Test func aCgroupScopeLimitsTheCandidates() throws {
        var settings = StuckProcessPolicy.Settings()
        settings.confirmWindows = 1
        var policy = StuckProcessPolicy(settings: settings)
        _ = policy.observe(try look("t0", at: 100, within: "/user.slice/build.scope"))
        let findings = policy.observe(try look("t1", at: 102, within: "/user.slice/build.scope"))
        // The hog is outside: cc1plus, growing 50 MiB under system memory pressure, is the memory culprit too.
        #expect(findings.map(\.cause) == [.memory, .cpu])
        #expect(Set(findings.map(\.pid)) == [4000])
    }

    @Test func protectedCommandsAreReportedNotActedOn() throws {
        var settings = StuckProcessPolicy.Settings()
        settings.confirmWindows = 1
        settings.protectedCommands.insert("hog")
        var policy = StuckProcessPolicy(settings: settings)
        _ = policy.observe(try look("t0", at: 100))
        let memory = try #require(policy.observe(try look("t1", at: 102)).first { $0.cause == .memory })
        #expect(memory.pid == 3001)
        #expect(memory.isProtected)
        #expect(!policy.shouldAct(on: memory))
    }

    @Test func cgroupPathsNest() {
        #expect(StuckProcessSensor.cgroup("/user.slice/a.scope", isWithin: "/user.slice"))
        #expect(StuckProcessSensor.cgroup("/user.slice", isWithin: "/user.slice/"))
        #expect(!StuckProcessSensor.cgroup("/user.slice2/x", isWithin: "/user.slice"))
        #expect(StuckProcessSensor.cgroup("/x", isWithin: "/"))
    }
}
