import Foundation
import JobgovCore
import LinuxSystem
import Testing

// MARK: without the kernel

@Suite("Compressed swap: parsing")
struct CompressedSwapParsingTests {
    @Test func procSwapsAndZswap() {
        let text = """
            Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority
            /dev/zram1                              partition\t524284\t\t1024\t\t32767
            /swap\\040file                            file\t\t0\t\t0\t\t-2
            /dev/vda2                               partition\t2097148\t\t0\t\t-3

            """
        let s = SwapState.parse(procSwaps: text, zswapEnabled: "N\n")
        #expect(s.devices.map(\.path) == ["/dev/zram1", "/dev/vda2"], "a zero-sized area does not count")
        #expect(s.devices[0].sizeBytes == 524284 << 10 && s.devices[0].usedBytes == 1 << 20)
        #expect(s.devices[0].priority == 32767)
        #expect(s.reasonToAddNothing?.contains("swap is already active (/dev/zram1") == true)
        let none = SwapState.parse(procSwaps: "Filename Type Size Used Priority\n", zswapEnabled: "N")
        #expect(!none.hasSwap && none.reasonToAddNothing == nil)
        let zswap = SwapState.parse(procSwaps: "Filename Type Size Used Priority\n", zswapEnabled: "Y\n")
        #expect(zswap.reasonToAddNothing?.contains("zswap") == true)
        let spaced = SwapState.parse(procSwaps: "h\n/swap\\040file file 100 0 -2\n", zswapEnabled: nil)
        #expect(spaced.devices.first?.path == "/swap file")
    }

    @Test func mmStat() throws {
        let u = try #require(CompressedSwap.Usage(mmStat: "  209715200 70000000 73400320 268435456 73400320 6400 0 12 12\n"))
        #expect(u.originalBytes == 209_715_200 && u.compressedBytes == 70_000_000 && u.memoryUsedBytes == 73_400_320)
        #expect(u.memoryLimitBytes == 268_435_456 && u.samePages == 6400)
        #expect(abs(u.ratio - 209_715_200.0 / 73_400_320.0) < 1e-9)
        #expect(u.savedBytes == 209_715_200 - 73_400_320)
        #expect(CompressedSwap.Usage(mmStat: "") == nil)
        #expect(CompressedSwap.Usage(mmStat: "1 2 3")?.ratio == nil)
    }

    /// The header layout of include/linux/swap.h, checked against what util-linux's mkswap writes.
    @Test func swapHeaderLayout() {
        let uuid = (0..<16).map { UInt8($0) }
        let page = CompressedSwap.Header.page(sizeBytes: 1 << 20, label: "jobgov-12345", pageSize: 4096, uuid: uuid)
        #expect(page.count == 4096)
        #expect(Array(page[1024..<1036]) == [1, 0, 0, 0, 255, 0, 0, 0, 0, 0, 0, 0], "version 1, last_page 255, no bad pages")
        #expect(Array(page[1036..<1052]) == uuid)
        #expect(Array(page[1052..<1064]) == Array("jobgov-12345".utf8))
        #expect(Array(page[4086...]) == Array("SWAPSPACE2".utf8))
        #expect(CompressedSwap.Header.label(of: page) == "jobgov-12345")
        var notSwap = page
        notSwap[4095] = 0
        #expect(CompressedSwap.Header.label(of: notSwap) == nil)
        let long = CompressedSwap.Header.page(sizeBytes: 1 << 20, label: "jobgov-1234567890123", pageSize: 4096, uuid: uuid)
        #expect(CompressedSwap.Header.label(of: long) == "jobgov-123456789", "cut to the 16 bytes of the field")
        #expect(CompressedSwap.owner(ofLabel: "jobgov-42") == 42)
        #expect(CompressedSwap.owner(ofLabel: "jobgov-") == nil)
        #expect(CompressedSwap.owner(ofLabel: "swap-42") == nil)
    }

