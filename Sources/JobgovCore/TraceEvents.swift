/// The build as a timeline people can open (`--trace-events FILE`): Chrome's trace-event JSON, which Perfetto
/// (ui.perfetto.dev), chrome://tracing, Bazel's `--profile` and ninjatracing use.
///
/// It is kept from what the governor's loop already sees, tick by tick: the job table (a job is seen from the first
/// reading that finds it to the first that no longer does, so its start and end are those readings', within a tick:
/// 100 ms, 500 ms while all is calm, and a job shorter than a tick may never be seen), its freezes and page-outs, and
/// the loop's own counters. Pure: no clock and no files; the caller gives the times and writes the text.
///
/// In the file: one slice per job on a track per slot ("slot 1", "slot 2", ...: each job takes the lowest slot free
/// when it starts, so jobs that ran together stack, as in ninjatracing), named by its short command, with its full
/// command, pid, peak memory, frozen intervals, paged-out bytes and whether it was ended early, OOM-killed or run
/// again in its args; its freezes as slices nested in it, and page-outs, ends, OOM kills and re-runs as instant events
/// on its track; a "jobgov" track with the whole-build freezes; counters for memory in use, the budget, the hard
/// limit, the target, tokens out, running and frozen jobs, and memory and CPU PSI.
public struct BuildTimeline: Sendable {
    /// The loop's own view at one tick.
    public struct Sample: Sendable, Equatable {
        public var memoryUsedBytes: UInt64
        public var budgetBytes: UInt64
        public var hardLimitBytes: UInt64?
        public var targetJobs: Int
        public var tokensOut: Int
        public var runningJobs: Int
        public var frozenJobs: Int
        public var buildFrozen: Bool
        public var memoryPressure: Double
        public var cpuPressure: Double

        public init(memoryUsedBytes: UInt64, budgetBytes: UInt64, hardLimitBytes: UInt64? = nil, targetJobs: Int,
                    tokensOut: Int, runningJobs: Int, frozenJobs: Int, buildFrozen: Bool = false,
                    memoryPressure: Double = 0, cpuPressure: Double = 0) {
            self.memoryUsedBytes = memoryUsedBytes
            self.budgetBytes = budgetBytes
            self.hardLimitBytes = hardLimitBytes
            self.targetJobs = targetJobs
            self.tokensOut = tokensOut
            self.runningJobs = runningJobs
            self.frozenJobs = frozenJobs
            self.buildFrozen = buildFrozen
            self.memoryPressure = memoryPressure
            self.cpuPressure = cpuPressure
        }
    }

    /// What happened to a job beside running and being frozen.
    public enum Mark: String, Sendable {
        /// jobgov ended it early (while small) to run it again when memory allows.
        case endedEarly = "ended early to make room"
        /// The kernel's OOM killer ended a process of it.
        case oomKilled = "OOM kill"
        /// It was run again (jobgov-shell was told to go).
        case rerun = "run again"
        /// Its memory was paged out while it was frozen.
        case pagedOut = "paged out"
    }

    struct Record: Sendable {
        var id: JobID
        var command: String
        var start: Double
        var end: Double?
        var peakBytes: UInt64
        var frozen: [(from: Double, to: Double?)] = []
        var pagedOutBytes: UInt64 = 0
        var lastPagedOut: UInt64 = 0
        var marks: [(mark: Mark, at: Double, bytes: UInt64)] = []
        /// Where it compiled, as last seen (distcc, icecc, sccache: see `RemoteEvidence`).
        var remote = RemoteEvidence()
        func has(_ m: Mark) -> Bool { marks.contains { $0.mark == m } }
    }

    /// A counter track: its name, the name of its value, and its changes (time, value).
    struct Counter: Sendable {
        var name: String
        var unit: String
        var points: [(t: Double, value: Double)] = []
        /// A counter is a step function: a value holds until the next one, so only changes are kept.
        mutating func note(_ t: Double, _ value: Double) {
            if points.last?.value != value { points.append((t, value)) }
        }
    }

