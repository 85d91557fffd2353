import Foundation
import JobgovCore
import Testing

/// The build timeline (`--trace-events`) from a job table driven by hand, as the governor's loop drives it.
@Suite("Trace events")
struct TraceEventsTests {
    private let MiB: UInt64 = 1 << 20

    private func parse(_ text: String) throws -> (events: [[String: Any]], other: [String: Any]) {
        let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        #expect(object["displayTimeUnit"] as? String == "ms")
        let events = try #require(object["traceEvents"] as? [[String: Any]])
        return (events, object["otherData"] as? [String: Any] ?? [:])
    }

    private func sample(_ used: UInt64, target: Int, running: Int, frozen: Int = 0, buildFrozen: Bool = false) -> BuildTimeline.Sample {
        BuildTimeline.Sample(memoryUsedBytes: used, budgetBytes: 900 * MiB, hardLimitBytes: 990 * MiB, targetJobs: target,
                             tokensOut: max(0, running - 1), runningJobs: running, frozenJobs: frozen,
                             buildFrozen: buildFrozen, memoryPressure: 1.5, cpuPressure: 20)
    }

    /// make (pid 1) runs `cc a` (10), `cc "b"` (20) and `ld` (30) in turn; `cc "b"` is frozen, paged out and thawed;
    /// `ld` is ended early, run again and then OOM-killed; the whole build is frozen for a while.
    private func recordedBuild() -> BuildTimeline {
        var table = JobTable()
        var timeline = BuildTimeline(title: "jobgov -j4 make \"all\"", pid: 4242)
        let make = ProcessObservation(pid: 1, parent: 0, name: "make")
        let a = ProcessObservation(pid: 10, parent: 1, name: "sh", rssBytes: 50 * MiB,
                                   arguments: ["/bin/sh", "-c", "/usr/bin/cc -c a.c -o a.o"])
        let b = ProcessObservation(pid: 20, parent: 1, name: "sh", rssBytes: 80 * MiB,
                                   arguments: ["/bin/sh", "-c", "cc -c \"b\".c\t-o b.o"])
        let link = ProcessObservation(pid: 30, parent: 1, name: "jobgov-shell", rssBytes: 300 * MiB,
                                      arguments: ["jobgov-shell", "-c", "ld -o app a.o b.o"])
        func tick(_ t: Double, _ procs: [ProcessObservation], target: Int, buildFrozen: Bool = false) {
            let ended = table.update([make] + procs, launched: 1, now: t)
            let frozen = table.jobs.values.filter(\.frozen).count
            timeline.observe(now: t, jobs: table.jobs.values, ended: ended,
                             sample: sample(UInt64(procs.count) * 100 * MiB, target: target,
                                            running: table.jobs.count - frozen, frozen: frozen, buildFrozen: buildFrozen))
        }
        tick(0.0, [], target: 4)
        tick(0.1, [a], target: 4)
        tick(0.2, [a, b], target: 4)
        let bID = table.jobs.keys.first { $0.pid == 20 }!
        table.setFrozen(bID, true, now: 0.5)
        tick(0.5, [a, b], target: 2)
        table.setPagedOut(bID, bytes: 80 * MiB)
        tick(0.6, [a, b], target: 2)
        tick(1.0, [b], target: 2)  // a ended between 0.6 and 1.0
        table.setFrozen(bID, false, now: 1.2)
        tick(1.2, [b, link], target: 3)
        let linkID = table.jobs.keys.first { $0.pid == 30 }!
        timeline.mark(pid: linkID.pid, .endedEarly, at: 1.3)
        tick(1.4, [b, link], target: 3, buildFrozen: true)
        tick(1.8, [b, link], target: 3, buildFrozen: false)
        timeline.mark(pid: 30, .rerun, at: 2.0)
        tick(2.0, [link], target: 3)
        tick(2.5, [], target: 4)
        // Named as the OOM killer's victim after it was gone.
        timeline.mark(command: "ld -o app a.o b.o", startedAt: 1.2, .oomKilled, at: 2.5)
        return timeline
    }

