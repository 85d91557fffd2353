/// A job the history says starts soon: its peak (corrected as the history is) and, when known, how long it ran and
/// how its memory grew.
public struct UpcomingJob: Sendable, Equatable {
    public var peakBytes: UInt64
    public var runSeconds: Double?
    public var shape: MemoryShape?

    public init(peakBytes: UInt64, runSeconds: Double? = nil, shape: MemoryShape? = nil) {
        self.peakBytes = peakBytes
        self.runSeconds = runSeconds
        self.shape = shape
    }
}

/// Predicts how much memory a job will need at its peak.
///
/// Sources, best first: the peak the same command reached in an earlier build (the history), the peaks of this
/// build's finished jobs, and a prior. For the job the jobserver will start next, which jobgov cannot know, it
/// uses the history's jobs that have not run yet in this build (so the links at the end of a build are foreseen),
/// else this build's finished jobs.
public struct MemoryModel: Sendable {
    /// Command → peak bytes, from earlier builds of the same command in the same directory.
    public private(set) var history: [String: UInt64]
    /// Peaks of this build's finished jobs, by command.
    public private(set) var measured: [String: UInt64] = [:]
    /// How long each command ran (frozen time not counted), seconds: from the history, then from this build.
    public private(set) var historySeconds: [String: Double]
    public private(set) var measuredSeconds: [String: Double] = [:]
    /// How each command's memory grew over its run: from the history, then from this build.
    public private(set) var historyShapes: [String: MemoryShape]
    public private(set) var measuredShapes: [String: MemoryShape] = [:]
    /// The order commands started in, in the earlier build and in this one: builds start their jobs in much the
    /// same order each time, so the history tells which jobs come next.
    public private(set) var historyOrder: [String]
    private var historyIndex: [String: Int]
    public private(set) var startOrder: [String] = []
    private var finishedPeaks: [UInt64] = []
    /// Peaks by kind of command (`CommandKind`): a command never seen is predicted from others of its kind.
    private var historyKinds = KindPeaks()
    private var measuredKinds = KindPeaks()
    private var kinds: [String: String] = [:]
    private var finishedSeconds: [Double] = []
    private var finishedShapes: [MemoryShape] = []
    private var started: Set<String> = []
    /// The furthest point of the earlier build's order this build has reached.
    private var position = -1
    /// What a job is assumed to need before anything was measured.
    public let prior: UInt64

    /// A prior of the budget over twice the CPUs (a C++ compile needs 0.5–2 GB, a 16 GB laptop has 8–16 CPUs),
    /// between 64 MiB and 2 GiB.
    public static func defaultPrior(budget: UInt64, cpus: Int) -> UInt64 {
        min(max(budget / UInt64(max(1, 2 * cpus)), 64 << 20), 2 << 30)
    }

    public init(prior: UInt64, history: [String: UInt64] = [:], historySeconds: [String: Double] = [:],
                historyOrder: [String] = [], historyShapes: [String: MemoryShape] = [:], historyDoubt: Double = 1) {
        self.prior = prior
        self.historyDoubt = historyDoubt
        self.historyShapes = historyShapes
        self.history = history
        self.historySeconds = historySeconds
        self.historyOrder = historyOrder
        var index: [String: Int] = [:]
        for (i, command) in historyOrder.enumerated() where index[command] == nil { index[command] = i }
        self.historyIndex = index
        for (command, peak) in history { historyKinds.add(CommandKind.of(command), peak) }
        refreshEstimates()
    }

    public var finishedCount: Int { finishedPeaks.count }

    public mutating func noteStarted(_ command: String) {
        guard started.insert(command).inserted else { return }
        startOrder.append(command)
        kinds[command] = CommandKind.of(command)
        if let i = historyIndex[command] { position = max(position, i) }
        let wasInStep = inStep
        inStep = history.isEmpty || history[command] != nil
        if history[command] != nil || wasInStep != inStep { refreshEstimates() }
    }

