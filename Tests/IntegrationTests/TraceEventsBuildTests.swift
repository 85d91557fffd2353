import Foundation
import Testing

/// `--trace-events FILE` on real builds: the file is Chrome trace-event JSON that holds every job (each recipe here
/// records its own start and end through job.sh, and runs a second or more, longer than jobgov's tick), on slot
/// tracks where no two jobs overlap, with the governor's counters; and it is written however the build ends.
@Suite("Trace events of real builds", .serialized)
struct TraceEventsBuildTests {
    /// A parsed trace-events file.
    struct Trace {
        var other: [String: Any]
        var events: [[String: Any]]

        init(path: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
            let data = try #require(FileManager.default.contents(atPath: path), "no trace-events file at \(path)",
                                    sourceLocation: sourceLocation)
            let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any],
                                      "not a JSON object", sourceLocation: sourceLocation)
            events = try #require(object["traceEvents"] as? [[String: Any]], sourceLocation: sourceLocation)
            other = object["otherData"] as? [String: Any] ?? [:]
        }

        struct Slice { var name: String; var command: String; var ts: Int; var dur: Int; var tid: Int; var args: [String: Any] }

        /// One slice per job.
        var jobs: [Slice] {
            events.filter { $0["ph"] as? String == "X" && $0["cat"] as? String == "job" }.map {
                let args = $0["args"] as? [String: Any] ?? [:]
                return Slice(name: $0["name"] as? String ?? "", command: args["command"] as? String ?? "",
                             ts: $0["ts"] as? Int ?? -1, dur: $0["dur"] as? Int ?? -1, tid: $0["tid"] as? Int ?? -1,
                             args: args)
            }
        }

        /// The job whose command has `word` as one of its words.
        func job(_ word: String) -> [Slice] { jobs.filter { $0.command.split(separator: " ").contains { $0 == word } } }

        var counterNames: Set<String> {
            Set(events.filter { $0["ph"] as? String == "C" }.compactMap { $0["name"] as? String })
        }

        /// Jobs on one slot, in time order, never overlap; freezes lie inside their job.
        func checkTracks(sourceLocation: SourceLocation = #_sourceLocation) {
            for tid in Set(jobs.map(\.tid)) {
                let mine = jobs.filter { $0.tid == tid }.sorted { $0.ts < $1.ts }
                for (a, b) in zip(mine, mine.dropFirst()) {
                    #expect(a.ts + a.dur <= b.ts, "slot \(tid): \(a.name) [\(a.ts), +\(a.dur)] overlaps \(b.name) at \(b.ts)",
                            sourceLocation: sourceLocation)
                }
            }
            for f in events where f["cat"] as? String == "frozen" {
                let ts = f["ts"] as? Int ?? -1, dur = f["dur"] as? Int ?? -1, tid = f["tid"] as? Int ?? -1
                #expect(jobs.contains { $0.tid == tid && $0.ts <= ts && ts + dur <= $0.ts + $0.dur },
                        "a freeze outside its job: \(f)", sourceLocation: sourceLocation)
            }
            #expect(jobs.allSatisfy { $0.ts >= 0 && $0.dur >= 0 }, sourceLocation: sourceLocation)
        }
    }

    private static let counters: Set<String> = ["memory in use", "memory budget", "target", "tokens", "running",
                                                "memory PSI", "CPU PSI"]

    /// Every recipe that job.sh logged is one slice, lasting about as long as the log says: jobgov sees a job at its
    /// ticks (100 ms, 500 ms while all is calm), so the slice may start and end up to a tick later.
    private func checkAgainstLog(_ trace: Trace, _ log: JobLog, sourceLocation: SourceLocation = #_sourceLocation) {
        for i in log.intervals {
            let slices = trace.job(i.name)
            #expect(slices.count == 1, "\(i.name): \(slices.count) slices in \(trace.jobs.map(\.command))",
                    sourceLocation: sourceLocation)
            guard let slice = slices.first else { continue }
            let logged = Double(i.end - i.start) / 1e9
            let seen = Double(slice.dur) / 1e6
            #expect(seen >= logged - 0.7 && seen <= logged + 0.8,
                    "\(i.name): the slice lasts \(seen) s, the job \(logged) s", sourceLocation: sourceLocation)
            #expect(slice.args["pid"] as? Int ?? 0 > 0 && slice.args["peak_bytes"] as? Int ?? 0 > 0,
                    sourceLocation: sourceLocation)
        }
    }

    @Test("make: every recipe is a slice of about its length, jobs that ran together stack on slots, counters are there")
    func makeBuild() throws {
        try Clients.require(Clients.make44)
        let s = try Scratch()
        try s.write("Makefile", flatMakefile(count: 8, seconds: 1.5, prefix: "tj"))
        let r = try jobgov(["--no-swap", "--trace-events", s.path + "/build.json", Clients.make44, "-j4"], in: s,
                           env: ["XDG_STATE_HOME": s.path + "/state"])
        #expect(r.status == 0, "\(r.stderr)")
        let trace = try Trace(path: s.path + "/build.json")
        let log = JobLog(s.read("job.log"))
        #expect(log.count == 8)
        checkAgainstLog(trace, log)
        #expect(trace.jobs.count == 8, "\(trace.jobs.map(\.command))")
        trace.checkTracks()
        // As many slots as jobs seen at once, never more than -j; more than one where jobs ran together.
        let slots = Set(trace.jobs.map(\.tid)).count
        #expect(slots <= 4)
        if log.peak() > 1 { #expect(slots > 1, "jobs ran \(log.peak()) at once but all sit on one slot") }
        #expect(Self.counters.isSubset(of: trace.counterNames), "\(trace.counterNames)")
        #expect(trace.other["exit_status"] as? String == "0")
        #expect(trace.other["jobs"] as? Int == 8)
        let threads = trace.events.filter { $0["name"] as? String == "thread_name" }.count
        #expect(threads == slots + 1, "a name for each slot and for jobgov's own track")
    }

    @Test("ninja: every edge is a slice; the slots do not overlap")
    func ninjaBuild() throws {
        try Clients.require(Clients.ninja)
        let s = try Scratch()
        try s.write("build.ninja", flatNinja(count: 6, seconds: 1.0, prefix: "tn"))
        let r = try jobgov(["--no-swap", "--trace-events", s.path + "/build.json", Clients.ninja, "-j3"], in: s,
                           env: ["XDG_STATE_HOME": s.path + "/state"])
        #expect(r.status == 0, "\(r.stderr)")
        let trace = try Trace(path: s.path + "/build.json")
        let log = JobLog(s.read("job.log"))
        #expect(log.count == 6)
        checkAgainstLog(trace, log)
        #expect(trace.jobs.count == 6)
        trace.checkTracks()
        #expect(Self.counters.isSubset(of: trace.counterNames), "\(trace.counterNames)")
    }

    @Test("a failing build still writes the whole file, with its exit status and the failed recipe")
    func failedBuild() throws {
        try Clients.require(Clients.make44)
        let s = try Scratch()
        try s.write("Makefile", "all: ok bad\nok:\n\t@$(JOB) tok 1.5\nbad:\n\t@$(JOB) tbad 1; exit 3\n")
        let r = try jobgov(["--no-swap", "--trace-events", s.path + "/failed.json", Clients.make44, "-j2"], in: s,
                           env: ["XDG_STATE_HOME": s.path + "/state"])
        #expect(r.status == 2)
        let trace = try Trace(path: s.path + "/failed.json")
        #expect(trace.other["exit_status"] as? String == "2")
        #expect(trace.job("tbad").count == 1 && trace.job("tok").count == 1, "\(trace.jobs.map(\.command))")
        trace.checkTracks()
    }

    @Test("SIGINT or SIGTERM to jobgov mid-build: the build ends and the file is written, with the jobs that ran",
          arguments: [SIGINT, SIGTERM])
    func signalled(sig: Int32) throws {
        try Clients.require(Clients.make44)
        let s = try Scratch()
        try s.write("Makefile", flatMakefile(count: 8, seconds: 30, prefix: "ts"))
        let run = try Running(Clients.jobgov, ["--no-swap", "--trace-events", s.path + "/signalled.json", Clients.make44, "-j4"],
                              in: s, env: ["XDG_STATE_HOME": s.path + "/state"])
        waitUntil("jobs to start") { s.read("job.log").split(separator: "\n").count >= 4 }
        // A second of running, so that every started job has been seen by a tick.
        usleep(1_000_000)
        let started = s.read("job.log").split(separator: "\n").compactMap { $0.split(separator: " ").last.map(String.init) }
        #expect(kill(run.pid, sig) == 0)
        let r = run.finish(timeout: 20)
        #expect(r.status == 128 + sig, "\(r.stderr)")
        let trace = try Trace(path: s.path + "/signalled.json")
        #expect(trace.other["exit_status"] as? String == "\(128 + sig)")
        for name in started { #expect(trace.job(name).count == 1, "\(name) in \(trace.jobs.map(\.command))") }
        trace.checkTracks()
        #expect(Self.counters.isSubset(of: trace.counterNames))
    }

    @Test("trace-events in the config file writes the file; the flag wins over it")
    func configFile() throws {
        let s = try Scratch()
        try s.write("config", "# the timeline of every build\ntrace-events = from-config.json\n")
        let script = ["--", "/bin/sh", "-c", "sleep 1.2; true"]
        let r = try jobgov(["--config", s.path + "/config", "--no-swap"] + script, in: s,
                           env: ["XDG_STATE_HOME": s.path + "/state"])
        #expect(r.status == 0, "\(r.stderr)")
        let trace = try Trace(path: s.path + "/from-config.json")
        #expect(trace.job("1.2").count == 1, "the sleep the script ran: \(trace.jobs.map(\.command))")
        try FileManager.default.removeItem(atPath: s.path + "/from-config.json")
        let flag = try jobgov(["--config", s.path + "/config", "--no-swap", "--trace-events", s.path + "/flag.json"] + script,
                              in: s, env: ["XDG_STATE_HOME": s.path + "/state"])
        #expect(flag.status == 0)
        #expect(try Trace(path: s.path + "/flag.json").jobs.count == 1)
        #expect(!FileManager.default.fileExists(atPath: s.path + "/from-config.json"))
    }

    @Test("a trace-events file that cannot be written stops jobgov before the build; --fixed-jobs has no timeline")
    func mistakes() throws {
        let s = try Scratch()
        let r = try jobgov(["--trace-events", s.path + "/no/such/dir/t.json", "--", "/bin/sh", "-c", "touch ran"], in: s)
        #expect(r.status == 1, "\(r.stderr)")
        #expect(r.stderr.contains("trace-events"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: s.path + "/ran"))
        let fixed = try jobgov(["--fixed-jobs", "--trace-events", s.path + "/t.json", "--", "/bin/true"], in: s)
        #expect(fixed.status == 2 && fixed.stderr.contains("--trace-events needs the governor"), "\(fixed.stderr)")
    }
}