    @Test("the file parses, and every job is one slice on a slot with its command, peak, freezes and marks")
    func slicesAndArgs() throws {
        let timeline = recordedBuild()
        #expect(timeline.jobCount == 3)
        let (events, other) = try parse(timeline.traceEventsJSON(end: 2.6, otherData: [("exit_status", "2")]))
        #expect(other["exit_status"] as? String == "2")
        #expect(other["jobs"] as? Int == 3)
        let jobs = events.filter { $0["ph"] as? String == "X" && $0["cat"] as? String == "job" }
        #expect(jobs.count == 3)
        func job(_ pid: Int) throws -> [String: Any] {
            try #require(jobs.first { ($0["args"] as? [String: Any])?["pid"] as? Int == pid })
        }
        let a = try job(10), b = try job(20), link = try job(30)
        // Slices run from the first reading that saw the job to the first that did not, in microseconds.
        #expect(a["ts"] as? Int == 100_000 && a["dur"] as? Int == 900_000)
        #expect(b["ts"] as? Int == 200_000 && b["dur"] as? Int == 1_800_000)
        #expect(link["ts"] as? Int == 1_200_000 && link["dur"] as? Int == 1_300_000)
        #expect(a["name"] as? String == "cc -c a.c -o a.o", "the program's directory is left out")
        let aArgs = try #require(a["args"] as? [String: Any])
        #expect(aArgs["command"] as? String == "/usr/bin/cc -c a.c -o a.o")
        #expect(aArgs["peak_bytes"] as? Int == Int(50 * MiB))
        #expect(aArgs["oom_killed"] as? Bool == false && aArgs["rerun"] as? Bool == false)
        let bArgs = try #require(b["args"] as? [String: Any])
        #expect(bArgs["command"] as? String == "cc -c \"b\".c\t-o b.o", "quotes and tabs survive")
        #expect(bArgs["frozen_seconds"] as? Double == 0.7)
        #expect(bArgs["frozen_intervals"] as? [String] == ["0.5-1.2 s"])
        #expect(bArgs["paged_out_bytes"] as? Int == Int(80 * MiB))
        let linkArgs = try #require(link["args"] as? [String: Any])
        #expect(linkArgs["ended_early"] as? Bool == true)
        #expect(linkArgs["rerun"] as? Bool == true)
        #expect(linkArgs["oom_killed"] as? Bool == true)
        #expect(link["cname"] as? String == "terrible")

        // a and b ran together: two slots; the link started after a had ended, so it takes a's slot.
        #expect(a["tid"] as? Int == 1 && b["tid"] as? Int == 2 && link["tid"] as? Int == 1)
        let names = events.filter { $0["ph"] as? String == "M" && $0["name"] as? String == "thread_name" }
            .compactMap { ($0["args"] as? [String: Any])?["name"] as? String }
        #expect(Set(names) == ["jobgov", "slot 1", "slot 2"])
        let process = events.first { $0["name"] as? String == "process_name" }
        #expect((process?["args"] as? [String: Any])?["name"] as? String == "jobgov -j4 make \"all\"")

        // The freeze is a slice nested in b's; the page-out, the early end, the re-run and the OOM kill are instants.
        let frozen = events.filter { $0["cat"] as? String == "frozen" }
        #expect(frozen.count == 1)
        #expect(frozen.first?["ts"] as? Int == 500_000 && frozen.first?["dur"] as? Int == 700_000)
        #expect(frozen.first?["tid"] as? Int == 2)
        let instants = events.filter { $0["ph"] as? String == "i" }.compactMap { $0["name"] as? String }
        #expect(Set(instants) == ["paged out 80 MiB", "ended early to make room", "run again", "OOM kill"])
        let build = events.filter { $0["name"] as? String == "whole build frozen" }
        #expect(build.count == 1 && build.first?["ts"] as? Int == 1_400_000 && build.first?["dur"] as? Int == 400_000)
    }