    @Test func mapsToRanges() {
        let maps = """
            55d0c0a00000-55d0c0a21000 r--p 00000000 fe:01 1234   /usr/bin/cc1plus
            55d0c1a00000-55d0c1a40000 rw-p 01000000 fe:01 1234   /usr/bin/cc1plus
            55d0c2000000-55d0d2000000 rw-p 00000000 00:00 0      [heap]
            7f0000000000-7f0000100000 rw-s 00000000 00:05 99     /dev/shm/x
            7f0000200000-7f0000300000 ---p 00000000 00:00 0
            7f0000300000-7f0000400000 rw-p 00000000 00:00 0
            7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0      [stack]
            7ffd00100000-7ffd00104000 r--p 00000000 00:00 0      [vvar]
            7ffd00104000-7ffd00106000 r-xp 00000000 00:00 0      [vdso]
            ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]
            """
        let r = PageOut.privateWritableRanges(maps: maps)
        #expect(r == [
            PageOut.Range(start: 0x55d0c1a00000, length: 0x40000),
            PageOut.Range(start: 0x55d0c2000000, length: 0x10000000),
            PageOut.Range(start: 0x7f0000300000, length: 0x100000),
            PageOut.Range(start: 0x7ffd00000000, length: 0x21000),
        ])
    }

    @Test func swappinessTuningRestoresOnlyItsOwnValue() throws {
        let dir = NSTemporaryDirectory() + "jobgov-swappiness-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir + "/vm", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func read() -> String { ((try? String(contentsOfFile: dir + "/vm/swappiness", encoding: .utf8)) ?? "").trimmingWhitespace() }
        try "60\n".write(toFile: dir + "/vm/swappiness", atomically: false, encoding: .utf8)
        let t = SwappinessTuning(procSys: dir)
        #expect(t.originals == [SystemTuning.Setting(path: "vm/swappiness", original: "60")])
        #expect(t.apply() == nil)
        #expect(read() == "0")
        t.restore()
        #expect(read() == "60")
        // The watchdog's path: restored where jobgov's 0 still holds, left where someone set their own.
        #expect(t.apply() == nil)
        SystemTuning.restore(t.originals, procSys: dir)
        #expect(read() == "60")
        #expect(t.apply() == nil)
        try "10".write(toFile: dir + "/vm/swappiness", atomically: false, encoding: .utf8)
        t.restore()
        #expect(read() == "10")
        // A sysctl jobgov does not tune is never written, whatever the watchdog's command line says.
        try "1".write(toFile: dir + "/vm/overcommit_memory", atomically: false, encoding: .utf8)
        SystemTuning.restore([SystemTuning.Setting(path: "vm/overcommit_memory", original: "2")], procSys: dir)
        #expect(((try? String(contentsOfFile: dir + "/vm/overcommit_memory", encoding: .utf8)) ?? "") == "1")
    }

    @Test func watchdogArguments() {
        var plan = WatchdogPlan(runtimeDirectory: nil, removeWhenEmpty: [])
        #expect(plan.arguments == [])
        plan.zramIndex = 3
        plan.zramLabel = "jobgov-77"
        #expect(plan.arguments == ["--zram", "3", "--zram-label", "jobgov-77"])
    }

    @Test func rangesAreCutIntoBatches() {
        let mib: UInt64 = 1 << 20
        let pieces = PageOut.split([PageOut.Range(start: 0x1000, length: 70 * mib),
                                    PageOut.Range(start: 0x9000_0000, length: 4096)], atMost: 32 * mib)
        #expect(pieces.map(\.length) == [32 * mib, 32 * mib, 6 * mib, 4096])
        #expect(pieces.map(\.start) == [0x1000, 0x1000 + 32 * mib, 0x1000 + 64 * mib, 0x9000_0000])
    }

    @Test func pageOutOfAProcessThatIsGone() {
        let r = PageOut.process(pid: Int32.max - 1)
        #expect(r.error?.errno == ESRCH)
        #expect(r.summary.contains("gone"))
    }
}

// MARK: on the real kernel

private let isRoot = geteuid() == 0
private let hasZram = access("/sys/class/zram-control/hot_add", F_OK) == 0