    /// Whether the job started last was one the history knew. After one it did not know (a file added since, or a
    /// history of another tree), the history's next jobs are not taken as the next ones: files added together
    /// tend to build together, and the history's next jobs may be gone from this tree altogether.
    public private(set) var inStep = true

    /// The peaks of the next jobs to start, in the order the earlier build started them: the history's jobs not
    /// started yet, from a little before the furthest point this build has reached (parallel jobs start in a
    /// slightly different order each time). Jobs well before that point were passed over: not part of this build
    /// (an incremental one), so not coming.
    public func upcomingPeaks(count: Int) -> [UInt64] { upcomingJobs(count: count).map(\.peakBytes) }

    /// The next jobs to start, as `upcomingPeaks` finds them, with how long each ran and how its memory grew.
    public func upcomingJobs(count: Int) -> [UpcomingJob] {
        guard !historyOrder.isEmpty, inStep else { return [] }
        var out: [UpcomingJob] = []
        // Every tick calls this: stop as soon as enough are found, not at the end of a long history.
        for command in historyOrder[max(0, position - Self.reorderWindow)...] {
            guard out.count < count else { break }
            if !started.contains(command), let peak = history[command] {
                let seconds = historySeconds[command]
                out.append(UpcomingJob(peakBytes: corrected(peak), runSeconds: seconds,
                                       shape: seconds == nil ? nil : historyShapes[command]))
            }
        }
        return out
    }

    public static let reorderWindow = 8

    public mutating func record(_ job: FinishedJob) {
        finishedPeaks.append(job.peakBytes)
        finishedSeconds.append(max(0, job.seconds - job.frozenSeconds))
        if let shape = job.shape { finishedShapes.append(shape) }
        typicalRun = measuredTypicalRun()
        if let h = history[job.command], h > 0 {
            if !confirmedRunning.contains(job.command) { historyConfirmations += 1 }
            let ratio = Double(job.peakBytes) / Double(h)
            historyRatios[job.command] = max(historyRatios[job.command] ?? 0, ratio)
            finishedRatios.append(ratio)
            if Self.unrelated(finishedRatios) { disownHistory() }
        }
        measured[job.command] = max(measured[job.command] ?? 0, job.peakBytes)
        measuredKinds.add(kind(of: job.command), job.peakBytes)
        let seconds = max(0, job.seconds - job.frozenSeconds)
        measuredSeconds[job.command] = max(measuredSeconds[job.command] ?? 0, seconds)
        if let shape = job.shape {
            measuredShapes[job.command] = measuredShapes[job.command].map { $0.merged(with: shape) } ?? shape
        }
        refreshEstimates()
    }

    /// How a job running `command` grew before; nil when not known (it is then planned at its peak throughout).
    public func knownShape(of command: String) -> MemoryShape? {
        measuredShapes[command] ?? historyShapes[command]
    }

    /// How long a job running `command` ran before (frozen time not counted), in this build or an earlier one; nil
    /// when it never ran. A typical duration is not offered: the first jobs to finish are the short ones, and a
    /// plan built on them would expect every job to end soon.
    public func knownSeconds(of command: String) -> Double? {
        measuredSeconds[command] ?? historySeconds[command]
    }

    /// The peak expected of a running job that runs `command`: its own measured peak, else the typical job's
    /// (a sum over several jobs is better predicted by the mean than by each job's 90th percentile; the
    /// governor adds one margin for the surprise, and a job that grows beyond it is seen growing).
    public func predictedPeak(of command: String) -> UInt64 {
        if let m = measured[command] { return m }
        if let h = history[command] { return corrected(h) }
        // A command never seen: the typical job, or its own kind's where that is higher (a link after compiles).
        let kind = kind(of: command)
        let ofKind = measuredKinds.mean(kind) ?? historyKinds.mean(kind).map(corrected)
        return max(typicalJobPeak, ofKind ?? 0)
    }