    public let title: String
    public let pid: Int32
    private var running: [JobID: Record] = [:]
    private var ended: [Record] = []
    private var buildFreezes: [(from: Double, to: Double?)] = []
    private var counters: [Counter] = [
        Counter(name: "memory in use", unit: "MiB"), Counter(name: "memory budget", unit: "MiB"),
        Counter(name: "hard limit", unit: "MiB"), Counter(name: "target", unit: "jobs"),
        Counter(name: "tokens", unit: "out"), Counter(name: "running", unit: "jobs"),
        Counter(name: "frozen", unit: "jobs"), Counter(name: "memory PSI", unit: "some avg10 %"),
        Counter(name: "CPU PSI", unit: "some avg10 %"),
    ]
    private var lastTime: Double = 0

    /// - Parameters:
    ///   - title: the process track's name, e.g. `jobgov make -j16`.
    ///   - pid: the pid the events are filed under (jobgov's own).
    public init(title: String, pid: Int32) {
        self.title = title
        self.pid = pid
    }

    /// Jobs seen so far (running and ended).
    public var jobCount: Int { running.count + ended.count }

    /// One tick: the table's jobs now, the jobs that ended at this reading (to take their final peak), and the loop's
    /// counters (nil: no new reading, as at the build's end).
    public mutating func observe(now t: Double, jobs: some Sequence<Job>, ended finished: [FinishedJob],
                                 sample: Sample?) {
        lastTime = max(lastTime, t)
        var seen = Set<JobID>()
        for job in jobs {
            seen.insert(job.id)
            var r = running[job.id] ?? Record(id: job.id, command: job.command, start: job.startedAt, peakBytes: 0)
            r.peakBytes = max(r.peakBytes, job.peakBytes)
            r.remote = job.remote
            if job.frozen, r.frozen.last.map({ $0.to != nil }) ?? true {
                r.frozen.append((job.frozenSince ?? t, nil))
            } else if !job.frozen, let last = r.frozen.last, last.to == nil {
                r.frozen[r.frozen.count - 1].to = t
            }
            // A page-out shows as the job's pagedOutBytes going from nothing to what it held.
            if job.pagedOutBytes > 0 && r.lastPagedOut == 0 {
                r.pagedOutBytes += job.pagedOutBytes
                r.marks.append((.pagedOut, t, job.pagedOutBytes))
            }
            r.lastPagedOut = job.pagedOutBytes
            running[job.id] = r
        }
        for id in running.keys where !seen.contains(id) {
            var r = running.removeValue(forKey: id)!
            r.end = t
            // Its last peak (an exit event may have raised it since the last reading).
            if let f = finished.first(where: { $0.command == r.command && $0.startedAt == r.start }) {
                r.peakBytes = max(r.peakBytes, f.peakBytes)
            }
            ended.append(r)
        }
        guard let s = sample else { return }
        if s.buildFrozen, buildFreezes.last.map({ $0.to != nil }) ?? true { buildFreezes.append((t, nil)) }
        else if !s.buildFrozen, let last = buildFreezes.last, last.to == nil { buildFreezes[buildFreezes.count - 1].to = t }
        let values: [Double?] = [
            mib(s.memoryUsedBytes), mib(s.budgetBytes), s.hardLimitBytes.map(mib), Double(s.targetJobs),
            Double(s.tokensOut), Double(s.runningJobs), Double(s.frozenJobs), s.memoryPressure, s.cpuPressure,
        ]
        for (k, v) in values.enumerated() {
            if let v, v.isFinite { counters[k].note(t, v) }
        }
    }

    /// Something happened to the job whose root is `pid` (the running one, else the latest that ended).
    public mutating func mark(pid: Int32, _ mark: Mark, at t: Double) {
        if let id = running.keys.first(where: { $0.pid == pid }) {
            running[id]!.marks.append((mark, t, 0))
        } else if let k = ended.lastIndex(where: { $0.id.pid == pid }) {
            ended[k].marks.append((mark, min(t, ended[k].end ?? t), 0))
        }
    }