/// On this machine's kernel, as root: zram devices, page-out of a frozen process in a memory cgroup the test makes
/// below its own, and the watchdog. Every device, cgroup and process made is removed, and vm.swappiness restored,
/// also when an expectation fails.
@Suite("Compressed swap on the real kernel", .serialized,
       .enabled(if: isRoot && hasZram, "needs root and a kernel with zram (/sys/class/zram-control)"))
final class CompressedSwapKernelTests {
    /// Devices made here, removed at the end whatever happened.
    private var devices: [CompressedSwap] = []
    private var foreign: [Int] = []
    private let swappiness = readSmallFile("/proc/sys/vm/swappiness")?.trimmingWhitespace()
    private let scratch = NSTemporaryDirectory() + "jobgov-swap-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"

    init() throws {
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
    }

    deinit {
        // swapoff can fail (ENOMEM) while another process on the machine, in a cgroup at its limit, has pages in
        // the device: retry for a while rather than leave it.
        for d in devices {
            for _ in 0..<60 {
                if (try? d.remove()) != nil { break }
                usleep(500_000)
            }
        }
        for index in foreign { Self.removeForeign(index) }
        if let swappiness { try? writeCgroupFile("/proc/sys/vm/swappiness", swappiness) }
        try? FileManager.default.removeItem(atPath: scratch)
    }

    private func setUp(_ size: UInt64 = 512 << 20, limit: UInt64 = 384 << 20, owner: Int32 = getpid()) throws -> CompressedSwap {
        let d = try CompressedSwap.setUp(sizeBytes: size, memoryLimitBytes: limit, owner: owner)
        devices.append(d)
        return d
    }

    private static func procSwapsLists(_ device: String) -> Bool {
        (readSmallFile("/proc/swaps") ?? "").split(separator: "\n").contains { $0.hasPrefix(device + " ") }
    }

    /// A device that is not jobgov's: hot_add, mkswap with another label, swapon, by the system's own tools.
    private func foreignSwapDevice(label: String) throws -> Int {
        let index = try #require(Int(try readFile("/sys/class/zram-control/hot_add").trimmingWhitespace()))
        foreign.append(index)
        try writeCgroupFile("/sys/block/zram\(index)/disksize", String(64 << 20))
        #expect(try Self.run("/usr/sbin/mkswap", ["-L", label, "/dev/zram\(index)"]).status == 0)
        #expect(try Self.run("/usr/sbin/swapon", ["-p", "-5", "/dev/zram\(index)"]).status == 0)
        return index
    }

    private static func removeForeign(_ index: Int) {
        _ = try? run("/usr/sbin/swapoff", ["/dev/zram\(index)"])
        try? writeCgroupFile("/sys/block/zram\(index)/reset", "1")
        try? writeCgroupFile("/sys/class/zram-control/hot_remove", String(index))
    }

