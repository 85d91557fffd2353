import Foundation
import JobgovCore
import LinuxSystem
import Testing

/// SensorReader over recorded and hand-written trees: what it fills, and what it lists as unavailable.
@Suite("SensorReader on fixture trees")
struct SensorReaderTests {
    private let allPressure: Set<PressureResource> = [.cpu, .memory, .io]

    @Test func hybridWithV1MemoryAndCPUAcct() throws {
        let reader = SensorReader(
            root: fixtureTree("hybrid"),
            cgroup: CgroupDirectories(unified: "/sys/fs/cgroup/unified/build", memory: "/sys/fs/cgroup/memory/build",
                                      cpuacct: "/sys/fs/cgroup/cpuacct/build"),
            clock: { 42.5 })
        let sample = reader.sample()
        #expect(sample.unavailable == [:])
        #expect(sample.time == 42.5)
        #expect(Set(sample.systemPressure.keys) == allPressure)
        #expect(sample.systemPressure[.cpu]?.some.totalMicroseconds == 382_499_820)
        #expect(Set(sample.cgroupPressure.keys) == allPressure)
        #expect(sample.cgroupPressure[.cpu]?.some.totalMicroseconds == 382_505_159)
        #expect(sample.memory?.total == kB(24_683_656))
        #expect(sample.zones.count == 5)
        #expect(sample.vmstat?.counters.count == 192)
        #expect(sample.cpu?.user == 171_588)
        #expect(sample.disks["vda"]?.readsCompleted == 121_527)
        #expect(sample.cgroupMemory?.usageBytes == 12_591_104)
        #expect(sample.cgroupMemory?.limitBytes == nil)
        #expect(sample.cgroupMemory?.underOOM == false)
        #expect(sample.cgroupCPU == CgroupCPU(usageMicroseconds: 2_462_114_113))
    }

    @Test func hybridWithOnlyTheV2DirectoryHasNoMemoryController() {
        let sample = SensorReader(
            root: fixtureTree("hybrid"), cgroup: CgroupDirectories(unified: "/sys/fs/cgroup/unified/build")
        ).sample()
        #expect(Set(sample.unavailable.keys) == ["cgroup.memory"])
        #expect(sample.unavailable["cgroup.memory"]?.contains("unified/build/memory.current does not exist") == true)
        #expect(sample.cgroupMemory == nil)
        #expect(sample.cgroupCPU == CgroupCPU(usageMicroseconds: 2_438_217_529, throttledMicroseconds: nil))
        #expect(sample.cgroupPressure.count == 3)
    }

    @Test func pureV2() {
        let sample = SensorReader(root: fixtureTree("v2"), cgroup: CgroupDirectories(unified: "/sys/fs/cgroup/jobgov/build"))
            .sample()
        #expect(sample.unavailable == [:])
        #expect(sample.systemPressure[.memory]?.full?.totalMicroseconds == 2_016_733)
        #expect(sample.cgroupPressure[.cpu]?.full?.avg10 == 20.13)
        #expect(sample.memory?.swapTotal == kB(2_097_148))
        #expect(sample.zones.map(\.zone) == ["DMA", "DMA32", "Normal", "Movable", "Device"])
        #expect(sample.vmstat?.oomKill == 2)
        #expect(sample.cpu?.idle == 18_802_211)
        #expect(Set(sample.disks.keys) == ["nvme0n1", "nvme0n1p1", "nvme0n1p2", "dm-0"])
        #expect(sample.cgroupMemory?.limitBytes == nil)
        #expect(sample.cgroupMemory?.highBytes == 6_442_450_944)
        #expect(sample.cgroupMemory?.peakBytes == 5_368_709_120)
        #expect(sample.cgroupMemory?.oomKills == 2)
        #expect(sample.cgroupCPU == CgroupCPU(usageMicroseconds: 845_123_456, throttledMicroseconds: 20_456_789))
    }

