import Foundation
import JobgovCore
import LinuxSystem
import Testing

@Suite("System tuning (the last rung)")
struct SystemTuningTests {
    private func fakeProcSys(watermark: String) throws -> String {
        let dir = NSTemporaryDirectory() + "jobgov-sysctl-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir + "/vm", withIntermediateDirectories: true)
        try watermark.write(toFile: dir + "/vm/watermark_scale_factor", atomically: false, encoding: .utf8)
        FileManager.default.createFile(atPath: dir + "/vm/compact_memory", contents: nil)
        return dir
    }

    private func read(_ path: String) -> String {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").trimmingWhitespace()
    }

    @Test func appliesCompactsAndRestores() throws {
        let root = try fakeProcSys(watermark: "10\n")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let tuning = SystemTuning(procSys: root)
        #expect(tuning.originals == [SystemTuning.Setting(path: "vm/watermark_scale_factor", original: "10")])
        #expect(tuning.apply() == nil)
        #expect(read(root + "/vm/watermark_scale_factor") == "200")
        #expect(read(root + "/vm/compact_memory") == "1")
        tuning.restore()
        #expect(read(root + "/vm/watermark_scale_factor") == "10")
    }

    @Test func neverLowersAndLeavesOthersChangesAlone() throws {
        let high = try fakeProcSys(watermark: "500")
        defer { try? FileManager.default.removeItem(atPath: high) }
        let t = SystemTuning(procSys: high)
        #expect(t.apply() == nil)
        #expect(read(high + "/vm/watermark_scale_factor") == "500", "already above: left as it is")

        let root = try fakeProcSys(watermark: "10")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let tuning = SystemTuning(procSys: root)
        tuning.apply()
        // Someone else set their own value meanwhile: it is theirs, not restored over.
        try "42".write(toFile: root + "/vm/watermark_scale_factor", atomically: false, encoding: .utf8)
        tuning.restore()
        #expect(read(root + "/vm/watermark_scale_factor") == "42")
    }

    @Test func watchdogArgumentsRoundTrip() {
        let s = SystemTuning.Setting(path: "vm/watermark_scale_factor", original: "10")
        #expect(SystemTuning.decode(SystemTuning.encode(s)) == s)
        #expect(SystemTuning.decode("../../etc/passwd=x") == nil)
        var plan = WatchdogPlan(runtimeDirectory: nil, removeWhenEmpty: [])
        plan.sysctls = [s]
        #expect(plan.arguments == ["--sysctl", "vm/watermark_scale_factor=10"])
    }

    /// The watchdog gives the real sysctl back after jobgov died with it tuned (simulated: the test tunes it).
    @Test("the watchdog restores vm.watermark_scale_factor", .enabled(if: geteuid() == 0))
    func watchdogRestoresTheRealSysctl() throws {
        let path = "/proc/sys/vm/watermark_scale_factor"
        let original = read(path)
        try #require(!original.isEmpty && original != "200", "needs a machine not already at 200")
        defer { try? original.write(toFile: path, atomically: false, encoding: .utf8) }
        try "200".write(toFile: path, atomically: false, encoding: .utf8)
        var plan = WatchdogPlan(runtimeDirectory: nil, removeWhenEmpty: [])
        plan.sysctls = [SystemTuning.Setting(path: "vm/watermark_scale_factor", original: original)]
        WatchdogRunner.recover(plan)
        #expect(read(path) == original)
    }
}

@Suite("Process observations from procfs")
struct ProcessObservationTests {
    @Test func ownProcessReadsItsParentNameAndMemory() throws {
        let me = try #require(ProcessTree().observation(of: getpid()))
        #expect(me.parent == getppid())
        #expect(!me.name.isEmpty)
        #expect(me.rssBytes > 0)
        #expect(me.startTicks > 0)
        #expect(ProcessTree().observation(of: Int32.max) == nil, "a process that does not exist")
    }
}