    @Test("a device is set up as swap with jobgov's label, lz4 and its cap, and removed without a trace")
    func setUpAndRemove() throws {
        let d = try setUp()
        #expect(Self.procSwapsLists(d.devicePath), "\(readSmallFile("/proc/swaps") ?? "")")
        let state = SwapState.read()
        let entry = try #require(state.devices.first { $0.path == d.devicePath })
        #expect(entry.priority == Int(CompressedSwap.defaultPriority))
        #expect(entry.sizeBytes >= (512 << 20) - 4096 * 2)
        #expect(CompressedSwap.swapLabel(device: d.devicePath) == "jobgov-\(getpid())", "readable while it is swap")
        // util-linux reads the header jobgov wrote as a swap area with that label.
        let blkid = try Self.run("/usr/sbin/blkid", ["-o", "export", d.devicePath])
        #expect(blkid.output.contains("TYPE=swap") && blkid.output.contains("LABEL=jobgov-\(getpid())"), "\(blkid.output)")
        let algorithms = readSmallFile(d.sysDirectory + "/comp_algorithm") ?? ""
        if algorithms.contains("lz4") { #expect(algorithms.contains("[lz4]") && d.algorithm == "lz4") }
        let usage = try #require(d.usage)
        #expect(usage.memoryLimitBytes == 384 << 20)
        #expect(usage.originalBytes < 1 << 20)

        try d.remove()
        #expect(!Self.procSwapsLists(d.devicePath))
        #expect(access(d.sysDirectory, F_OK) != 0, "hot_remove happened: \(d.sysDirectory) is gone")
        #expect(d.usage == nil)
        try d.remove()  // idempotent
    }

    @Test("removeStale removes a device labelled with a dead jobgov's pid, and no other")
    func removeStale() throws {
        let dead = try Self.deadPid()
        let stale = try setUp(64 << 20, limit: 32 << 20, owner: dead)
        let live = try setUp(64 << 20, limit: 32 << 20)
        let other = try foreignSwapDevice(label: "notjobgov-\(dead)")
        // A device jobgov's swapoff got to but not its reset: still labelled, no longer swap.
        let halfRemoved = try setUp(64 << 20, limit: 32 << 20, owner: dead)
        _ = try Self.run("/usr/sbin/swapoff", [halfRemoved.devicePath])

        let removed = CompressedSwap.removeStale()
        #expect(Set(removed).isSuperset(of: [stale.index, halfRemoved.index]), "\(removed)")
        #expect(!removed.contains(live.index) && !removed.contains(other))
        #expect(access(stale.sysDirectory, F_OK) != 0 && access(halfRemoved.sysDirectory, F_OK) != 0)
        #expect(Self.procSwapsLists(live.devicePath), "the live jobgov's device stays")
        #expect(Self.procSwapsLists("/dev/zram\(other)"), "a device jobgov did not label stays")
        #expect(CompressedSwap.swapLabel(device: "/dev/zram\(other)") == "notjobgov-\(dead)")
        // And the watchdog's way in: it removes by index only while the label is the one it was given.
        #expect(try CompressedSwap.removeDevice(index: other, expectedLabel: "jobgov-\(dead)") == false)
        #expect(Self.procSwapsLists("/dev/zram\(other)"))
    }

    /// jobgov dies (here: the test closes the pipe without a message, which is what the watchdog sees of a
    /// SIGKILL): the real `jobgov watchdog` process thaws the build and removes the swap device.
    @Test("the watchdog removes the swap device when jobgov dies")
    func watchdogRemovesTheDevice() throws {
        let d = try setUp(64 << 20, limit: 32 << 20)
        var plan = WatchdogPlan(runtimeDirectory: nil, removeWhenEmpty: [])
        plan.zramIndex = d.index
        plan.zramLabel = d.label
        let jobgov = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path + "/jobgov"
        let candidates = [jobgov, Bundle.main.bundleURL.deletingLastPathComponent().path + "/jobgov",
                          Bundle.main.bundleURL.path + "/jobgov"]
        if let executable = candidates.first(where: { access($0, X_OK) == 0 }) {
            var handle: WatchdogHandle? = try WatchdogHandle(executable: executable, plan: plan)
            let pid = handle!.pid
            handle = nil  // closes the pipe without a message: jobgov "died"
            var status: Int32 = 0
            let deadline = monotonicSeconds() + 10
            while waitpid(pid, &status, WNOHANG) == 0 && monotonicSeconds() < deadline { usleep(20_000) }
            #expect(status == 0)
        } else {
            // No built jobgov beside the tests: the same code in-process.
            var fds: [Int32] = [0, 0]
            #expect(pipe(&fds) == 0)
            close(fds[1])
            #expect(WatchdogRunner.run(pipeFD: fds[0], plan: plan) == 0)
            close(fds[0])
        }
        #expect(!Self.procSwapsLists(d.devicePath))
        #expect(access(d.sysDirectory, F_OK) != 0)
        try d.remove()
    }

    /// The main path: a job with ~200 MiB of realistically compressible data in a memory cgroup with a limit,
    /// frozen, paged out (RSS falls, VmSwap rises, the cgroup's charge falls), thawed, and its data intact.
    /// vm.swappiness and the cgroup's memory.swappiness are both 0 meanwhile: MADV_PAGEOUT does not consult them.
    @Test("a frozen job's memory is paged out to zram and comes back intact, with swappiness 0")
    func frozenJobPagedOutAndBack() throws {
        let helper = try compileHelper()
        let d = try setUp(512 << 20, limit: 384 << 20)
        let tuning = SwappinessTuning()
        #expect(tuning.apply() == nil)
        defer { tuning.restore() }
        #expect(readSmallFile("/proc/sys/vm/swappiness")?.trimmingWhitespace() == "0")

        let box = try TestCgroup("pageout", limits: CgroupLimits(memoryMax: 400 << 20, swappiness: 0))
        if let memory = box.cgroup.directories.memory {
            #expect(readSmallFile(memory + "/build/memory.swappiness")?.trimmingWhitespace() == "0",
                    "memory.swappiness reaches the leaf that existed before it was set")
        }
        let job = try Job(helper, ["200", "wait"], in: box)
        defer { job.end() }
        let checksum = try job.readLine(timeout: 20)
        #expect(checksum.hasPrefix("ready "))

        try box.cgroup.freeze()
        try box.waitFrozen()
        let charged = box.v1Usage
        // Asked to stop (the job thawed meanwhile), a page-out stops at its next batch: a 200 MiB heap is one
        // mapping, advised 32 MiB at a time.
        var asked = 0
        let partial = PageOut.process(pid: job.pid, shouldStop: { asked += 1; return asked > 2 })
        #expect(partial.stopped)
        #expect(partial.advisedBytes > 0 && partial.advisedBytes <= 2 * PageOut.batchBytes,
                "\(partial.advisedBytes >> 20) MiB advised in two batches before it stopped")
        #expect(partial.freedBytes < 100 << 20, "\(partial.summary)")
        let result = PageOut.process(pid: job.pid)
        #expect(!result.stopped)
        let after = box.v1Usage
        let usage = try #require(d.usage)
        print("page-out: \(result.summary); advised \(result.advisedBytes >> 20) MiB of \(result.requestedBytes >> 20) MiB in \(result.ranges) ranges; swap \((result.swapBefore ?? 0) >> 20) -> \((result.swapAfter ?? 0) >> 20) MiB; zram \(usage.originalBytes >> 20) MiB -> \(usage.compressedBytes >> 20) MiB compressed, \(usage.memoryUsedBytes >> 20) MiB used (x\(String(format: "%.2f", usage.ratio))); cgroup charge \(charged.map { $0 >> 20 } ?? 0) -> \(after.map { $0 >> 20 } ?? 0) MiB; memsw \(box.v1SwapUsage.map { $0 >> 20 } ?? 0) MiB")
        #expect(result.error == nil, "\(result.summary)")
        #expect(result.swapAvailable)
        #expect(result.refused.isEmpty, "\(result.refused)")
        let before = try #require(partial.residentBefore)
        #expect(before > 200 << 20)
        #expect(partial.freedBytes + result.freedBytes > 180 << 20, "most of the 200 MiB leaves RAM: \(result.summary)")
        #expect((result.swapAfter ?? 0) > (partial.swapBefore ?? 0) + (180 << 20))
        // Swap areas of equal priority are filled in turn: with another one active (another jobgov, another test
        // on this machine) only part of the pages land in this device. Its ratio still holds.
        let alone = SwapState.read().devices.filter { $0.priority == Int(CompressedSwap.defaultPriority) }.count == 1
        if alone { #expect(usage.originalBytes > 180 << 20) }
        // A quarter of the pages random (incompressible), an eighth zero (stored as no memory at all): 1.7-1.8x.
        #expect(usage.memoryUsedBytes < usage.originalBytes * 2 / 3, "the data compresses at least 1.5x")
        if let charged, let after {
            // The pages left the cgroup's charge, and their compressed copies were charged to no cgroup.
            #expect(after + (170 << 20) < charged, "cgroup usage \(charged >> 20) -> \(after >> 20) MiB")
        }

        try box.cgroup.thaw()
        try job.write("go\n")
        #expect(try job.readLine(timeout: 20) == "ok \(checksum.dropFirst("ready ".count))")
        #expect(job.wait(timeout: 20) == 0)
        if alone {
            #expect(CompressedSwap.usage(index: d.index)?.originalBytes ?? 0 < 32 << 20, "its pages left zram on exit")
        }
        try d.remove()
        tuning.restore()
        #expect(readSmallFile("/proc/sys/vm/swappiness")?.trimmingWhitespace() == swappiness)
    }