    /// The same for a job that has ended, known by its command and start (an OOM victim named after it was gone).
    public mutating func mark(command: String, startedAt: Double, _ mark: Mark, at t: Double) {
        if let k = ended.lastIndex(where: { $0.command == command && $0.start == startedAt }) {
            ended[k].marks.append((mark, min(t, ended[k].end ?? t), 0))
        } else if let id = running.first(where: { $0.value.command == command && $0.value.start == startedAt })?.key {
            running[id]!.marks.append((mark, t, 0))
        }
    }

    // MARK: the file

    /// The timeline as Chrome trace-event JSON, ending at `end` (jobs still running then end there and say so).
    /// `otherData` goes into the object's `otherData` (strings), e.g. the command and the exit status.
    public func traceEventsJSON(end: Double, otherData: [(String, String)] = []) -> String {
        let end = max(end, lastTime)
        var jobs = ended
        for var r in running.values {
            r.end = nil
            jobs.append(r)
        }
        jobs.sort { ($0.start, $0.id.pid) < ($1.start, $1.id.pid) }
        let slots = Self.assignSlots(jobs.map { ($0.start, $0.end ?? end) })
        let slotCount = (slots.max() ?? -1) + 1

        var events: [String] = []
        func meta(_ name: String, tid: Int, _ args: String) {
            events.append("{\"name\":\(q(name)),\"ph\":\"M\",\"pid\":\(pid),\"tid\":\(tid),\"args\":\(args)}")
        }
        meta("process_name", tid: 0, "{\"name\":\(q(title))}")
        meta("process_sort_index", tid: 0, "{\"sort_index\":0}")
        meta("thread_name", tid: 0, "{\"name\":\"jobgov\"}")
        meta("thread_sort_index", tid: 0, "{\"sort_index\":0}")
        for k in 0..<slotCount {
            meta("thread_name", tid: k + 1, "{\"name\":\"slot \(k + 1)\"}")
            meta("thread_sort_index", tid: k + 1, "{\"sort_index\":\(k + 1)}")
        }
        for (r, slot) in zip(jobs, slots) {
            let tid = slot + 1
            let stop = r.end ?? end
            var args = JSONObjectWriter()
            args.add("command", r.command)
            args.add("pid", Int(r.id.pid))
            args.add("slot", tid)
            args.add("peak_bytes", Int(min(r.peakBytes, UInt64(Int.max))))
            args.add("peak_mib", mib(r.peakBytes))
            let frozen = r.frozen.map { (max($0.from, r.start), min($0.to ?? stop, stop)) }
            args.add("frozen_seconds", frozen.reduce(0) { $0 + max(0, $1.1 - $1.0) })
            args.add("frozen_intervals", strings: frozen.map { "\(seconds($0.0))-\(seconds($0.1)) s" })
            args.add("paged_out_bytes", Int(min(r.pagedOutBytes, UInt64(Int.max))))
            args.add("ended_early", r.has(.endedEarly))
            args.add("oom_killed", r.has(.oomKilled))
            args.add("rerun", r.has(.rerun))
            if let client = r.remote.client, r.remote.wasRemote {
                args.add("remote", r.remote.isRemote)
                args.add("remote_client", client.rawValue)
                args.add("fell_back", r.remote.fellBack)
            }
            if r.end == nil { args.add("running_at_exit", true) }
            let cname = r.has(.oomKilled) ? ",\"cname\":\"terrible\"" : r.remote.isRemote ? ",\"cname\":\"good\"" : ""
            let cat = r.remote.isRemote ? "job,remote" : r.remote.wasRemote ? "job,fell back" : "job"
            events.append("{\"name\":\(q(Self.shortName(r.command))),\"cat\":\"\(cat)\",\"ph\":\"X\",\"ts\":\(us(r.start)),"
                          + "\"dur\":\(us(stop) - us(r.start)),\"pid\":\(pid),\"tid\":\(tid)\(cname),\"args\":\(args.text)}")
            for (from, to) in frozen where to >= from {
                events.append("{\"name\":\"frozen\",\"cat\":\"frozen\",\"ph\":\"X\",\"ts\":\(us(from)),"
                              + "\"dur\":\(us(to) - us(from)),\"pid\":\(pid),\"tid\":\(tid),\"cname\":\"grey\","
                              + "\"args\":{\"pid\":\(r.id.pid)}}")
            }
            for m in r.marks {
                let at = min(max(m.at, r.start), stop)
                let name = m.mark == .pagedOut ? "paged out \(MemorySize.format(m.bytes))" : m.mark.rawValue
                events.append("{\"name\":\(q(name)),\"cat\":\"job\",\"ph\":\"i\",\"s\":\"t\",\"ts\":\(us(at)),"
                              + "\"pid\":\(pid),\"tid\":\(tid),\"args\":{\"pid\":\(r.id.pid),\"bytes\":\(m.bytes)}}")
            }
        }
        for f in buildFreezes {
            let to = f.to ?? end
            events.append("{\"name\":\"whole build frozen\",\"cat\":\"build\",\"ph\":\"X\",\"ts\":\(us(f.from)),"
                          + "\"dur\":\(us(to) - us(f.from)),\"pid\":\(pid),\"tid\":0,\"cname\":\"bad\",\"args\":{}}")
        }
        // Each counter runs to the end of the build: the job counts at what is left then, the others at their last value.
        let stillRunning = running.values.filter { $0.frozen.last.map { $0.to != nil } ?? true }.count
        for c in counters where !c.points.isEmpty {
            var points = c.points
            let closing = c.name == "running" ? Double(stillRunning)
                : c.name == "frozen" ? Double(running.count - stillRunning) : points[points.count - 1].value
            if points[points.count - 1].t < end { points.append((end, closing)) }
            for p in points {
                events.append("{\"name\":\(q(c.name)),\"ph\":\"C\",\"ts\":\(us(p.t)),\"pid\":\(pid),"
                              + "\"args\":{\(q(c.unit)):\(number(p.value))}}")
            }
        }
        var other = JSONObjectWriter()
        for (k, v) in otherData { other.add(k, v) }
        other.add("jobs", jobs.count)
        other.add("slots", slotCount)
        other.add("seconds", end)
        return "{\"displayTimeUnit\":\"ms\",\"otherData\":\(other.text),\"traceEvents\":[\n"
            + events.joined(separator: ",\n") + "\n]}\n"
    }

