import Foundation
import LinuxSystem
import Testing

private let isRoot = geteuid() == 0

/// The exec gate end to end on a tool that takes no jobserver tokens: `xargs -P 12` of memory-hungry jobs in a
/// 1 GiB box cgroup the test makes below its own, under jobgov with the gate (the default for such a tool) and
/// with `--no-gate`. Each run takes 15-40 s.
@Suite("Exec gate on xargs -P", .serialized, .enabled(if: isRoot, "needs root for cgroups and BPF"))
struct ExecGateBuildTests {
    static let jobs = 16

    /// memjob built, a job script that logs its start and end around it (after the gate: the script is the job's
    /// first program), and the list of jobs for xargs.
    private func prepare() throws -> Scratch {
        let s = try Scratch()
        let cc = try Running("/usr/bin/cc", ["-O2", "-o", s.path + "/memjob-bin", GovernorBuildTests.memjob],
                             in: s, tag: "cc").finish(timeout: 60)
        try #require(cc.status == 0, "cc: \(cc.stderr)")
        // 200 MiB each over 2.5 s: 12 at once want 2.4 GB of the box's 1 GiB.
        try s.write("mem-job.sh", """
            #!/bin/sh
            echo "S $(date +%s%N) $1" >> "$JOBLOG"
            ./memjob-bin --name "$1" --peak 200 --ramp 2 --hold 0.5 --out "out/$1"
            status=$?
            echo "E $(date +%s%N) $1" >> "$JOBLOG"
            exit $status
            """)
        chmod(s.path + "/mem-job.sh", 0o755)
        try FileManager.default.createDirectory(atPath: s.path + "/out", withIntermediateDirectories: true)
        try s.write("jobs.txt", (1...Self.jobs).map { "j\($0)" }.joined(separator: "\n") + "\n")
        return s
    }

    private struct Outcome {
        var result: RunResult
        var kills: UInt64
        var log: JobLog
        var summary: [String: Any]
        var targets: [Int]
        var freezes: Int { summary["job_freezes"] as? Int ?? 0 }
    }

    private func run(_ options: [String], tag: String, in s: Scratch) throws -> Outcome {
        let box = try GovernorBuildTests.LimitedCgroup(tag, limit: 1 << 30)
        let command = [Clients.jobgov, "--summary-json", "\(s.path)/\(tag).json", "--trace", "\(s.path)/\(tag).trace"]
            + options + ["--", "xargs", "-P", "12", "-n", "1", "-a", "jobs.txt", "./mem-job.sh"]
        let r = try Running("/bin/sh", box.wrap(command), in: s,
                            env: ["JOBLOG": "\(s.path)/\(tag).log", "XDG_STATE_HOME": s.path + "/state-" + tag],
                            tag: tag).finish(timeout: 240)
        let summary = (try? JSONSerialization.jsonObject(with: Data(s.read("\(tag).json").utf8))) as? [String: Any] ?? [:]
        let targets = s.read("\(tag).trace").split(separator: "\n").compactMap { line -> Int? in
            guard let r = line.range(of: "\"target\":") else { return nil }
            return Int(line[r.upperBound...].prefix { $0.isNumber })
        }
        return Outcome(result: r, kills: box.oomKills, log: JobLog(s.read("\(tag).log")), summary: summary,
                       targets: targets)
    }

    @Test("xargs -P 12 of 200 MiB jobs in 1 GiB: without the gate all 12 start and are frozen or killed; with it the jobs running follow the target, no OOM kill")
    func gateHoldsXargs() throws {
        let s = try prepare()

        let open = try run(["--no-gate"], tag: "nogate", in: s)
        #expect(open.result.jobgovLines.contains { $0.contains("exec gate off (--no-gate)") }, "\(open.result.jobgovLines)")
        #expect(open.log.peak() >= 10, "nothing holds xargs back: its 12 start together (peak \(open.log.peak()))")
        #expect(open.freezes + Int(open.kills) >= 3,
                "without the gate jobgov can only freeze (or the kernel kill): \(open.freezes) freezes, \(open.kills) kills")