    /// Why the build's v1 cgroup gets memory.swappiness 0: with swap present, a job at the cgroup's limit is
    /// otherwise swapped (the build outgrows its limit into uncharged zram memory, and a running job thrashes).
    /// At 0 reclaim leaves anonymous memory alone and the job meets the limit as it would without swap.
    /// Also: vm.swappiness does not reach v1 memory cgroups (each has its own, copied from its parent when made).
    @Test("at its v1 limit a job is swapped with memory.swappiness 60, not with 0; vm.swappiness does not reach v1 cgroups")
    func cgroupSwappinessAtTheLimit() throws {
        let helper = try compileHelper()
        _ = try setUp(256 << 20, limit: 128 << 20)
        let tuning = SwappinessTuning()
        #expect(tuning.apply() == nil)
        defer { tuning.restore() }

        let swapping = try TestCgroup("swappy", limits: CgroupLimits(memoryMax: 48 << 20, swappiness: 60))
        if let memory = swapping.cgroup.directories.memory {
            let mine = readSmallFile(parentDirectory(memory) + "/memory.swappiness")?.trimmingWhitespace()
            #expect(mine != "0" || swappiness == "0", "vm.swappiness 0 left this process's own v1 cgroup at \(mine ?? "?")")
        }
        let a = try Job(helper, ["80", "wait"], in: swapping)
        defer { a.end() }
        let sum = try a.readLine(timeout: 20)
        #expect(sum.hasPrefix("ready "))
        let usage = swapping.v1Usage ?? 0, memsw = swapping.v1SwapUsage ?? 0
        print("at a 48 MiB limit with memory.swappiness 60: usage \(usage >> 20) MiB, memory+swap \(memsw >> 20) MiB, VmSwap \((PageOut.memory(pid: a.pid).swap ?? 0) >> 20) MiB")
        #expect(memsw > usage + (20 << 20), "memsw above usage: pages went to swap")
        try a.write("go\n")
        #expect(try a.readLine(timeout: 20) == "ok \(sum.dropFirst("ready ".count))")
        #expect(a.wait(timeout: 20) == 0, "80 MiB fit in a 48 MiB limit by swapping")

        let strict = try TestCgroup("strict", limits: CgroupLimits(memoryMax: 48 << 20, swappiness: 0))
        let b = try Job(helper, ["80"], in: strict)
        defer { b.end() }
        let status = b.wait(timeout: 20)
        #expect(status == 128 + SIGKILL, "OOM-killed at the limit instead of swapped (status \(String(describing: status)))")
    }

