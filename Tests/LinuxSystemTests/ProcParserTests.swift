import JobgovCore
import LinuxSystem
import Testing

/// Each parser on recorded (hybrid) and hand-written (v2, v1) files, checked against exact values.
@Suite("Parsers on good input")
struct ProcParserTests {
    @Test func pressureWithSomeAndFullLines() throws {
        let cpu = try parsePressure(try fixture("hybrid/proc/pressure/cpu"), path: "cpu")
        #expect(cpu.some == PressureLine(avg10: 5.84, avg60: 22.10, avg300: 22.80, totalMicroseconds: 382_499_820))
        #expect(cpu.full == PressureLine(avg10: 0, avg60: 0, avg300: 0, totalMicroseconds: 0))
        let io = try parsePressure(try fixture("hybrid/proc/pressure/io"), path: "io")
        #expect(io.some == PressureLine(avg10: 0.29, avg60: 0.19, avg300: 0.21, totalMicroseconds: 17_720_410))
        #expect(io.full == PressureLine(avg10: 0.28, avg60: 0.10, avg300: 0.03, totalMicroseconds: 12_413_613))
        let memory = try parsePressure(try fixture("v2/sys/fs/cgroup/jobgov/build/memory.pressure"), path: "m")
        #expect(memory.full?.totalMicroseconds == 1_804_221)
    }

    @Test func pressureWithoutFullLineBeforeLinux513() throws {
        let cpu = try parsePressure("some avg10=1.50 avg60=0.75 avg300=0.20 total=1234\n", path: "cpu")
        #expect(cpu.some.avg10 == 1.5)
        #expect(cpu.full == nil)
    }

    @Test func meminfoInBytes() throws {
        let info = try parseMeminfo(try fixture("hybrid/proc/meminfo"), path: "meminfo")
        #expect(info.total == kB(24_683_656))
        #expect(info.free == kB(23_477_512))
        #expect(info.available == kB(24_297_188))
        #expect(info.buffers == kB(5476))
        #expect(info.cached == kB(1_006_776))
        #expect(info.dirty == kB(10364))
        #expect(info.writeback == 0)
        #expect(info.swapTotal == 0)
        #expect(info.swapFree == 0)
        #expect(info.shmem == kB(8952))
        #expect(info.activeFile == kB(684_652))
        #expect(info.inactiveFile == kB(318_748))
        #expect(info.activeAnon == kB(1520))
        #expect(info.inactiveAnon == kB(4388))
        #expect(info.values.count == 54)
        #expect(info.values["Hugepagesize"] == kB(2048))
        #expect(info.values["HugePages_Total"] == 0)  // a count, not kB
        #expect(info.values["VmallocTotal"] == kB(34_359_738_367))
    }

    @Test func meminfoWithSwap() throws {
        let info = try parseMeminfo(try fixture("v2/proc/meminfo"), path: "meminfo")
        #expect(info.swapTotal == kB(2_097_148))
        #expect(info.swapFree == kB(1_534_220))
        #expect(info.available == kB(1_873_316))
    }