    /// A command of a kind no job of this build or the history has shown, while other kinds are known: a new
    /// phase of the build (the first link after the compiles) whose memory nothing here predicts.
    public func isNewKind(_ command: String) -> Bool {
        guard !measuredKinds.isEmpty || !historyKinds.isEmpty else { return false }
        let kind = kind(of: command)
        return measuredKinds.mean(kind) == nil && historyKinds.mean(kind) == nil
    }

    private func kind(of command: String) -> String { kinds[command] ?? CommandKind.of(command) }

    /// How much bigger than the history says this build's jobs turn out (a changed source, other flags, a history
    /// from another tree): measured peak over the history's, for every job of this build the history knew, running
    /// ones included once they pass it. The history's predictions are scaled by the third quartile of those ratios
    /// (by the largest while there are fewer than four), never below 1: a history that is wrong one way is found
    /// out by the first jobs, and the rest of the build is planned with it corrected.
    public private(set) var historyRatios: [String: Double] = [:]
    public private(set) var historyCorrection: Double = 1

    /// Where a wrong admission cannot be undone (no swap, no re-run), the history is not taken at its word before
    /// this build has confirmed it: until a job it knew has finished, or has run past the point where the history
    /// says it peaked while holding about that peak, its peaks count `historyDoubt` times (or more, where a running
    /// job already outgrew them). A history from another tree, or from before a change that doubled the jobs'
    /// memory, would otherwise start a first wave that cannot finish: nothing frozen gives memory back there.
    public let historyDoubt: Double
    private var historyConfirmations = 0
    private var confirmedRunning: Set<String> = []
    static let confirmationsNeeded = 1

    private func computedCorrection() -> Double {
        let r = historyRatios.values.sorted()
        let largest = r.last ?? 1
        guard historyConfirmations >= Self.confirmationsNeeded else { return min(4, max(1, historyDoubt, largest)) }
        let q = r.count < 4 ? largest : r[(r.count * 3) / 4]
        // Downwards only on the word of several finished jobs (a running one may not have peaked yet), and not
        // while any job outgrew the history.
        let floor = finishedRatios.count >= Self.ratiosToJudge && largest <= 1 ? 1.0 / 16 : 1
        return min(4, max(floor, q))
    }

    /// Measured peak over the history's, for each finished job the history knew.
    private var finishedRatios: [Double] = []
    static let ratiosToJudge = 4

    /// Whether the history's peaks are of another build altogether (another tree or configuration under the same
    /// directory and command): among the finished jobs it knew, the third quartile of measured over recorded is
    /// more than twice the first. A history that is off by one factor (a change that doubled every job) keeps its
    /// order and shapes and is scaled; one that is off by unrelated factors predicts worse than no history.
    static func unrelated(_ ratios: [Double]) -> Bool {
        guard ratios.count >= ratiosToJudge else { return false }
        let r = ratios.sorted()
        return r[(r.count * 3) / 4] > 2 * r[r.count / 4]
    }

    /// True once the history was found to be of another build and dropped: the rest of the build runs as a first
    /// build does, on what it measures itself.
    public private(set) var historyDisowned = false

    private mutating func disownHistory() {
        historyDisowned = true
        history = [:]
        historySeconds = [:]
        historyShapes = [:]
        historyOrder = []
        historyIndex = [:]
        historyKinds = KindPeaks()
        historyRatios = [:]
        finishedRatios = []
        position = -1
    }

    func corrected(_ bytes: UInt64) -> UInt64 { UInt64(Double(bytes) * historyCorrection) }

    /// A running job of `command` holds `bytes` now: if that is past what the history said, the history is wrong
    /// for this build by at least that much.
    /// A job that has run past the moment the history says it peaked, holding about that peak and not more,
    /// confirms the history as a finished job does.
    public mutating func noteRunning(_ command: String, bytes: UInt64, ranSeconds: Double? = nil) {
        guard let h = history[command], h > 0 else { return }
        guard bytes > h + h / 16 else {
            // Once confirmed, a running job has nothing more to tell (this runs every tick for every job).
            if historyConfirmations < Self.confirmationsNeeded, let ran = ranSeconds, let run = historySeconds[command], let shape = historyShapes[command],
               ran >= shape.reach[shape.reach.count - 1] * run, bytes >= h - h / 4,
               confirmedRunning.insert(command).inserted {
                historyConfirmations += 1
                refreshEstimates()
            }
            return
        }
        let ratio = Double(bytes) / Double(h)
        guard ratio > (historyRatios[command] ?? 0) * 1.01 else { return }
        historyRatios[command] = ratio
        refreshEstimates()
    }