    @Test("page-out without swap is harmless and says so", .enabled(if: !SwapState.read().hasSwap, "the machine has swap now"))
    func pageOutWithoutSwap() throws {
        let helper = try compileHelper()
        let box = try TestCgroup("noswap", limits: CgroupLimits(memoryMax: 128 << 20))
        let job = try Job(helper, ["32", "wait"], in: box)
        defer { job.end() }
        let checksum = try job.readLine(timeout: 20)
        try box.cgroup.freeze()
        try box.waitFrozen()
        let r = PageOut.process(pid: job.pid)
        #expect(r.error == nil && !r.swapAvailable)
        #expect(r.freedBytes < 8 << 20, "anonymous memory stays without swap: \(r.summary)")
        #expect(r.summary.contains("no swap"))
        try box.cgroup.thaw()
        try job.write("go\n")
        #expect(try job.readLine(timeout: 20) == "ok \(checksum.dropFirst("ready ".count))")
        #expect(job.wait(timeout: 20) == 0)
    }

    // MARK: helpers

    /// A job that fills N MiB with data about as compressible as a compiler's heap (per 8 pages: one of zeros,
    /// two of random bytes, five of text-like words and numbers), prints `ready CHECKSUM`, and with `wait` reads a
    /// line, sums its memory again and prints `ok CHECKSUM` (or `bad`), exiting 0 only when the data is intact.
    private func compileHelper() throws -> String {
        let source = scratch + "/fill.c"
        let binary = scratch + "/fill"
        if access(binary, X_OK) == 0 { return binary }
        try Self.helperSource.write(toFile: source, atomically: false, encoding: .utf8)
        let r = try Self.run("/usr/bin/cc", ["-O2", "-o", binary, source])
        try #require(r.status == 0, "cc: \(r.output)")
        return binary
    }