    @Test("counters are step functions: only changes, each running to the end")
    func counters() throws {
        let (events, _) = try parse(recordedBuild().traceEventsJSON(end: 3))
        let counters = events.filter { $0["ph"] as? String == "C" }
        let names = Set(counters.compactMap { $0["name"] as? String })
        #expect(names == ["memory in use", "memory budget", "hard limit", "target", "tokens", "running", "frozen",
                          "memory PSI", "CPU PSI"])
        func series(_ name: String) -> [(Int, Double)] {
            counters.filter { $0["name"] as? String == name }.map {
                ($0["ts"] as! Int, (($0["args"] as! [String: Any]).values.first as! NSNumber).doubleValue)
            }
        }
        #expect(series("memory budget").map(\.1) == [900, 900], "the first value and the end")
        #expect(series("memory budget").last?.0 == 3_000_000)
        #expect(series("target").map(\.1) == [4, 2, 3, 4, 4])
        #expect(series("memory in use").first?.1 == 0 && series("memory in use").contains { $0.1 == 200 })
        #expect(series("frozen").map(\.1) == [0, 1, 0, 0])
        #expect(series("running").last?.1 == 0)
        for name in names {
            let ts = series(name).map(\.0)
            #expect(ts == ts.sorted() && Set(ts).count == ts.count, "\(name): one value per instant, in time order")
        }
    }

    @Test("a job still running when jobgov stops ends at the end and says so; an empty build is still a valid file")
    func unfinished() throws {
        var table = JobTable()
        var timeline = BuildTimeline(title: "t", pid: 1)
        let procs = [ProcessObservation(pid: 1, parent: 0, name: "ninja"),
                     ProcessObservation(pid: 2, parent: 1, name: "cc", arguments: ["cc", "x"])]
        timeline.observe(now: 0.3, jobs: table.jobs.values, ended: table.update(procs, launched: 1, now: 0.3), sample: nil)
        timeline.observe(now: 0.3, jobs: table.jobs.values, ended: [], sample: nil)
        let (events, _) = try parse(timeline.traceEventsJSON(end: 1.3))
        let job = try #require(events.first { $0["cat"] as? String == "job" })
        #expect(job["dur"] as? Int == 1_000_000)
        #expect((job["args"] as? [String: Any])?["running_at_exit"] as? Bool == true)

        let (none, other) = try parse(BuildTimeline(title: "t", pid: 1).traceEventsJSON(end: 0))
        #expect(none.allSatisfy { $0["ph"] as? String == "M" })
        #expect(other["jobs"] as? Int == 0)
    }

    @Test("slots: the lowest free one, reused from the instant a job ends, never two jobs at once on one")
    func slots() {
        #expect(BuildTimeline.assignSlots([(0, 2), (1, 3), (2, 4), (2.5, 3), (3, 5)]) == [0, 1, 0, 2, 1])
        var rng = SystemRandomNumberGenerator()
        var intervals: [(start: Double, end: Double)] = []
        for _ in 0..<500 {
            let s = Double.random(in: 0..<100, using: &rng)
            intervals.append((s, s + Double.random(in: 0..<5, using: &rng)))
        }
        intervals.sort { $0.start < $1.start }
        let slots = BuildTimeline.assignSlots(intervals)
        for k in Set(slots) {
            let mine = zip(intervals, slots).filter { $0.1 == k }.map(\.0)
            for (x, y) in zip(mine, mine.dropFirst()) { #expect(x.end <= y.start) }
        }
        // As many slots as the most intervals that overlap at one instant, not more.
        var most = 0
        for i in intervals { most = max(most, intervals.filter { $0.start <= i.start && i.start < $0.end }.count) }
        #expect(Set(slots).count == most)
    }

    @Test("trace-events is a config-file key, like the options beside it")
    func configKey() throws {
        let parsed = try ConfigFile.parse("trace-events = /tmp/build.trace.json  # every build\n", path: "c")
        #expect(parsed["trace-events"] == "/tmp/build.trace.json")
    }

    @Test func shortNames() {
        #expect(BuildTimeline.shortName("/usr/lib/gcc/cc1plus -quiet x.cc") == "cc1plus -quiet x.cc")
        #expect(BuildTimeline.shortName("out/bin/memjob --name core1/a.o") == "memjob --name core1/a.o")
        #expect(BuildTimeline.shortName(String(repeating: "x", count: 100)).count == 60)
        #expect(BuildTimeline.shortName("cd sub/ && make") == "cd sub/ && make")
    }
}