    /// Whether `command`'s peak was measured (in this build or an earlier one), not guessed.
    public func knowsPeak(of command: String) -> Bool { measured[command] != nil || history[command] != nil }

    /// How this build's jobs typically ran, for a job whose own command never ran (nil before a few jobs ended):
    /// the median duration of the finished jobs (frozen time not counted) and, for each level of the shape, the
    /// earliest quarter of the reach times. Only for plans whose mistakes can be undone: the first jobs to end are
    /// the short ones, so it errs towards "ends soon".
    public var typicalJob: UpcomingJob? {
        typicalRun.map { UpcomingJob(peakBytes: typicalJobPeak, runSeconds: $0.seconds, shape: $0.shape) }
    }
    static let typicalAfter = 3

    /// The typical job's duration and shape change only when a job ends: kept, not sorted again every tick.
    private var typicalRun: (seconds: Double, shape: MemoryShape)?

    private func measuredTypicalRun() -> (seconds: Double, shape: MemoryShape)? {
        guard finishedSeconds.count >= Self.typicalAfter, finishedShapes.count >= Self.typicalAfter else { return nil }
        let seconds = finishedSeconds.sorted()[finishedSeconds.count / 2]
        let reach = (0..<MemoryShape.levels.count).map { level in
            finishedShapes.map { $0.reach[level] }.sorted()[finishedShapes.count / 4]
        }
        guard seconds > 0, let shape = MemoryShape(reach: reach) else { return nil }
        return (seconds, shape)
    }

    /// The mean peak of the jobs still to come (from the history) or of this build's finished jobs, else the prior.
    public var typicalJobPeak: UInt64 { estimates.typical }

    /// The next and typical job's peaks change only when a job starts or ends, or the history's correction moves;
    /// the governor asks every tick, so they are kept, not recomputed (the pending set is a filter over the whole
    /// history).
    private var estimates = (next: UInt64(0), typical: UInt64(0))

    private mutating func refreshEstimates() {
        historyCorrection = computedCorrection()
        let pending = history.filter { !started.contains($0.key) }.map(\.value)
        let next: UInt64
        if !pending.isEmpty {
            next = corrected(Self.percentile90(pending))
        } else {
            switch finishedPeaks.count {
            case 0: next = history.isEmpty ? prior : Self.percentile90(Array(history.values))
            case 1..<5: next = max(finishedPeaks.max()! + finishedPeaks.max()! / 4, prior / 2)
            default: next = Self.percentile90(finishedPeaks) + Self.percentile90(finishedPeaks) / 10
            }
        }
        let typical: UInt64
        if !inStep && finishedPeaks.count >= 5 { typical = Self.mean(finishedPeaks) }
        else if !pending.isEmpty { typical = corrected(Self.mean(pending)) }
        else if finishedPeaks.count >= 5 { typical = Self.mean(finishedPeaks) }
        else { typical = next }
        estimates = (next, typical)
    }

    static func mean(_ values: [UInt64]) -> UInt64 {
        values.reduce(0, +) / UInt64(max(1, values.count))
    }

    /// The peak expected of the next job to start: the 90th percentile of the history's jobs not yet started,
    /// else of this build's finished jobs (with a margin while there are few), else the prior.
    public var nextJobPeak: UInt64 { estimates.next }

