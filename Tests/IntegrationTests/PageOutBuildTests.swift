import Foundation
import LinuxSystem
import Testing

private let isRoot = geteuid() == 0

/// Paging frozen jobs out to the compressed swap jobgov adds for the build (README: "Paging frozen jobs out"), end to
/// end: builds of memjob jobs in a memory-limited box cgroup the test makes below its own, under make and ninja, and
/// what is left of jobgov's zram device, its swap area and vm.swappiness after a normal exit and after a SIGKILL.
///
/// The swap state is the machine's, shared with anything else that runs jobgov as root: each test first waits (up to
/// a minute) until no other live jobgov has a swap device on, reads /proc/swaps, the zram devices and vm.swappiness,
/// and compares with those at the end, leaving out devices that belong to another live jobgov.
@Suite("Paging frozen jobs out on real builds", .serialized,
       .enabled(if: isRoot, "needs root: a zram swap device, vm.swappiness and memory-limited cgroups"))
struct PageOutBuildTests {
    static let memjobSource = Clients.repo.appendingPathComponent("examples/memjob/memjob.c").path

    // MARK: the box

    /// A cgroup with a hard memory limit that the build runs in (jobgov makes its own cgroup below it). v1
    /// memory.swappiness is 0 in it and its leaf (a v1 cgroup copies its parent's value only when it is made, so the
    /// leaf made with it needs its own write): the cgroups jobgov makes below copy it, so nothing in the box swaps at
    /// its limit and the only way into swap is jobgov's targeted page-out (MADV_PAGEOUT ignores swappiness).
    final class Box {
        let cgroup: BuildCgroup
        init(_ tag: String, limit: UInt64, swappiness: Int? = 0) throws {
            cgroup = try BuildCgroup.create(layout: CgroupLayout.detect(), name: "jobgov-test-\(getpid())-pageout-\(tag)")
            try cgroup.apply(CgroupLimits(memoryMax: limit))
            if let swappiness, cgroup.directories.memory != nil { try cgroup.apply(CgroupLimits(swappiness: swappiness)) }
        }
        /// `sh -c` that joins the box's leaf in every hierarchy, then execs the command (so its pid is the command's).
        func wrap(_ command: [String]) -> [String] {
            let joins = cgroup.leafProcsFiles.map { "echo $$ > \($0)" }.joined(separator: " && ")
            return ["-c", "\(joins) && exec \"$@\"", "sh"] + command
        }
        /// OOM kills anywhere below (v1 counts them per cgroup; v2's memory.events is hierarchical).
        var oomKills: UInt64 {
            if let dir = cgroup.directories.memory { return BuildCgroup.v1OOMKills(below: dir) ?? 0 }
            return cgroup.oomKills() ?? 0
        }
        /// Waits for `run` (at most `timeout` seconds), reading the OOM kills every 50 ms meanwhile: on v1 a kill is
        /// counted in the victim's own cgroup only, and jobgov removes its cgroups (and their counters) at exit, so
        /// the box alone would show 0 afterwards. Returns the most seen.
        func finish(_ run: Running, timeout: Double) -> (RunResult, UInt64) {
            let deadline = Date().addingTimeInterval(timeout)
            var kills = oomKills
            while run.process.isRunning && Date() < deadline {
                kills = max(kills, oomKills)
                usleep(50_000)
            }
            let r = run.finish(timeout: max(1, deadline.timeIntervalSinceNow))
            return (r, max(kills, oomKills))
        }
        /// The cgroup directories jobgov PID made in the box (`…/build/jobgov-PID` in each hierarchy).
        func jobgovDirectories(_ pid: Int32) -> [String] {
            cgroup.topDirectories.map { "\($0)/build/jobgov-\(pid)" }
        }
        /// Every `jobgov-*` directory jobgov made in the box and left there.
        var jobgovLeftovers: [String] {
            cgroup.topDirectories.flatMap { top in
                BuildCgroup.subdirectories(top + "/build").filter { $0.hasPrefix("jobgov-") }.map { "\(top)/build/\($0)" }
            }
        }
        /// Removes the box, but only the directories it made itself: false while jobgov's cgroups are still in it.
        func removeOwn() -> Bool {
            var ok = true
            for top in cgroup.topDirectories {
                if rmdir(top + "/build") != 0 && errno != ENOENT { ok = false }
                if rmdir(top) != 0 && errno != ENOENT { ok = false }
            }
            return ok
        }
        deinit {
            // Whatever is left (a failed test): thawed, killed, and removed deepest first, jobgov's leftovers included.
            for top in cgroup.topDirectories { thawAll(top) }
            for _ in 0..<100 {
                let pids = cgroup.processes()
                if pids.isEmpty { break }
                for pid in pids { kill(pid, SIGKILL) }
                usleep(50_000)
            }
            for _ in 0..<100 {
                for top in cgroup.topDirectories { removeTree(top) }
                if cgroup.topDirectories.allSatisfy({ access($0, F_OK) != 0 }) { break }
                usleep(50_000)
            }
        }
        private func thawAll(_ dir: String) {
            if access(dir + "/cgroup.freeze", F_OK) == 0 { try? writeCgroupFile(dir + "/cgroup.freeze", "0") }
            if access(dir + "/freezer.state", F_OK) == 0 { try? writeCgroupFile(dir + "/freezer.state", "THAWED") }
            for child in BuildCgroup.subdirectories(dir) { thawAll(dir + "/" + child) }
        }
        private func removeTree(_ dir: String) {
            for child in BuildCgroup.subdirectories(dir) { removeTree(dir + "/" + child) }
            rmdir(dir)
        }
    }