    /// Each interval (sorted by start) takes the lowest slot that is free at its start (a slot is free again at the
    /// instant its job ended), so intervals on one slot never overlap.
    public static func assignSlots(_ intervals: [(start: Double, end: Double)]) -> [Int] {
        var busyUntil: [Double] = []
        var out: [Int] = []
        for (start, end) in intervals {
            if let k = busyUntil.firstIndex(where: { $0 <= start }) {
                busyUntil[k] = max(end, start)
                out.append(k)
            } else {
                busyUntil.append(max(end, start))
                out.append(busyUntil.count - 1)
            }
        }
        return out
    }

    /// A job's slice name: its command with the program's directory left out, cut at 60 characters.
    public static func shortName(_ command: String) -> String {
        var words = command.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        if let first = words.first, let slash = first.lastIndex(of: "/"), first.index(after: slash) < first.endIndex {
            words[0] = String(first[first.index(after: slash)...])
        }
        let text = words.joined(separator: " ")
        return text.count > 60 ? String(text.prefix(59)) + "…" : text
    }

    private func q(_ s: String) -> String { JSONObjectWriter.quote(s) }
    private func us(_ t: Double) -> Int { t.isFinite ? Int((max(0, t) * 1e6).rounded()) : 0 }
    private func seconds(_ t: Double) -> String { number((t * 1000).rounded() / 1000) }
}

private func mib(_ bytes: UInt64) -> Double { (Double(bytes) / 1_048_576 * 10).rounded() / 10 }

/// A JSON number (never nan or inf).
private func number(_ x: Double) -> String {
    guard x.isFinite else { return "0" }
    if x == x.rounded(), abs(x) < 1e15 { return String(Int(x)) }
    return "\(x)"
}
