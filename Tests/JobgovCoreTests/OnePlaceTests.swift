import Testing
import JobgovCore

/// Facts kept in one place, so that their users cannot disagree.
@Suite("One place per fact")
struct OnePlaceTests {
    @Test func embeddedHexDecodesEitherCase() {
        #expect(EmbeddedHex.bytes("7f454c46") == [0x7f, 0x45, 0x4c, 0x46])
        #expect(EmbeddedHex.bytes("00ffAbcD") == [0x00, 0xff, 0xab, 0xcd])
        #expect(EmbeddedHex.bytes("").isEmpty)
        #expect(EmbeddedHex.byteCount("0a0b0c") == 3)
    }

    /// Every name that is launched as a known tool is also a jobserver client in the job table.
    @Test func buildToolNamesAreOneTable() {
        let table = JobTable()
        for (name, kind) in ClientKind.jobserverClients {
            #expect(table.clientNames.contains(name))
            #expect(ClientKind.detect(argv: ["/usr/bin/" + name, "all"]) == kind)
        }
        #expect(table.clientNames.isSuperset(of: ["make", "gmake", "gnumake", "ninja", "ninja-build", "samu", "cargo"]))
        #expect(ClientKind.detect(argv: ["cmake", "--build", "b"]) == .cmakeBuild)
        #expect(ClientKind.detect(argv: ["cmake", "-S", "."]) == .other)
        #expect(ClientKind.detect(argv: ["samu"]) == .other)
    }

    private func disk(_ name: String, ops: UInt64, ms: UInt64) -> DiskStat {
        DiskStat(name: name, readsCompleted: ops, sectorsRead: 0, readMilliseconds: ms, writesCompleted: 0,
                 sectorsWritten: 0, writeMilliseconds: 0, inFlight: 0, ioTicksMilliseconds: 0, weightedMilliseconds: 0)
    }

    /// A slow loop device (a file system image) is not the disk the build waits on: the governor's I/O rule and
    /// `jobgov monitor` both leave it out, and name the same device.
    @Test func slowestDiskLeavesOutLoopAndRamDevices() {
        let before = ["loop0": disk("loop0", ops: 0, ms: 0), "ram0": disk("ram0", ops: 0, ms: 0),
                      "sda": disk("sda", ops: 100, ms: 100), "nvme0n1": disk("nvme0n1", ops: 0, ms: 0)]
        let after = ["loop0": disk("loop0", ops: 10, ms: 5000), "ram0": disk("ram0", ops: 10, ms: 9000),
                     "sda": disk("sda", ops: 110, ms: 150), "nvme0n1": disk("nvme0n1", ops: 100, ms: 100)]
        let slowest = DiskStat.slowest(previous: before, current: after)
        #expect(slowest?.device == "sda" && slowest?.milliseconds == 5)
        let frame = MonitorFrame(previous: Sample(time: 0, disks: before), current: Sample(time: 1, disks: after))
        #expect(frame.ioLatencyDevice == "sda" && frame.ioLatencyMilliseconds == 5)
        #expect(DiskStat.slowest(previous: before, current: before) == nil)
        // Equal latencies name the first device in order, whatever the dictionary's order.
        let tie = DiskStat.slowest(previous: ["b": disk("b", ops: 0, ms: 0), "a": disk("a", ops: 0, ms: 0)],
                                   current: ["b": disk("b", ops: 1, ms: 3), "a": disk("a", ops: 1, ms: 3)])
        #expect(tie?.device == "a")
    }
}