    @Test func pureV1WithoutPSI() {
        let sample = SensorReader(
            root: fixtureTree("v1"),
            cgroup: CgroupDirectories(memory: "/sys/fs/cgroup/memory/jobgov/build",
                                      cpuacct: "/sys/fs/cgroup/cpu,cpuacct/jobgov/build")
        ).sample()
        #expect(Set(sample.unavailable.keys) == ["pressure.cpu", "pressure.memory", "pressure.io"])
        #expect(sample.unavailable["pressure.memory"]?.contains("psi=1") == true)
        #expect(sample.systemPressure.isEmpty)
        #expect(sample.cgroupPressure.isEmpty)
        #expect(sample.memory?.available == kB(603_112))
        #expect(sample.zones.count == 3)
        #expect(sample.vmstat?.allocstall == 311)
        #expect(sample.disks.count == 3)
        #expect(sample.cgroupMemory?.limitBytes == 2_147_483_648)
        #expect(sample.cgroupMemory?.underOOM == true)
        #expect(sample.cgroupCPU == CgroupCPU(usageMicroseconds: 402_211_443))
    }

    /// The governor's lean sample reads a CPU figure in every tier: the build's cgroup's where it has one, else the
    /// machine's /proc/stat (no cgroup for the build, or v1 memory without a cpuacct directory), so that the CPU rule
    /// is never left without input.
    @Test func governorSampleAlwaysHasACPUReading() {
        let noCgroup = SensorReader(root: fixtureTree("v2")).sample(.governor)
        #expect(noCgroup.cpu?.idle == 18_802_211 && noCgroup.cgroupCPU == nil)
        let v1MemoryOnly = SensorReader(root: fixtureTree("v1"),
                                        cgroup: CgroupDirectories(memory: "/sys/fs/cgroup/memory/jobgov/build")).sample(.governor)
        #expect(v1MemoryOnly.cpu != nil && v1MemoryOnly.cgroupCPU == nil)
        let v1 = SensorReader(root: fixtureTree("v1"),
                              cgroup: CgroupDirectories(memory: "/sys/fs/cgroup/memory/jobgov/build",
                                                        cpuacct: "/sys/fs/cgroup/cpu,cpuacct/jobgov/build")).sample(.governor)
        #expect(v1.cgroupCPU == CgroupCPU(usageMicroseconds: 402_211_443) && v1.cpu == nil)
        let v2 = SensorReader(root: fixtureTree("v2"), cgroup: CgroupDirectories(unified: "/sys/fs/cgroup/jobgov/build")).sample(.governor)
        #expect(v2.cgroupCPU?.usageMicroseconds == 845_123_456 && v2.cpu == nil)
        #expect(v2.zones.isEmpty && v2.vmstat == nil, "the lean sample still leaves out the large files")
    }

    @Test func rootWithTrailingSlashReadsTheSameFiles() {
        let plain = SensorReader(root: fixtureTree("v2"), clock: { 1 }).sample()
        let slashed = SensorReader(root: fixtureTree("v2") + "/", clock: { 1 }).sample()
        #expect(plain == slashed)
        #expect(plain.unavailable == [:])
    }