    @Test func zoneinfoWatermarksOfEveryZone() throws {
        let zones = try parseZoneinfo(try fixture("hybrid/proc/zoneinfo"), path: "zoneinfo")
        #expect(zones == [
            ZoneWatermarks(node: 0, zone: "DMA", freePages: 3840, minPages: 46, lowPages: 57, highPages: 68,
                           managedPages: 3840),
            ZoneWatermarks(node: 0, zone: "DMA32", freePages: 772_808, minPages: 9331, lowPages: 11663,
                           highPages: 13995, managedPages: 772_808),
            ZoneWatermarks(node: 0, zone: "Normal", freePages: 320_994, minPages: 7517, lowPages: 9396,
                           highPages: 11275, managedPages: 622_592),
            ZoneWatermarks(node: 0, zone: "Movable", freePages: 0, minPages: 32, lowPages: 32, highPages: 32,
                           managedPages: 0),
            ZoneWatermarks(node: 0, zone: "Device", freePages: 0, minPages: 0, lowPages: 0, highPages: 0,
                           managedPages: 0),
        ])
    }

    @Test func zoneinfoOfLinux44IgnoresPagesetHighLines() throws {
        let zones = try parseZoneinfo(try fixture("v1/proc/zoneinfo"), path: "zoneinfo")
        #expect(zones.map(\.zone) == ["DMA", "DMA32", "Normal"])
        #expect(zones[2] == ZoneWatermarks(node: 0, zone: "Normal", freePages: 11311, minPages: 1992,
                                           lowPages: 2490, highPages: 2988, managedPages: 239_710))
    }

    @Test func vmstatCountersAndAccessorsOnLinux618() throws {
        let vm = try parseVmstat(try fixture("hybrid/proc/vmstat"), path: "vmstat")
        #expect(vm.counters.count == 192)
        #expect(vm.counters["nr_free_pages"] == 1_097_642)
        #expect(vm.counters["pgfault"] == 72_343_866)
        #expect(vm.allocstall == 0)
        #expect(vm.pgscanKswapd == 0)
        #expect(vm.pgscanDirect == 0)
        #expect(vm.oomKill == 0)
        #expect(vm.workingsetRefault == 1_422_491)
    }

    @Test func vmstatAccessorsOnLinux61() throws {
        let vm = try parseVmstat(try fixture("v2/proc/vmstat"), path: "vmstat")
        #expect(vm.pgscanKswapd == 2_411_220)
        #expect(vm.pgscanDirect == 402_118)
        #expect(vm.pgstealKswapd == 1_722_014)
        #expect(vm.pgstealDirect == 210_443)
        #expect(vm.allocstall == 1877 + 412)
        #expect(vm.oomKill == 2)
        #expect(vm.workingsetRefault == 18220 + 904_113)
    }

    @Test func vmstatAccessorsSumPerZoneCountersOfLinux44() throws {
        let vm = try parseVmstat(try fixture("v1/proc/vmstat"), path: "vmstat")
        #expect(vm.pgscanKswapd == 502_114 + 160_223)
        #expect(vm.pgscanDirect == 30112 + 12011)  // pgscan_direct_throttle is not a zone
        #expect(vm.pgstealKswapd == 402_113 + 120_441)
        #expect(vm.pgstealDirect == 20112 + 8011)
        #expect(vm.allocstall == 311)
        #expect(vm.oomKill == nil)  // before Linux 4.13
        #expect(vm.workingsetRefault == 402_113)
    }

    @Test func procStatCPULine() throws {
        let cpu = try parseProcStat(try fixture("hybrid/proc/stat"), path: "stat")
        #expect(cpu == CPUTimes(user: 171_588, nice: 7, system: 71710, idle: 305_849, iowait: 2022, irq: 0,
                                softirq: 502, steal: 3040))
    }

    @Test func diskstatsWith20Fields() throws {
        let disks = try parseDiskstats(try fixture("hybrid/proc/diskstats"), path: "diskstats")
        #expect(disks.count == 10)
        #expect(disks["vda"] == DiskStat(
            name: "vda", readsCompleted: 121_527, sectorsRead: 14_652_922, readMilliseconds: 232_358,
            writesCompleted: 42898, sectorsWritten: 2_936_792, writeMilliseconds: 33265, inFlight: 0,
            ioTicksMilliseconds: 51268, weightedMilliseconds: 279_952))
        #expect(disks["zram0"]?.readsCompleted == 0)
        #expect(try parseDiskstats(try fixture("v2/proc/diskstats"), path: "d")["nvme0n1p2"]?.inFlight == 2)
    }

    @Test func diskstatsWith14FieldsBeforeLinux418() throws {
        let disks = try parseDiskstats(try fixture("v1/proc/diskstats"), path: "diskstats")
        #expect(Set(disks.keys) == ["sda", "sda1", "sr0"])
        #expect(disks["sda"] == DiskStat(
            name: "sda", readsCompleted: 120_114, sectorsRead: 8_022_114, readMilliseconds: 402_211,
            writesCompleted: 80112, sectorsWritten: 4_022_114, writeMilliseconds: 1_201_122, inFlight: 0,
            ioTicksMilliseconds: 402_114, weightedMilliseconds: 1_603_331))
    }

    @Test func cgroupV2Memory() throws {
        let dir = "v2/sys/fs/cgroup/jobgov/build"
        let memory = try parseCgroupV2Memory(
            current: try fixture("\(dir)/memory.current"), max: try fixture("\(dir)/memory.max"),
            high: try fixture("\(dir)/memory.high"), peak: try fixture("\(dir)/memory.peak"),
            stat: try fixture("\(dir)/memory.stat"), events: try fixture("\(dir)/memory.events"), directory: dir)
        #expect(memory.usageBytes == 2_147_483_648)
        #expect(memory.limitBytes == nil)  // "max"
        #expect(memory.highBytes == 6_442_450_944)
        #expect(memory.peakBytes == 5_368_709_120)
        #expect(memory.stat["anon"] == 1_717_986_918)
        #expect(memory.stat.count == 49)
        #expect(memory.oomKills == 2)
        #expect(memory.oomEvents == 2)
        #expect(memory.events["high"] == 37)
        #expect(memory.underOOM == nil)
        #expect(memory.oomKillDisabled == nil)
    }

    @Test func cgroupV2MemoryOfRootCgroupHasOnlyCurrent() throws {
        let memory = try parseCgroupV2Memory(
            current: "4096\n", max: nil, high: nil, peak: nil, stat: nil, events: nil, directory: "/")
        #expect(memory == CgroupMemory(usageBytes: 4096))
    }

    @Test func cgroupV1MemoryRecordedUnlimited() throws {
        let dir = "hybrid/sys/fs/cgroup/memory/build"
        let memory = try parseCgroupV1Memory(
            usage: try fixture("\(dir)/memory.usage_in_bytes"), limit: try fixture("\(dir)/memory.limit_in_bytes"),
            maxUsage: try fixture("\(dir)/memory.max_usage_in_bytes"), stat: try fixture("\(dir)/memory.stat"),
            oomControl: try fixture("\(dir)/memory.oom_control"), directory: dir)
        #expect(memory.usageBytes == 12_591_104)
        #expect(memory.limitBytes == nil)  // 9223372036854771712
        #expect(memory.highBytes == nil)
        #expect(memory.peakBytes == 101_785_600)
        #expect(memory.stat.count == 42)
        #expect(memory.stat["rss"] == 1_900_544)
        #expect(memory.oomKills == 0)
        #expect(memory.oomEvents == nil)
        #expect(memory.underOOM == false)
        #expect(memory.oomKillDisabled == false)
    }

    @Test func cgroupV1MemoryLimitedAndUnderOOMOnLinux44() throws {
        let dir = "v1/sys/fs/cgroup/memory/jobgov/build"
        let memory = try parseCgroupV1Memory(
            usage: try fixture("\(dir)/memory.usage_in_bytes"), limit: try fixture("\(dir)/memory.limit_in_bytes"),
            maxUsage: try fixture("\(dir)/memory.max_usage_in_bytes"), stat: try fixture("\(dir)/memory.stat"),
            oomControl: try fixture("\(dir)/memory.oom_control"), directory: dir)
        #expect(memory.usageBytes == 1_073_741_824)
        #expect(memory.limitBytes == 2_147_483_648)
        #expect(memory.peakBytes == 2_143_289_344)
        #expect(memory.stat["hierarchical_memory_limit"] == 2_147_483_648)
        #expect(memory.underOOM == true)
        #expect(memory.oomKillDisabled == true)
        #expect(memory.oomKills == nil)  // no oom_kill line before Linux 4.13
    }

    @Test(arguments: [
        ("9223372036854771712\n", nil),  // x86_64 PAGE_COUNTER_MAX
        ("9223372036854710272\n", nil),  // 64 KiB pages
        ("4611686018427387904\n", nil),  // 2^62
        ("4611686018427387903\n", 4_611_686_018_427_387_903),
        ("104857600\n", 104_857_600),
    ] as [(String, UInt64?)])
    func cgroupV1UnlimitedThreshold(text: String, expected: UInt64?) throws {
        let memory = try parseCgroupV1Memory(
            usage: "0\n", limit: text, maxUsage: nil, stat: nil, oomControl: nil, directory: "m")
        #expect(memory.limitBytes == expected)
    }

    @Test func cgroupCPU() throws {
        let hybrid = try parseCgroupV2CPUStat(try fixture("hybrid/sys/fs/cgroup/unified/build/cpu.stat"), path: "c")
        #expect(hybrid == CgroupCPU(usageMicroseconds: 2_438_217_529, throttledMicroseconds: nil))
        let v2 = try parseCgroupV2CPUStat(try fixture("v2/sys/fs/cgroup/jobgov/build/cpu.stat"), path: "c")
        #expect(v2 == CgroupCPU(usageMicroseconds: 845_123_456, throttledMicroseconds: 20_456_789))
        let v1 = try parseCgroupV1CPUAcct(
            usage: try fixture("v1/sys/fs/cgroup/cpu,cpuacct/jobgov/build/cpuacct.usage"), path: "c")
        #expect(v1 == CgroupCPU(usageMicroseconds: 402_211_443))
    }
}