    // MARK: the machine's swap

    /// /proc/swaps, the zram devices and vm.swappiness at one moment.
    struct SwapSnapshot: CustomStringConvertible {
        var swaps: Set<String>
        var zram: Set<Int>
        var swappiness: String

        static func read() -> SwapSnapshot {
            SwapSnapshot(swaps: Set(SwapState.read().devices.map(\.path)),
                         zram: Set(CompressedSwap.zramIndices()),
                         swappiness: ((try? String(contentsOfFile: "/proc/sys/vm/swappiness", encoding: .utf8)) ?? "?")
                            .trimmingCharacters(in: .whitespacesAndNewlines))
        }
        var description: String {
            "swaps \(swaps.sorted()), zram \(zram.sorted()), vm.swappiness \(swappiness)"
        }
    }

    /// The jobgov whose label a zram device's swap header carries, if any.
    static func owner(ofZram index: Int) -> Int32? {
        CompressedSwap.swapLabel(device: "/dev/zram\(index)").flatMap(CompressedSwap.owner(ofLabel:))
    }

    static func index(ofDevice path: String) -> Int? {
        path.hasPrefix("/dev/zram") ? Int(path.dropFirst("/dev/zram".count)) : nil
    }

    /// The jobgov processes this test started, and what the machine's swap looked like before.
    final class SwapWatch {
        let baseline: SwapSnapshot
        private(set) var mine: Set<Int32> = []
        /// Another jobgov (not this test's) had a swap device on when the baseline was read.
        let busyAtStart: Bool
        /// The jobgov that owned each swap area of the baseline (jobgov devices only).
        let baselineOwners: [String: Int32]

        init() throws {
            // Swap that is not jobgov's (a swap file, a zram someone set up) makes jobgov add nothing: these tests
            // are about the device jobgov adds.
            let state = SwapState.read()
            for device in state.devices where PageOutBuildTests.index(ofDevice: device.path)
                .flatMap(PageOutBuildTests.owner(ofZram:)) == nil {
                throw SwapWatchError("this machine has swap (\(device.path)): jobgov adds no zram device of its own; these tests need a machine without swap")
            }
            if state.zswapEnabled { throw SwapWatchError("zswap is enabled: jobgov adds no zram device of its own") }
            // Another jobgov's device (a build running as root elsewhere): wait for it to go, so that the baseline
            // is the machine's own and the device the test's jobgov makes is its own.
            let busy = Self.waitQuiet(mine: [])
            busyAtStart = !busy.isEmpty
            baseline = SwapSnapshot.read()
            var owners: [String: Int32] = [:]
            for path in baseline.swaps {
                if let owner = PageOutBuildTests.index(ofDevice: path).flatMap(PageOutBuildTests.owner(ofZram:)) { owners[path] = owner }
            }
            baselineOwners = owners
        }

        func started(_ pid: Int32) { mine.insert(pid) }

        /// Waits (at most `timeout` seconds) until no other live jobgov has a swap device on; returns those still on.
        @discardableResult
        static func waitQuiet(mine: Set<Int32>, timeout: Double = 60) -> Set<Int> {
            let deadline = Date().addingTimeInterval(timeout)
            var busy = foreignLiveSwap(mine: mine)
            while !busy.isEmpty && Date() < deadline {
                usleep(100_000)
                busy = foreignLiveSwap(mine: mine)
            }
            if !busy.isEmpty { print("PageOutBuildTests: another jobgov's swap is still on after \(Int(timeout)) s: zram \(busy.sorted())") }
            return busy
        }

        /// vm.swappiness is what it was, or another live jobgov has a device on now (then the value is its own).
        var swappinessAsBefore: Bool {
            SwapSnapshot.read().swappiness == baseline.swappiness || !Self.foreignLiveSwap(mine: mine).isEmpty
        }

        /// Active swap devices (zram indices) whose jobgov is alive and not one of `mine`.
        static func foreignLiveSwap(mine: Set<Int32>) -> Set<Int> {
            Set(SwapState.read().devices.compactMap { device -> Int? in
                guard let index = PageOutBuildTests.index(ofDevice: device.path),
                      let owner = PageOutBuildTests.owner(ofZram: index),
                      !mine.contains(owner), CompressedSwap.processIsRunning(owner) else { return nil }
                return index
            })
        }

        /// zram devices that carry the label of one of this test's jobgovs.
        var mineLeft: [Int] {
            CompressedSwap.zramIndices().filter { PageOutBuildTests.owner(ofZram: $0).map(mine.contains) ?? false }
        }

