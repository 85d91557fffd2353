import Foundation
import LinuxSystem
import Testing

private let isRoot = geteuid() == 0

/// The governor end to end: the example memory-hungry build (examples/memory-hungry), in a memory-limited cgroup the
/// test makes below its own, run plainly and under jobgov with the same limit. Each build takes 20-40 s.
@Suite("Governor on real builds", .serialized, .enabled(if: isRoot, "needs root to create memory-limited cgroups"))
struct GovernorBuildTests {
    static let example = Clients.repo.appendingPathComponent("examples/memory-hungry").path
    static let memjob = Clients.repo.appendingPathComponent("examples/memjob/memjob.c").path

    /// A cgroup with a hard memory limit for one contender; jobgov inside it makes its own cgroup below.
    final class LimitedCgroup {
        let cgroup: BuildCgroup
        init(_ tag: String, limit: UInt64) throws {
            cgroup = try BuildCgroup.create(layout: CgroupLayout.detect(), name: "jobgov-test-\(getpid())-\(tag)")
            try cgroup.apply(CgroupLimits(memoryMax: limit))
            // Swap on the machine (a user's, or a zram device another jobgov made) must not stand in for the OOM kills
            // these tests expect: nothing in the box swaps at its limit (v1 swappiness 0, which the cgroups made below
            // copy). jobgov's own page-out of frozen jobs ignores swappiness, as it does on a user's machine.
            if let dir = cgroup.directories.memory {
                // The leaf was made before: a v1 child copies its parent's value only when it is made.
                try? writeCgroupFile(dir + "/memory.swappiness", "0")
                try? writeCgroupFile(dir + "/\(cgroup.leafName)/memory.swappiness", "0")
            }
        }
        /// `sh -c` that joins the cgroup in every hierarchy, then execs the command.
        func wrap(_ command: [String]) -> [String] {
            let joins = cgroup.leafProcsFiles.map { "echo $$ > \($0)" }.joined(separator: " && ")
            return ["-c", "\(joins) && exec \"$@\"", "sh"] + command
        }
        /// OOM kills anywhere below (v1 counts them per cgroup; v2's memory.events is hierarchical).
        var oomKills: UInt64 {
            if let dir = cgroup.directories.memory { return BuildCgroup.v1OOMKills(below: dir) ?? 0 }
            return cgroup.oomKills() ?? 0
        }
        deinit {
            try? cgroup.thaw()
            for pid in cgroup.processes() { kill(pid, SIGKILL) }
            for _ in 0..<100 where !cgroup.remove() { usleep(50_000) }
        }
    }

    /// A copy of the example (Makefile, build.ninja, the job program's source) in a scratch directory.
    private func exampleCopy() throws -> Scratch {
        let s = try Scratch()
        try FileManager.default.createDirectory(atPath: s.path + "/mh", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: s.path + "/memjob", withIntermediateDirectories: true)
        for name in ["Makefile", "build.ninja"] {
            try FileManager.default.copyItem(atPath: Self.example + "/" + name, toPath: s.path + "/mh/" + name)
        }
        try FileManager.default.copyItem(atPath: Self.memjob, toPath: s.path + "/memjob/memjob.c")
        return s
    }

    private func run(_ command: [String], limit: UInt64, tag: String, in s: Scratch) throws -> (RunResult, UInt64) {
        let box = try LimitedCgroup(tag, limit: limit)
        let r = try Running("/bin/sh", box.wrap(command), in: s, cwd: s.path + "/mh",
                            env: ["PATH": Clients.repo.appendingPathComponent(".deps/bin").path + ":/usr/bin:/bin",
                                  "XDG_STATE_HOME": s.path + "/state"],
                            tag: tag).finish(timeout: 240)
        return (r, box.oomKills)
    }

    private static let budget: UInt64 = 1 << 30