    /// The history to keep for the next build: this build's measured peaks over the older ones.
    public var updatedHistory: [String: UInt64] { history.merging(measured) { _, new in new } }
    public var updatedHistorySeconds: [String: Double] { historySeconds.merging(measuredSeconds) { _, new in new } }
    public var updatedHistoryShapes: [String: MemoryShape] { historyShapes.merging(measuredShapes) { _, new in new } }
    /// This build's order, then the earlier build's commands that did not run this time.
    public var updatedHistoryOrder: [String] { startOrder + historyOrder.filter { !started.contains($0) } }

    static func percentile90(_ values: [UInt64]) -> UInt64 {
        let sorted = values.sorted()
        return sorted[min(sorted.count - 1, (sorted.count * 9) / 10)]
    }
}

/// The history file's format: one `PEAK<TAB>MILLISECONDS<TAB>s:SHAPE<TAB>COMMAND` line per command, in the order
/// the commands started, with `\`, tab and newline escaped in the command (SHAPE: `MemoryShape`'s five reach shares).
/// Lines without the shape or the duration (older jobgov) are read too.
public enum MemoryHistoryFormat {
    public struct Contents: Sendable, Equatable {
        public var peaks: [String: UInt64] = [:]
        public var seconds: [String: Double] = [:]
        /// Commands in the order they started.
        public var order: [String] = []
        public var shapes: [String: MemoryShape] = [:]
        public init() {}
    }

    public static func encode(_ history: [String: UInt64], seconds: [String: Double] = [:], order: [String] = [],
                              shapes: [String: MemoryShape] = [:]) -> String {
        let ordered = order.filter { history[$0] != nil }
        let listed = Set(ordered)
        let rest = history.keys.filter { !listed.contains($0) }.sorted()
        return (ordered + rest).map { command in
            let duration = seconds[command].map { "\(Int(($0 * 1000).rounded()))\t" } ?? ""
            let shape = seconds[command] != nil ? shapes[command].map { "s:\($0)\t" } ?? "" : ""
            return "\(history[command]!)\t\(duration)\(shape)\(escape(command))\n"
        }.joined()
    }

    /// Lines that do not parse are skipped: a damaged history costs predictions, not the build.
    public static func decode(_ text: String) -> [String: UInt64] { decodeAll(text).peaks }

    public static func decodeAll(_ text: String) -> Contents {
        var out = Contents()
        for line in text.split(separator: "\n") {
            guard let tab = line.firstIndex(of: "\t"), let peak = UInt64(line[..<tab]) else { continue }
            var rest = line[line.index(after: tab)...]
            var duration: Double?
            // Commands never hold a raw tab (it is escaped), so a second tab means a duration field.
            if let second = rest.firstIndex(of: "\t"), let ms = UInt64(rest[..<second]) {
                duration = Double(ms) / 1000
                rest = rest[rest.index(after: second)...]
            }
            var shape: MemoryShape?
            if duration != nil, rest.hasPrefix("s:"), let third = rest.firstIndex(of: "\t") {
                shape = MemoryShape(parsing: rest[rest.index(rest.startIndex, offsetBy: 2)..<third])
                rest = rest[rest.index(after: third)...]
            }
            let command = unescape(rest)
            if out.peaks[command] == nil { out.order.append(command) }
            out.peaks[command] = peak
            if let duration { out.seconds[command] = duration }
            if let shape { out.shapes[command] = shape }
        }
        return out
    }

    static func escape(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "\\": out += "\\\\"
            case "\t": out += "\\t"
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out
    }

    static func unescape(_ s: Substring) -> String {
        var out = ""
        var escaped = false
        for c in s {
            if escaped {
                out.append(c == "t" ? "\t" : c == "n" ? "\n" : c)
                escaped = false
            } else if c == "\\" {
                escaped = true
            } else {
                out.append(c)
            }
        }
        return out
    }

    /// A stable name for a build's history file: FNV-1a of the directory and the command (without -j).
    public static func fileName(directory: String, command: [String]) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in (directory + "\u{0}" + command.joined(separator: "\u{0}")).utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex + ".tsv"
    }
}