    static let helperSource = #"""
        #include <stdint.h>
        #include <stdio.h>
        #include <stdlib.h>
        #include <string.h>
        static uint64_t sum(const uint64_t *p, size_t n) {
            uint64_t h = 1469598103934665603ull;
            for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
            return h;
        }
        int main(int argc, char **argv) {
            size_t bytes = (size_t)atol(argv[1]) << 20, pages = bytes / 4096;
            unsigned char *m = malloc(bytes);
            if (!m) return 2;
            static const char *words[] = {"template", "typename", "std::vector<int>", "operator()", "const",
                "namespace", "return", "struct", "0x0000", "inline", "static_cast", "nullptr", "->", "::", "{}"};
            uint64_t x = 88172645463325252ull;
            for (size_t p = 0; p < pages; p++) {
                unsigned char *page = m + p * 4096;
                int kind = p % 8;
                if (kind == 0) { memset(page, 0, 4096); continue; }
                if (kind <= 2) {
                    for (int i = 0; i < 4096; i += 8) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; memcpy(page + i, &x, 8); }
                    continue;
                }
                int at = 0;
                while (at < 4096) {
                    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                    char word[48];
                    int n = snprintf(word, sizeof word, "%s %u ", words[x % 15], (unsigned)(x >> 40) % 1000);
                    for (int i = 0; i < n && at < 4096; i++) page[at++] = (unsigned char)word[i];
                }
            }
            uint64_t h = sum((const uint64_t *)m, bytes / 8);
            printf("ready %016llx\n", (unsigned long long)h);
            fflush(stdout);
            if (argc > 2) {
                char line[16];
                if (!fgets(line, sizeof line, stdin)) return 3;
                uint64_t again = sum((const uint64_t *)m, bytes / 8);
                printf(again == h ? "ok %016llx\n" : "bad %016llx\n", (unsigned long long)again);
                fflush(stdout);
                return again == h ? 0 : 1;
            }
            return 0;
        }
        """#

    static func run(_ path: String, _ args: [String]) throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// The pid of a process that has ended and been reaped.
    static func deadPid() throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/true")
        try p.run()
        p.waitUntilExit()
        return p.processIdentifier
    }
}

/// A memory cgroup (v1 here, with its v2 twin for freezing) below the test's own, removed with its processes.
final class TestCgroup {
    let cgroup: BuildCgroup
    init(_ tag: String, limits: CgroupLimits) throws {
        cgroup = try BuildCgroup.create(layout: CgroupLayout.detect(),
                                        name: "jobgov-swaptest-\(getpid())-\(tag)-\(UInt16.random(in: 0...UInt16.max))")
        do {
            try cgroup.apply(limits)
        } catch {
            _ = cgroup.remove()
            throw error
        }
    }

    var v1Usage: UInt64? { cgroup.directories.memory.flatMap { readSmallFile($0 + "/memory.usage_in_bytes") }.flatMap { UInt64($0.trimmingWhitespace()) } }
    /// memory + swap (v1 memsw), as charged to the cgroup.
    var v1SwapUsage: UInt64? { cgroup.directories.memory.flatMap { readSmallFile($0 + "/memory.memsw.usage_in_bytes") }.flatMap { UInt64($0.trimmingWhitespace()) } }

    func waitFrozen() throws {
        let deadline = monotonicSeconds() + 5
        while !cgroup.isFrozen {
            try #require(monotonicSeconds() < deadline, "the cgroup did not freeze")
            usleep(5_000)
        }
    }

    deinit {
        try? cgroup.thaw()
        for pid in cgroup.processes() { kill(pid, SIGKILL) }
        for _ in 0..<100 where !cgroup.remove() { usleep(20_000) }
    }
}

/// A helper process started in a test cgroup's leaf (it joins before it executes), with pipes to and from it.
final class Job {
    let pid: Int32
    /// Kept alive as long as the job: its cgroup kills what is left in it when it goes.
    private let box: TestCgroup
    private var input: Int32
    private var output: Int32
    private var buffered: [UInt8] = []
    private var status: Int32?

    init(_ executable: String, _ arguments: [String], in box: TestCgroup) throws {
        var toChild: [Int32] = [0, 0], fromChild: [Int32] = [0, 0]
        guard pipe(&toChild) == 0, pipe(&fromChild) == 0 else { throw SystemError("pipe") }
        // sh joins the cgroups, then execs the helper with the pipes as stdin and stdout.
        let joins = box.cgroup.leafProcsFiles.map { "echo $$ > \($0)" }.joined(separator: " && ")
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, toChild[0], 0)
        posix_spawn_file_actions_adddup2(&actions, fromChild[1], 1)
        for fd in [toChild[0], toChild[1], fromChild[0], fromChild[1]] { posix_spawn_file_actions_addclose(&actions, fd) }
        let argv = ["/bin/sh", "-c", "\(joins) && exec \"$@\"", "sh", executable] + arguments
        let cargs = argv.map { strdup($0) } + [nil]
        defer { cargs.forEach { free($0) } }
        var child: pid_t = 0
        let rc = posix_spawn(&child, "/bin/sh", &actions, nil, cargs, environ)
        close(toChild[0])
        close(fromChild[1])
        guard rc == 0 else {
            close(toChild[1])
            close(fromChild[0])
            throw SystemError("spawn", errno: rc)
        }
        pid = child
        self.box = box
        input = toChild[1]
        output = fromChild[0]
    }

    func readLine(timeout: Double) throws -> String {
        let deadline = monotonicSeconds() + timeout
        while true {
            if let nl = buffered.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffered[..<nl], as: UTF8.self)
                buffered.removeSubrange(...nl)
                return line
            }
            let left = deadline - monotonicSeconds()
            guard left > 0 else { throw SystemError("no line from the helper in time", errno: ETIMEDOUT) }
            var entry = pollfd(fd: output, events: Int16(POLLIN), revents: 0)
            if poll(&entry, 1, Int32(left * 1000)) <= 0 { continue }
            var chunk = [UInt8](repeating: 0, count: 256)
            let n = read(output, &chunk, chunk.count)
            guard n > 0 else { throw SystemError("the helper closed its output", errno: EPIPE) }
            buffered += chunk[..<n]
        }
    }

    func write(_ text: String) throws {
        let bytes = Array(text.utf8)
        guard Glibc.write(input, bytes, bytes.count) == bytes.count else { throw SystemError("write to the helper") }
    }

    /// The exit status (128+N for signal N), or nil when it did not end in time.
    func wait(timeout: Double) -> Int32? {
        if let status { return status }
        let deadline = monotonicSeconds() + timeout
        var raw: Int32 = 0
        while monotonicSeconds() < deadline {
            let r = waitpid(pid, &raw, WNOHANG)
            if r == pid {
                let sig = raw & 0x7f
                status = sig == 0 ? (raw >> 8) & 0xff : 128 + sig
                return status
            }
            usleep(10_000)
        }
        return nil
    }

    func end() {
        if status == nil {
            kill(pid, SIGKILL)
            _ = wait(timeout: 10)
        }
        if input >= 0 { close(input); input = -1 }
        if output >= 0 { close(output); output = -1 }
    }

    deinit { end() }
}

private func parentDirectory(_ path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return path }
    return String(path[..<slash])
}