    @Test func missingTreeListsEveryPiece() {
        let sample = SensorReader(
            root: "/nonexistent-jobgov-root",
            cgroup: CgroupDirectories(unified: "/sys/fs/cgroup/b", memory: "/m", cpuacct: "/c")
        ).sample()
        #expect(Set(sample.unavailable.keys) == [
            "pressure.cpu", "pressure.memory", "pressure.io", "meminfo", "zoneinfo", "vmstat", "stat", "diskstats",
            "cgroup.pressure.cpu", "cgroup.pressure.memory", "cgroup.pressure.io", "cgroup.memory", "cgroup.cpu",
        ])
        #expect(sample.unavailable["meminfo"]?.contains("/nonexistent-jobgov-root/proc/meminfo") == true)
        #expect(sample.memory == nil && sample.cpu == nil && sample.vmstat == nil)
        #expect(sample.zones.isEmpty && sample.disks.isEmpty && sample.systemPressure.isEmpty)
    }

    @Test func malformedAndUnreadableFilesCostOnlyTheirPiece() throws {
        let root = try TemporaryTree()
        try root.copy(from: fixtureTree("v2"))
        try root.write("/proc/meminfo", "MemTotal 1 kB\n")
        try root.replaceWithDirectory("/proc/vmstat")  // read(2) fails with EISDIR
        let sample = SensorReader(root: root.path).sample()
        #expect(Set(sample.unavailable.keys) == ["meminfo", "vmstat"])
        #expect(sample.unavailable["meminfo"]?.contains("line 1") == true)
        #expect(sample.unavailable["vmstat"]?.contains("Is a directory") == true)
        #expect(sample.memory == nil && sample.vmstat == nil)
        #expect(sample.cpu != nil && sample.zones.count == 5 && sample.systemPressure.count == 3)
    }

    @Test func v2CgroupWithOnlyMemoryCurrentListsTheOptionalFiles() throws {
        let root = try TemporaryTree()
        try root.write("/cg/memory.current", "8192\n")
        let sample = SensorReader(root: root.path, cgroup: CgroupDirectories(unified: "/cg")).sample()
        #expect(sample.cgroupMemory == CgroupMemory(usageBytes: 8192))
        for key in ["cgroup.memory.max", "cgroup.memory.high", "cgroup.memory.peak", "cgroup.memory.stat",
                    "cgroup.memory.events", "cgroup.cpu", "cgroup.pressure.memory"] {
            #expect(sample.unavailable[key] != nil, "\(key)")
        }
        #expect(sample.unavailable["cgroup.memory"] == nil)
    }
}

/// A scratch directory removed when the value goes away.
final class TemporaryTree {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "jobgov-sensors-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    func copy(from source: String) throws {
        for item in try FileManager.default.contentsOfDirectory(atPath: source) {
            try FileManager.default.copyItem(atPath: source + "/" + item, toPath: path + "/" + item)
        }
    }

    func write(_ relative: String, _ text: String) throws {
        let url = URL(fileURLWithPath: path + relative)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try? FileManager.default.removeItem(at: url)
        try text.write(to: url, atomically: false, encoding: .utf8)
    }

    func replaceWithDirectory(_ relative: String) throws {
        try? FileManager.default.removeItem(atPath: path + relative)
        try FileManager.default.createDirectory(atPath: path + relative, withIntermediateDirectories: true)
    }
}

@Suite("Cgroup io.stat")
struct CgroupIOStatTests {
    @Test func readFromTheV2Fixture() {
        let sample = SensorReader(root: fixtureTree("v2"), cgroup: CgroupDirectories(unified: "/sys/fs/cgroup/jobgov/build")).sample()
        #expect(sample.cgroupIO["8:0"] == CgroupIO(device: "8:0", readBytes: 1_048_576, writeBytes: 2_097_152,
                                                   readOperations: 256, writeOperations: 128))
        #expect(sample.cgroupIO["253:0"]?.readOperations == 1)
        #expect(sample.unavailable["cgroup.io"] == nil)
    }

    @Test func absentWithoutTheIOController() {
        // The hybrid machine's v2 tree has no io controller: no io.stat, and that is not an error.
        let sample = SensorReader(root: fixtureTree("hybrid"), cgroup: CgroupDirectories(unified: "/sys/fs/cgroup/unified/build")).sample()
        #expect(sample.cgroupIO.isEmpty)
        #expect(sample.unavailable["cgroup.io"] == nil)
    }

    @Test func malformedAndTruncatedLines() {
        #expect(throws: SensorError.malformed(path: "io.stat", line: 1, text: "8:0 rbytes=x")) {
            try parseCgroupIOStat("8:0 rbytes=x", path: "io.stat")
        }
        #expect(throws: SensorError.malformed(path: "io.stat", line: 1, text: "rbytes=1")) {
            try parseCgroupIOStat("rbytes=1", path: "io.stat")
        }
        #expect(throws: SensorError.truncated(path: "io.stat", expected: "rbytes, wbytes, rios and wios on each line")) {
            try parseCgroupIOStat("8:0 rbytes=1 wbytes=2", path: "io.stat")
        }
        #expect((try? parseCgroupIOStat("", path: "io.stat"))?.isEmpty == true)
    }
}