    @Test("plain make -j16 of the example is OOM-killed in 1 GiB; jobgov make -j16 finishes with none",
          arguments: ["make43", "make44"])
    func makeSurvives(_ which: String) throws {
        let make = which == "make43" ? Clients.make43 : Clients.make44
        try Clients.require(make)
        let s = try exampleCopy()
        let (plain, plainKills) = try run([make, "-j16", "OUT=plain"], limit: Self.budget, tag: "plain", in: s)
        #expect(plain.status != 0 && plainKills > 0, "plain make must fail by OOM kills here (status \(plain.status), \(plainKills) kills), else the test proves nothing")

        let (governed, kills) = try run([Clients.jobgov, "--summary-json", s.path + "/summary.json", make, "-j16", "OUT=gov"],
                                        limit: Self.budget, tag: "jobgov", in: s)
        #expect(governed.status == 0, "\(governed.jobgovLines.joined(separator: "\n"))\n\(governed.stderr.suffix(2000))")
        #expect(kills == 0)
        #expect(FileManager.default.fileExists(atPath: s.path + "/mh/gov/bin/app"))
        let summary = s.read("summary.json")
        #expect(summary.contains("\"oom_kills\":0"), "\(summary)")
        #expect(summary.contains("\"exit_status\":0"))
        #expect(governed.jobgovLines.contains { $0.contains("memory: peak") }, "the summary names the peak")
        #expect(governed.jobgovLines.contains { $0.contains("tier: root") })
    }

    @Test("plain ninja -j16 of the example is OOM-killed in 1 GiB; jobgov ninja -j16 finishes with none")
    func ninjaSurvives() throws {
        try Clients.require(Clients.ninja)
        let s = try exampleCopy()
        let (plain, plainKills) = try run([Clients.ninja, "-j16"], limit: Self.budget, tag: "plain", in: s)
        #expect(plain.status != 0 && plainKills > 0, "plain ninja must fail by OOM kills here (status \(plain.status), \(plainKills) kills)")
        _ = try Running(Clients.ninja, ["-t", "clean"], in: s, cwd: s.path + "/mh", tag: "clean").finish(timeout: 30)

        let (governed, kills) = try run([Clients.jobgov, "--trace", s.path + "/trace.jsonl", "--trace-events",
                                         s.path + "/build.trace.json", Clients.ninja, "-j16"],
                                        limit: Self.budget, tag: "jobgov", in: s)
        #expect(governed.status == 0, "\(governed.jobgovLines.joined(separator: "\n"))")
        #expect(kills == 0)
        // The timeline holds every compile and link (each runs a second or more: longer than a tick), on slots
        // that never overlap, and memory against the budget.
        let timeline = try TraceEventsBuildTests.Trace(path: s.path + "/build.trace.json")
        let plan = try #require(try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: Self.example + "/build.json"))) as? [String: Any])
        let long = (plan["jobs"] as? [[String: Any]] ?? []).filter { ["compile", "link"].contains($0["kind"] as? String) }
        #expect(long.count == 64)
        for job in long {
            let name = job["name"] as? String ?? "?"
            #expect(timeline.job(name).count == 1, "\(name) is not one slice of the timeline")
        }
        timeline.checkTracks()
        let memory = timeline.events.filter { $0["name"] as? String == "memory in use" }
            .compactMap { (($0["args"] as? [String: Any])?["MiB"] as? NSNumber)?.doubleValue }
        #expect((memory.max() ?? 0) > 100 && (memory.max() ?? 0) < 1024, "memory in use, MiB: \(memory.max() ?? 0)")
        // The trace shows the governor at work: fewer than 16 jobs allowed at some point.
        let targets = s.read("trace.jsonl").split(separator: "\n").compactMap { line -> Int? in
            guard let r = line.range(of: "\"target\":") else { return nil }
            return Int(line[r.upperBound...].prefix { $0.isNumber })
        }
        #expect(!targets.isEmpty)
        #expect(targets.contains { $0 < 16 })
    }