        let gated = try run([], tag: "gate", in: s)
        let lines = gated.result.jobgovLines.joined(separator: "\n")
        #expect(gated.result.status == 0, "\(lines)\n\(gated.result.stderr.suffix(2000))")
        #expect(gated.kills == 0)
        #expect(gated.summary["oom_kills"] as? Int == 0, "\(gated.summary)")
        #expect(lines.contains("xargs takes no jobserver tokens: the exec gate starts its jobs as the governor's target allows"), "\(lines)")
        #expect(lines.contains("eBPF observers on:") && lines.contains("exec gate"), "\(lines)")
        #expect(gated.log.count == Self.jobs, "every job ran to its end")
        for n in 1...Self.jobs { #expect(FileManager.default.fileExists(atPath: "\(s.path)/out/j\(n)"), "j\(n)") }
        // The jobs running at once never pass the most the governor allowed, which is well below xargs's 12.
        let highest = try #require(gated.targets.max(), "a trace with targets")
        #expect(gated.log.peak() <= highest, "peak \(gated.log.peak()) jobs, target at most \(highest)")
        #expect(gated.log.peak() < 12)
        // "exec gate: A jobs started at once, H held at their start ...": each job passes the gate once, at its
        // first program; a program of an admitted job is never held.
        let counts = lines.split(separator: "\n").first { $0.contains("exec gate:") && $0.contains("held at their start") }
            .map { $0.split(separator: " ").compactMap { Int($0) } } ?? []
        #expect(counts.count == 2 && counts[1] > 0, "some jobs were held: \(lines)")
        #expect(counts.reduce(0, +) == Self.jobs, "every job passed the gate once: \(counts)")
        #expect(gated.freezes < open.freezes + Int(open.kills),
                "the gate holds jobs before they take memory: \(gated.freezes) freezes against \(open.freezes) and \(open.kills) kills")
        print("xargs -P 12, 16 jobs of 200 MiB in 1 GiB: --no-gate peak \(open.log.peak()) jobs, \(open.freezes) freezes, "
              + "\(open.kills) OOM kills, \(open.summary["wall_seconds"] ?? "?") s; gate peak \(gated.log.peak()) jobs "
              + "(target ≤ \(highest)), \(gated.freezes) freezes, \(gated.kills) OOM kills, \(gated.summary["wall_seconds"] ?? "?") s")
    }

    /// jobgov's own -j2 holds xargs -P 8 to two jobs: six wait, frozen in the gate's leaf (not stopped). SIGKILL of
    /// jobgov then leaves none of them waiting: the watchdog thaws them, and xargs runs all eight. Had they been left
    /// stopped, the kernel would have hung up the whole build as jobgov died (SIGHUP to an orphaned process group
    /// with stopped members).
    @Test("jobgov killed with SIGKILL while the gate holds jobs: nothing stays stopped or frozen and every job runs")
    func sigkillLeavesNothingStopped() throws {
        let s = try Scratch()
        try s.write("jobs.txt", (1...8).map { "k\($0) 2" }.joined(separator: "\n") + "\n")
        let run = try Running(Clients.jobgov, ["-j2", "--", "xargs", "-P", "8", "-n", "2", "-a", "jobs.txt", Clients.jobScript],
                              in: s)
        var held: [Int32] = []
        waitUntil("the gate to hold jobs", timeout: 20) {
            held = buildCgroupDirectories(jobgov: run.pid).flatMap { BuildCgroup.processes(in: $0 + "/job-gate") }
            return held.count >= 4
        }
        let stopped = buildCgroupDirectories(jobgov: run.pid).flatMap { BuildCgroup.processes(in: $0 + "/build") }
            .filter { processState($0) == "T" }
        #expect(stopped.isEmpty, "held jobs wait frozen, not stopped: \(stopped)")
        #expect(JobLog(s.read("job.log")).peak() <= 2, "two jobs at most while jobgov runs")
        kill(run.pid, SIGKILL)
        _ = run.finish()
        waitUntil("xargs to run every job", timeout: 30) { JobLog(s.read("job.log")).count == 8 }
        #expect(held.allSatisfy { processState($0) == nil }, "the held jobs ran and ended")
    }
}

/// The scheduler state letter of a process (R, S, D, T, Z...), nil once it is gone.
private func processState(_ pid: Int32) -> Character? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = text.lastIndex(of: ")") else { return nil }
    return text[text.index(after: close)...].first { $0 != " " }
}