        /// Everything as it was before: no device of this test's jobgovs, no zram device or swap area added, none
        /// of the baseline's taken away (but stale jobgov ones), vm.swappiness back. Devices of another live jobgov
        /// are left out; vm.swappiness is not compared while one has swap on (its value is that jobgov's).
        func expectAsBefore(_ context: String, sourceLocation: SourceLocation = #_sourceLocation) {
            let now = SwapSnapshot.read()
            let foreign = Self.foreignLiveSwap(mine: mine)
            let foreignZram = Set(now.zram.filter { index in
                PageOutBuildTests.owner(ofZram: index).map { !mine.contains($0) && CompressedSwap.processIsRunning($0) } ?? false
            })
            #expect(mineLeft.isEmpty, "\(context): zram devices of this test's jobgov left behind: \(mineLeft) (\(now))",
                    sourceLocation: sourceLocation)
            let added = now.zram.subtracting(baseline.zram).subtracting(foreignZram)
            #expect(added.isEmpty, "\(context): zram devices added and not removed: \(added.sorted()) (before: \(baseline), now: \(now))",
                    sourceLocation: sourceLocation)
            let addedSwaps = now.swaps.subtracting(baseline.swaps).filter { path in
                PageOutBuildTests.index(ofDevice: path).map { !foreign.contains($0) } ?? true
            }
            #expect(addedSwaps.isEmpty, "\(context): swap areas on that were not before: \(addedSwaps.sorted()) (before: \(baseline), now: \(now))",
                    sourceLocation: sourceLocation)
            // Gone since: only a device of another jobgov (removed by its owner, or by a jobgov as stale) may go.
            let gone = baseline.swaps.subtracting(now.swaps).filter { baselineOwners[$0] == nil }
            #expect(gone.isEmpty, "\(context): swap areas turned off that were on before: \(gone.sorted())",
                    sourceLocation: sourceLocation)
            if foreign.isEmpty && !busyAtStart {
                #expect(now.swappiness == baseline.swappiness,
                        "\(context): vm.swappiness \(now.swappiness), \(baseline.swappiness) before",
                        sourceLocation: sourceLocation)
            } else {
                print("PageOutBuildTests: \(context): another jobgov has swap on (zram \(foreign.sorted())): vm.swappiness (\(now.swappiness)) not compared")
            }
        }

        /// Cleanup whatever the test's jobgovs left, even on failure: their zram devices (only theirs: any other pid
        /// counts as running for removeStale), and vm.swappiness where they left it at 0 and no other jobgov holds it.
        func cleanUp() {
            let mine = self.mine
            CompressedSwap.removeStale(isRunning: { !mine.contains($0) || CompressedSwap.processIsRunning($0) })
            let now = SwapSnapshot.read()
            if now.swappiness == "0", baseline.swappiness != "0", !busyAtStart, Self.foreignLiveSwap(mine: mine).isEmpty,
               mine.allSatisfy({ !CompressedSwap.processIsRunning($0) }) {
                try? baseline.swappiness.write(toFile: "/proc/sys/vm/swappiness", atomically: false, encoding: .utf8)
            }
        }
    }

    struct SwapWatchError: Error, CustomStringConvertible {
        var description: String
        init(_ d: String) { description = d }
    }

    // MARK: builds

    struct Job {
        var name: String
        var peak: Int
        var ramp: Double
        var hold: Double
        var arguments: String { "--name \(name) --peak \(peak) --ramp \(ramp) --hold \(hold) --out \(name)" }
    }

    /// A scratch directory with memjob built and a Makefile and a build.ninja running `jobs` (independent).
    static func project(_ jobs: [Job]) throws -> Scratch {
        let s = try Scratch()
        try FileManager.default.createDirectory(atPath: s.path + "/b", withIntermediateDirectories: true)
        let cc = try Running("/usr/bin/cc", ["-O2", "-o", s.path + "/b/memjob-bin", memjobSource], in: s, tag: "cc")
            .finish(timeout: 60)
        try #require(cc.status == 0, "\(cc.stderr)")
        var makefile = "all: \(jobs.map(\.name).joined(separator: " "))\n"
        var ninja = "rule mj\n  command = ./memjob-bin $args\n"
        for job in jobs {
            makefile += "\(job.name):\n\t./memjob-bin \(job.arguments)\n"
            ninja += "build \(job.name): mj\n  args = \(job.arguments)\n"
        }
        ninja += "default \(jobs.map(\.name).joined(separator: " "))\n"
        try s.write("b/Makefile", makefile)
        try s.write("b/build.ninja", ninja)
        return s
    }

    static func removeOutputs(_ jobs: [Job], in s: Scratch) {
        for job in jobs { try? FileManager.default.removeItem(atPath: s.path + "/b/" + job.name) }
    }

    static func tool(_ name: String) -> String { name == "ninja" ? Clients.ninja : Clients.make43 }

    /// Starts jobgov with `arguments` (after it: the build) in the box; its pid is jobgov's (the wrapper execs it).
    static func start(_ arguments: [String], box: Box, in s: Scratch, watch: SwapWatch, tag: String) throws -> Running {
        let r = try Running("/bin/sh", box.wrap([Clients.jobgov] + arguments), in: s, cwd: s.path + "/b",
                            env: ["PATH": Clients.repo.appendingPathComponent(".deps/bin").path + ":/usr/bin:/bin",
                                  "XDG_STATE_HOME": s.path + "/state"],
                            tag: tag)
        watch.started(r.pid)
        return r
    }

    /// Starts jobgov in a new box and waits for its swap line. When another jobgov's swap came on first (jobgov then
    /// pages out to it and adds no device of its own), ends the run with SIGTERM (passed on to the build) and tries
    /// again once that device is gone, at most three times. Returns the run, its box and its zram index.
    static func startOwningDevice(_ arguments: [String], limit: UInt64, in s: Scratch, watch: SwapWatch, tag: String,
                                  outputs: [Job]) throws -> (Running, Box, Int)? {
        for attempt in 1...3 {
            SwapWatch.waitQuiet(mine: watch.mine)
            let box = try Box("\(tag)\(attempt)", limit: limit)
            let run = try start(arguments, box: box, in: s, watch: watch, tag: tag)
            waitUntil("the start line naming the swap", timeout: 15) { s.read("\(tag).stderr").contains("jobgov: swap:") }
            if let index = zramIndex(inStartLines: s.read("\(tag).stderr")) { return (run, box, index) }
            print("PageOutBuildTests: \(tag), attempt \(attempt): \(swapLine(s.read("\(tag).stderr"))); trying again")
            kill(run.pid, SIGTERM)
            _ = box.finish(run, timeout: 20)
            removeOutputs(outputs, in: s)
        }
        Issue.record("jobgov never made a zram device of its own: another jobgov's swap was on each time")
        return nil
    }

    /// The summary JSON's numbers.
    static func summary(_ s: Scratch, _ name: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(s.read(name).utf8)) as? [String: Any]) ?? [:]
    }

    static func int(_ object: [String: Any], _ key: String) -> Int? { (object[key] as? NSNumber)?.intValue }

    /// The zram index the start line names (`jobgov: swap: zram3 (lz4, …)`), nil when it names none.
    static func zramIndex(inStartLines stderr: String) -> Int? {
        for line in stderr.split(separator: "\n") where line.hasPrefix("jobgov: swap: zram") {
            return Int(line.dropFirst("jobgov: swap: zram".count).prefix { $0.isNumber })
        }
        return nil
    }

    static func swapLine(_ stderr: String) -> String {
        stderr.split(separator: "\n").first { $0.hasPrefix("jobgov: swap:") }.map(String.init) ?? "(no swap line)"
    }

    /// The history the first run wrote, every peak halved: the governor is bound to guess wrong.
    static func halveHistory(in s: Scratch) throws -> (path: String, halved: String, peaks: [UInt64]) {
        let dir = s.path + "/state/jobgov/history"
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".tsv") }
        try #require(files.count == 1, "one history file after the first build, found \(files)")
        let path = dir + "/" + files[0]
        let text = try String(contentsOfFile: path, encoding: .utf8)
        var peaks: [UInt64] = []
        var halved = ""
        for line in text.split(separator: "\n") {
            var fields = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            guard let peak = UInt64(fields[0]) else { continue }
            peaks.append(peak)
            fields[0] = String(peak / 2)
            halved += fields.joined(separator: "\t") + "\n"
        }
        return (path, halved, peaks)
    }

    // MARK: 1. a wrong history, survived by paging frozen jobs out

    /// Four jobs of 360 MiB in a 512 MiB box (jobgov's budget 416 MiB, hard limit 480 MiB): each fits alone, two do
    /// not. A first build at -j1 writes the history; every peak in it is then halved, so the governor starts two
    /// jobs together, each growing to twice what it expects. The newer is frozen; without page-out it would hold its
    /// ~200 MiB while the older grows to 360 MiB, past the hard limit.
    static let heavyJobs = (1...4).map { Job(name: "big\($0)", peak: 360, ramp: 2.5, hold: 0.5) }
    static let boxLimit: UInt64 = 512 << 20

    /// Runs the learning build and halves the history; returns the halved history to restore before each run.
    private func learnAndHalve(_ toolName: String, _ s: Scratch, watch: SwapWatch) throws -> (path: String, halved: String) {
        let box = try Box("learn", limit: Self.boxLimit)
        let (learn, kills) = box.finish(try Self.start([Self.tool(toolName), "-j1"], box: box, in: s, watch: watch, tag: "learn"),
                                        timeout: 60)
        try #require(learn.status == 0, "the learning build (-j1) must succeed: \(learn.stderr.suffix(2000))")
        #expect(kills == 0)
        let (path, halved, peaks) = try Self.halveHistory(in: s)
        try #require(peaks.count == Self.heavyJobs.count && peaks.allSatisfy { $0 > 300 << 20 },
                     "the history holds each job's real peak (~360 MiB): \(peaks.map { $0 >> 20 })")
        Self.removeOutputs(Self.heavyJobs, in: s)
        watch.expectAsBefore("after the learning build")
        return (path, halved)
    }

    /// One run with the halved history; returns its result, the box's OOM kills and the summary.
    private func halvedRun(_ toolName: String, _ s: Scratch, history: (path: String, halved: String), watch: SwapWatch,
                           extra: [String] = [], tag: String) throws -> (RunResult, UInt64, [String: Any], Double) {
        try history.halved.write(toFile: history.path, atomically: true, encoding: .utf8)
        Self.removeOutputs(Self.heavyJobs, in: s)
        let box = try Box(tag, limit: Self.boxLimit)
        let began = Date()
        let (r, kills) = box.finish(try Self.start(["--summary-json", s.path + "/\(tag).json"] + extra + [Self.tool(toolName), "-j4"],
                                                   box: box, in: s, watch: watch, tag: tag), timeout: 60)
        let seconds = Date().timeIntervalSince(began)
        #expect(box.jobgovLeftovers.isEmpty, "\(tag): jobgov's cgroups left in the box: \(box.jobgovLeftovers)")
        #expect(s.runtimeLeftovers.isEmpty, "\(tag): runtime directories left: \(s.runtimeLeftovers)")
        return (r, kills, Self.summary(s, "\(tag).json"), seconds)
    }

    private func report(_ tag: String, _ r: RunResult, _ kills: UInt64, _ sum: [String: Any], _ seconds: Double) {
        let fields = ["exit_status", "page_outs", "paged_out_bytes", "job_freezes", "jobs_ended_early", "jobs_rerun", "oom_kills"]
            .map { "\($0) \(Self.int(sum, $0).map(String.init) ?? "-")" }.joined(separator: ", ")
        print("PageOutBuildTests: \(tag): status \(r.status) in \(String(format: "%.1f", seconds)) s, box OOM kills \(kills); \(fields); \(Self.swapLine(r.stderr))")
    }

    @Test("jobs each twice what the history says, in a box that fits them one at a time: 0 OOM kills with page-out",
          arguments: ["ninja", "make"])
    func wrongHistorySurvivesWithPageOut(_ toolName: String) throws {
        try Clients.require(Self.tool(toolName))
        let watch = try SwapWatch()
        defer { watch.cleanUp() }
        let s = try Self.project(Self.heavyJobs)
        let history = try learnAndHalve(toolName, s, watch: watch)

        let (r, kills, sum, seconds) = try halvedRun(toolName, s, history: history, watch: watch, tag: "\(toolName)-swap")
        report("\(toolName) -j4, halved history, swap", r, kills, sum, seconds)
        #expect(r.status == 0, "\(r.jobgovLines.joined(separator: "\n"))\n\(r.stderr.suffix(1500))")
        #expect(kills == 0, "the box counted OOM kills")
        #expect(Self.int(sum, "oom_kills") == 0, "\(sum["oom_kills"] ?? "no summary")")
        #expect(Self.int(sum, "exit_status") == 0)
        // Without a page-out this build would prove nothing about paging out.
        #expect((Self.int(sum, "page_outs") ?? 0) >= 1, "no job was paged out: \(r.jobgovLines.joined(separator: "\n"))")
        #expect((Self.int(sum, "paged_out_bytes") ?? 0) > 50 << 20, "a paged-out job held more than 50 MiB")
        #expect(r.jobgovLines.contains { $0.contains("paged out frozen job") })
        for job in Self.heavyJobs {
            #expect(FileManager.default.fileExists(atPath: s.path + "/b/" + job.name), "\(job.name) was built")
        }
        watch.expectAsBefore("after the \(toolName) build with page-out")
    }

    /// The same build under ninja with --no-swap: ninja cannot run a job again and nothing frozen gives memory back,
    /// so a history that says every job needs half of what it does must not be taken at its word. Until a job of
    /// this build confirms it, its peaks count double there: the two jobs start one after the other and the build
    /// finishes. (Before that rule the newer job was frozen at ~200 MiB, the older waited at the 480 MiB hard limit
    /// near 280 MiB, and after 5 s the OOM killer ended it: 6 runs of 6.)
    @Test("the same ninja build with --no-swap: the halved history is doubted, 0 OOM kills, nothing left behind")
    func wrongHistoryWithoutSwap() throws {
        try Clients.require(Clients.ninja)
        let watch = try SwapWatch()
        defer { watch.cleanUp() }
        let s = try Self.project(Self.heavyJobs)
        let history = try learnAndHalve("ninja", s, watch: watch)
        let (r, kills, sum, seconds) = try halvedRun("ninja", s, history: history, watch: watch, extra: ["--no-swap"],
                                                     tag: "ninja-noswap")
        report("ninja -j4, halved history, --no-swap", r, kills, sum, seconds)
        print("PageOutBuildTests: --no-swap run:\n  " + (r.jobgovLines + (r.stdout + r.stderr).split(separator: "\n").filter { $0.hasPrefix("ninja:") || $0.contains("FAILED") }.map(String.init))
            .joined(separator: "\n  "))
        #expect(r.jobgovLines.contains { $0.contains("swap: off (--no-swap)") }, "\(Self.swapLine(r.stderr))")
        #expect(Self.int(sum, "page_outs") == 0, "nothing is paged out with --no-swap")
        #expect(!sum.isEmpty, "the summary was written")
        #expect(r.status == 0, "\(r.jobgovLines.joined(separator: "\n"))\n\(r.stderr.suffix(1500))")
        #expect(Self.int(sum, "oom_kills") == 0 && kills == 0, "OOM kills: summary \(sum["oom_kills"] ?? "-"), box \(kills)")
        for job in Self.heavyJobs {
            #expect(FileManager.default.fileExists(atPath: s.path + "/b/" + job.name), "\(job.name) was built")
        }
        watch.expectAsBefore("after the ninja build with --no-swap")
    }

    /// The machine's swap is used as it is (README: "Where the machine has swap or zswap, that is used"), whatever
    /// room it has. Here it is a 64 MiB zram device (another jobgov's, run with --memory-budget 64M beside the
    /// build, as on a shared machine), too small for the ~200 MiB job frozen in the halved-history make build above:
    /// most of that job stays resident. What should still hold: the OOM killer comes last, "only for a job that
    /// cannot fit even alone" (README, the ladder), and every job here fits alone; under make a job can be ended
    /// early and run again (as with --no-swap); and the summary does not claim more paged out than the swap could
    /// take.
    @Test("a machine swap too small for the frozen job: make still gets no OOM kill, and page-outs are not overstated")
    func swapTooSmallForTheFrozenJob() throws {
        try Clients.require(Clients.make43)
        let watch = try SwapWatch()
        defer { watch.cleanUp() }
        let s = try Self.project(Self.heavyJobs)
        let history = try learnAndHalve("make", s, watch: watch)

        // A scratch of its own: its runtime directory is not the build's to leave behind.
        let hs = try Scratch()
        try FileManager.default.createDirectory(atPath: hs.path + "/b", withIntermediateDirectories: true)
        guard let (holder, holderBox, holderIndex) = try Self.startOwningDevice(
            ["--memory-budget", "64M", "--", "/bin/sleep", "60"], limit: 256 << 20, in: hs, watch: watch, tag: "holder",
            outputs: []) else { return }
        defer {
            if holder.process.isRunning {
                kill(holder.pid, SIGTERM)
                _ = holderBox.finish(holder, timeout: 20)
            }
        }
        let size = SwapState.read().devices.first { $0.path == "/dev/zram\(holderIndex)" }?.sizeBytes ?? 0
        #expect(size > 0 && size <= 64 << 20, "zram\(holderIndex) is a swap area of at most 64 MiB: \(size >> 20) MiB")

        let (r, kills, sum, seconds) = try halvedRun("make", s, history: history, watch: watch, tag: "make-smallswap")
        report("make -j4, halved history, a 64 MiB swap", r, kills, sum, seconds)
        print("PageOutBuildTests: small swap:\n  " + r.jobgovLines.joined(separator: "\n  "))
        // A swap with room for less than half the budget is not relied on: as root jobgov adds its own device.
        let ownDevice = r.jobgovLines.contains { $0.contains("swap: zram") && $0.contains("for the build's frozen jobs") }
        #expect(ownDevice || r.jobgovLines.contains { $0.contains("paged out to the swap this machine has") },
                "\(Self.swapLine(r.stderr))")
        #expect(r.status == 0, "\(r.jobgovLines.joined(separator: "\n"))")
        #expect(kills == 0 && Self.int(sum, "oom_kills") == 0,
                "no OOM kill: every job fits alone (box \(kills), summary \(sum["oom_kills"] ?? "-"))")
        if !ownDevice {
            #expect((Self.int(sum, "paged_out_bytes") ?? 0) <= Int(size),
                    "paged_out_bytes \((Self.int(sum, "paged_out_bytes") ?? 0) >> 20) MiB, but the swap holds at most \(size >> 20) MiB")
        }

        kill(holder.pid, SIGTERM)
        let held = holder.finish(timeout: 20)
        #expect(held.status == 128 + SIGTERM, "\(held.stderr)")
        #expect(hs.runtimeLeftovers.isEmpty)
        watch.expectAsBefore("after the build beside a small swap")
    }

    // MARK: 2. nothing left behind after a SIGKILL

    /// Three jobs of 200 MiB started together by a cold build (nothing known: each counted at the prior, a quarter of
    /// the 384 MiB budget) under --memory-budget 384M, in a 1 GiB box: the newer ones are frozen and paged out, and
    /// once jobgov's limits are lifted all three fit in the box, so the thawed jobs can take their pages back.
    static let killJobs = (1...3).map { Job(name: "long\($0)", peak: 200, ramp: 3, hold: 20) }

    @Test("SIGKILL of jobgov while a job is paged out: the watchdog thaws the build, removes the zram device and restores vm.swappiness")
    func sigkillLeavesNothingBehind() throws {
        try Clients.require(Clients.ninja)
        let watch = try SwapWatch()
        defer { watch.cleanUp() }
        let s = try Self.project(Self.killJobs)
        guard let (run, box, index) = try Self.startOwningDevice(["--memory-budget", "384M", Clients.ninja, "-j3"],
                                                                    limit: 1 << 30, in: s, watch: watch, tag: "killed",
                                                                    outputs: Self.killJobs) else { return }
        defer {
            // On failure: jobgov and the build go (the build keeps the descriptor Foundation waits on).
            if run.process.isRunning {
                kill(run.pid, SIGKILL)
                for p in box.cgroup.processes() { kill(p, SIGKILL) }
                run.process.waitUntilExit()
            }
        }
        let pid = run.pid
        #expect(Self.owner(ofZram: index) == pid, "the device carries the label jobgov-\(pid)")
        #expect(SwapState.read().devices.contains { $0.path == "/dev/zram\(index)" }, "zram\(index) is on as swap")
        #expect(SwapSnapshot.read().swappiness == "0", "vm.swappiness is 0 while jobgov's device is on")

        waitUntil("a frozen job paged out", timeout: 20) { s.read("killed.stderr").contains("paged out frozen job") }
        let pagedOut = s.read("killed.stderr").contains("paged out frozen job")
        // The page-out runs beside jobgov's loop: wait until the device holds the job's pages, so that removing it
        // means taking them back into the (thawed) job.
        func swapUsed() -> UInt64 { SwapState.read().devices.first { $0.path == "/dev/zram\(index)" }?.usedBytes ?? 0 }
        waitUntil("the paged-out job's pages in zram\(index)", timeout: 5) { swapUsed() >= 32 << 20 }
        print("PageOutBuildTests: before SIGKILL: zram\(index) holds \(swapUsed() >> 20) MiB; \(s.read("killed.stderr").split(separator: "\n").filter { $0.contains("froze") || $0.contains("paged out") }.joined(separator: "; "))")
        #expect(pagedOut, "the build paged a job out before the SIGKILL: \(s.read("killed.stderr"))")

        // The watchdog (jobgov's child, in the box's leaf) and jobgov's cgroups, before jobgov goes.
        let watchdog = box.cgroup.processes().first { p in
            let cmd = (try? String(contentsOfFile: "/proc/\(p)/cmdline", encoding: .utf8)) ?? ""
            return cmd.split(separator: "\0").dropFirst().first == "watchdog" && Self.parent(of: p) == pid
        }
        #expect(watchdog != nil, "jobgov has a watchdog")
        let jobgovDirs = box.jobgovDirectories(pid)
        let buildPIDs = Set(jobgovDirs.flatMap { BuildCgroup.processes(in: $0) })
        #expect(!buildPIDs.isEmpty)

        // SIGKILL jobgov itself: the watchdog must undo what it did.
        let killedAt = Date()
        #expect(kill(pid, SIGKILL) == 0)

        func deviceGone() -> Bool { access("/sys/block/zram\(index)", F_OK) != 0 }
        func swapOff() -> Bool { !SwapState.read().devices.contains { $0.path == "/dev/zram\(index)" } }
        func swappinessBack() -> Bool { watch.swappinessAsBefore }
        func frozenLeaves() -> [String] { jobgovDirs.flatMap(Self.frozenCgroups) }
        func stopped() -> [Int32] { buildPIDs.filter { Self.state(of: $0) == "T" } }
        // A timeline of what the watchdog undoes, every 0.25 s, until all is undone (at most 10 s).
        var timeline: [String] = []
        var last = ""
        var undoneAfter: Double?
        let deadline = Date().addingTimeInterval(10)
        while true {
            let jobgovState = Self.state(of: pid) ?? "gone"
            let watchdogState = watchdog.flatMap { Self.state(of: $0) } ?? "gone"
            let line = "jobgov \(jobgovState), watchdog \(watchdogState), swap \(swapOff() ? "off" : "on"), zram\(index) "
                + "\(deviceGone() ? "gone" : "present"), vm.swappiness \(SwapSnapshot.read().swappiness), "
                + "frozen \(frozenLeaves().count), stopped \(stopped().count)"
            if line != last {
                timeline.append(String(format: "%.2f s: ", Date().timeIntervalSince(killedAt)) + line)
                last = line
            }
            let done = deviceGone() && swapOff() && swappinessBack() && frozenLeaves().isEmpty && stopped().isEmpty
            if done { undoneAfter = Date().timeIntervalSince(killedAt) }
            if done || Date() > deadline { break }
            usleep(250_000)
        }
        print("PageOutBuildTests: after SIGKILL:\n  " + timeline.joined(separator: "\n  "))
        print("PageOutBuildTests: " + (undoneAfter.map { String(format: "all undone %.2f s after the SIGKILL", $0) } ?? "not all undone within 10 s of the SIGKILL"))
        #expect(swapOff(), "zram\(index) is no longer a swap area within 10 s of the SIGKILL")
        #expect(deviceGone(), "/sys/block/zram\(index) is gone (hot_remove) within 10 s of the SIGKILL")
        #expect(swappinessBack(), "vm.swappiness is back to \(watch.baseline.swappiness) within 10 s of the SIGKILL")
        #expect(frozenLeaves().isEmpty, "nothing of the build is frozen: \(frozenLeaves())")
        #expect(stopped().isEmpty, "no process of the build is stopped: \(stopped())")
        #expect(s.runtimeLeftovers.isEmpty, "the watchdog removed the runtime directory: \(s.runtimeLeftovers)")
        let running = buildPIDs.filter { kill($0, 0) == 0 && Self.state(of: $0) != "Z" }
        print("PageOutBuildTests: \(running.count) of the build's \(buildPIDs.count) processes still run; the test ends them")

        // The test ends the build (only the processes in jobgov's cgroups, not the watchdog); the watchdog then
        // removes jobgov's cgroups and exits, and the box can go.
        let killDeadline = Date().addingTimeInterval(10)
        while Date() < killDeadline {
            let left = jobgovDirs.flatMap { BuildCgroup.processes(in: $0) }
            if left.isEmpty { break }
            for p in left { kill(p, SIGKILL) }
            usleep(50_000)
        }
        waitUntil("the watchdog to remove jobgov's cgroups", timeout: 10) {
            jobgovDirs.allSatisfy { access($0, F_OK) != 0 }
        }
        if let watchdog {
            waitUntil("the watchdog to exit", timeout: 10) { kill(watchdog, 0) != 0 || Self.state(of: watchdog) == "Z" }
        }
        // Only now: Foundation sees a child's end when every copy of a descriptor it gave the child is closed, and
        // the build's processes (orphaned by the SIGKILL) inherited it.
        let r = run.finish(timeout: 10)
        #expect(r.status == 128 + SIGKILL)
        var removable = false
        for _ in 0..<50 {
            if box.cgroup.processes().isEmpty && box.removeOwn() {
                removable = true
                break
            }
            usleep(100_000)
        }
        #expect(removable, "the box cgroup can be removed: left \(box.jobgovLeftovers), processes \(box.cgroup.processes())")
        watch.expectAsBefore("after the SIGKILL")

        // A second jobgov starts as usual and makes (and removes) a device of its own.
        let small = [Job(name: "s1", peak: 40, ramp: 0.5, hold: 0.2), Job(name: "s2", peak: 40, ramp: 0.5, hold: 0.2)]
        let s2 = try Self.project(small)
        guard let (nextRun, box2, nextIndex) = try Self.startOwningDevice(
            ["--summary-json", s2.path + "/next.json", Clients.ninja, "-j2"], limit: Self.boxLimit, in: s2, watch: watch,
            tag: "next", outputs: small) else { return }
        let (next, nextKills) = box2.finish(nextRun, timeout: 30)
        #expect(nextKills == 0)
        #expect(access("/sys/block/zram\(nextIndex)", F_OK) != 0, "the next jobgov removed its zram\(nextIndex)")
        #expect(next.status == 0, "\(next.stderr)")
        #expect(Self.int(Self.summary(s2, "next.json"), "oom_kills") == 0)
        #expect(box2.jobgovLeftovers.isEmpty)
        watch.expectAsBefore("after the next jobgov")
    }

    // MARK: 3. nothing left behind after a normal build

    /// A cold build of three 160 MiB jobs under --memory-budget 320M (hard limit 384 MiB) in a 512 MiB box: started
    /// together at the prior's size, the newer are frozen and paged out. While it runs, the device is on and
    /// vm.swappiness is 0; after it, the machine's swap is as it was.
    @Test("after a normal build that paged jobs out: no zram device left, /proc/swaps and vm.swappiness as before")
    func normalBuildLeavesNothingBehind() throws {
        try Clients.require(Clients.ninja)
        let watch = try SwapWatch()
        defer { watch.cleanUp() }
        let jobs = (1...3).map { Job(name: "mid\($0)", peak: 160, ramp: 2, hold: 1) }
        let s = try Self.project(jobs)
        let began = Date()
        guard let (run, box, index) = try Self.startOwningDevice(
            ["--summary-json", s.path + "/normal.json", "--memory-budget", "320M", Clients.ninja, "-j3"],
            limit: Self.boxLimit, in: s, watch: watch, tag: "normal", outputs: jobs) else { return }
        #expect(SwapState.read().devices.contains { $0.path == "/dev/zram\(index)" }, "zram\(index) is on as swap during the build")
        #expect(Self.owner(ofZram: index) == run.pid)
        #expect(SwapSnapshot.read().swappiness == "0", "vm.swappiness is 0 during the build")
        let (r, kills) = box.finish(run, timeout: 60)
        let sum = Self.summary(s, "normal.json")
        report("ninja -j3 cold, --memory-budget 320M", r, kills, sum, Date().timeIntervalSince(began))
        #expect(r.status == 0, "\(r.stderr.suffix(2000))")
        #expect(kills == 0)
        #expect(Self.int(sum, "oom_kills") == 0)
        #expect((Self.int(sum, "page_outs") ?? 0) >= 1, "the device was used: \(r.jobgovLines.joined(separator: "\n"))")
        #expect(access("/sys/block/zram\(index)", F_OK) != 0, "zram\(index) is removed at exit")
        #expect(box.jobgovLeftovers.isEmpty)
        #expect(s.runtimeLeftovers.isEmpty)
        watch.expectAsBefore("after a normal build")
    }

    // MARK: 4. the build's own v1 memory cgroup does not swap

    /// `CgroupLimits.swappiness` and `SwappinessTuning` say it: on cgroup v1 vm.swappiness reaches only the root
    /// memory cgroup, each v1 cgroup copies its parent's memory.swappiness when it is made, so the build's own v1
    /// cgroup must get 0 from jobgov while its zram device is on, or reclaim at the build's hard limit swaps running
    /// jobs into the device (whose memory no cgroup is charged for). Here the box keeps the machine's default.
    @Test("while jobgov's zram device is on, the build's v1 memory cgroups have memory.swappiness 0")
    func buildCgroupDoesNotSwap() throws {
        try Clients.require(Clients.ninja)
        let watch = try SwapWatch()
        defer { watch.cleanUp() }
        let s = try Self.project([Job(name: "w1", peak: 20, ramp: 1.5, hold: 1.5)])
        guard CgroupLayout.detect().kind != .unified else { return }  // v2 has no per-cgroup swappiness
        SwapWatch.waitQuiet(mine: watch.mine)
        let box = try Box("swappiness", limit: Self.boxLimit, swappiness: nil)
        let memoryDir = try #require(box.cgroup.directories.memory)
        let inherited = (readTrimmed(memoryDir + "/build/memory.swappiness") ?? "?")
        let run = try Self.start([Clients.ninja], box: box, in: s, watch: watch, tag: "swappiness")
        waitUntil("the start line naming the swap", timeout: 15) { s.read("swappiness.stderr").contains("jobgov: swap:") }
        waitUntil("the job to start", timeout: 15) { !BuildCgroup.processes(in: memoryDir + "/build/jobgov-\(run.pid)").isEmpty }
        var values: [String: String] = [:]
        func collect(_ dir: String) {
            values[dir] = readTrimmed(dir + "/memory.swappiness")
            for child in BuildCgroup.subdirectories(dir) { collect(dir + "/" + child) }
        }
        collect(memoryDir + "/build/jobgov-\(run.pid)")
        let r = run.finish(timeout: 30)
        #expect(r.status == 0, "\(r.stderr)")
        // With another jobgov's swap on, jobgov pages out to that: the build's cgroup must not swap either way.
        print("PageOutBuildTests: swappiness: \(Self.swapLine(r.stderr)); \(values.map { "\($0.key.split(separator: "/").suffix(2).joined(separator: "/")) \($0.value)" }.sorted())")
        #expect(!values.isEmpty)
        for (dir, value) in values.sorted(by: { $0.key < $1.key }) {
            #expect(value == "0", "\(dir)/memory.swappiness is \(value) (the box's leaf has \(inherited)) while zram is on")
        }
        watch.expectAsBefore("after the build")
    }

    // MARK: helpers

    static func parent(of pid: Int32) -> Int32? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 1 ? Int32(fields[1]) : nil
    }

    /// The process state letter (R, S, D, T, Z…), nil when it is gone.
    static func state(of pid: Int32) -> String? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        return stat[stat.index(after: close)...].split(separator: " ").first.map(String.init)
    }

    /// Cgroups at or below `dir` that are frozen (v2 cgroup.freeze 1 or frozen 1, v1 freezer.state not THAWED).
    static func frozenCgroups(_ dir: String) -> [String] {
        var out: [String] = []
        if let f = readTrimmed(dir + "/cgroup.freeze"), f == "1" { out.append(dir) }
        else if let e = try? String(contentsOfFile: dir + "/cgroup.events", encoding: .utf8), e.contains("frozen 1") { out.append(dir) }
        if let st = readTrimmed(dir + "/freezer.state"), st != "THAWED" { out.append(dir) }
        for child in BuildCgroup.subdirectories(dir) { out += frozenCgroups(dir + "/" + child) }
        return out
    }
}

private func readTrimmed(_ path: String) -> String? {
    (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
}