    /// Two recipes that each take 190 MB at once in a 256 MiB cgroup (hard limit 224 MiB), without swap for frozen jobs:
    /// together they sit at the hard limit. Under make, jobgov ends the newer one at once rather than waiting for the
    /// kernel; jobgov-shell (make's SHELL under jobgov, running the makefile's own bash) asks to run it again, and it
    /// runs once the other is done: no OOM kill at all. With --no-rerun and --no-swap nothing can take memory back,
    /// so jobs whose size is unknown start one at a time.
    @Test("a recipe jobgov ended early runs again alone and the build succeeds; without re-runs or swap, slow start; with the history, no OOM at all")
    func oomKilledRecipeRunsAgain() throws {
        let s = try exampleCopy()
        // The job program is built first, so that both recipes start at once when the build does.
        let cc = try Running("/usr/bin/cc", ["-O2", "-o", "mh/memjob-bin", "memjob/memjob.c"], in: s, tag: "cc").finish(timeout: 60)
        try #require(cc.status == 0, "\(cc.stderr)")
        var makefile = "SHELL := /bin/bash\nMJ := ./memjob-bin\nall: a b\n"
        // [[ ]] is bash: the recipe only works if jobgov-shell runs the makefile's shell.
        makefile += "a: $(MJ)\n\t[[ -x $(MJ) ]] && $(MJ) --name first --peak 190 --ramp 0.02 --hold 1 --out $@\n"
        makefile += "b: $(MJ)\n\t[[ -x $(MJ) ]] && $(MJ) --name second --peak 190 --ramp 0.02 --hold 1 --out $@\n"
        try s.write("mh/Makefile", makefile)
        let (r, _) = try run([Clients.jobgov, "--no-swap", "--summary-json", s.path + "/summary.json", Clients.make43, "-j4"],
                             limit: 256 << 20, tag: "rerun", in: s)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.jobgovLines.contains { $0.contains("early to make room") }, "\(r.jobgovLines.joined(separator: "\n"))")
        #expect(r.jobgovLines.contains { $0.contains("running again, alone") })
        let summary = s.read("summary.json")
        #expect(summary.contains("\"jobs_rerun\":1") && summary.contains("\"jobs_ended_early\":1"), "\(summary)")
        #expect(summary.contains("\"oom_kills\":0"), "ended before the kernel had to: \(summary)")
        #expect(FileManager.default.fileExists(atPath: s.path + "/mh/a") && FileManager.default.fileExists(atPath: s.path + "/mh/b"))

        try? FileManager.default.removeItem(atPath: s.path + "/mh/a")
        try? FileManager.default.removeItem(atPath: s.path + "/mh/b")
        // With neither ending early nor paging out, nothing can take memory back: jobs of unknown size start one at a
        // time (slow start), so the two never meet. (A job that cannot fit even alone is named when the kernel ends
        // it: jobLargerThanBudget.)
        let (plain, plainKills) = try run([Clients.jobgov, "--no-rerun", "--no-history", "--no-swap", "--summary-json",
                                           s.path + "/slow.json", Clients.make43, "-j4"],
                                          limit: 256 << 20, tag: "norerun", in: s)
        #expect(plain.status == 0, "\(plain.jobgovLines.joined(separator: "\n"))")
        #expect(plainKills == 0 && s.read("slow.json").contains("\"oom_kills\":0"), "\(s.read("slow.json"))")
        #expect(s.read("slow.json").contains("\"peak_concurrency\":1"), "slow start: \(s.read("slow.json"))")

        // The first run left both recipes' peaks in the history: now they are not started together at all.
        try? FileManager.default.removeItem(atPath: s.path + "/mh/a")
        try? FileManager.default.removeItem(atPath: s.path + "/mh/b")
        let (learned, kills) = try run([Clients.jobgov, "--no-rerun", "--summary-json", s.path + "/learned.json",
                                        Clients.make43, "-j4"], limit: 256 << 20, tag: "learned", in: s)
        #expect(learned.status == 0, "\(learned.jobgovLines.joined(separator: "\n"))")
        #expect(kills == 0)
        #expect(s.read("learned.json").contains("\"peak_concurrency\":1"), "\(s.read("learned.json"))")
    }

    /// One job bigger than the whole limit: it runs alone (nothing else is admitted or all else is frozen), the build
    /// does not hang, and when the kernel ends the job, jobgov says which job and why.
    @Test("a job larger than the budget runs alone, does not deadlock, and its OOM kill is named")
    func jobLargerThanBudget() throws {
        let s = try exampleCopy()
        var makefile = "MJ := memjob-bin\nall: big s1 s2 s3\n$(MJ): ../memjob/memjob.c\n\tcc -O2 -o $@ $<\n"
        makefile += "big: $(MJ)\n\t./$(MJ) --name huge-link --peak 400 --ramp 2 --hold 1 --out $@\n"
        for i in 1...3 { makefile += "s\(i): $(MJ)\n\t./$(MJ) --name small\(i) --peak 30 --ramp 1 --hold 1 --out $@\n" }
        try s.write("mh/Makefile", makefile)
        let (r, _) = try run([Clients.jobgov, Clients.make43, "-j8"], limit: 256 << 20, tag: "big", in: s)
        #expect(r.status != 0, "a 400 MB job cannot finish under 256 MiB")
        #expect(r.jobgovLines.contains { $0.contains("OOM killer ended a job") && $0.contains("huge-link") },
                "\(r.stderr)")
        #expect(r.jobgovLines.contains { $0.contains("build failed") })
    }
}
