/// Distributed compiles (distcc, icecream, sccache): which jobs compile on a helper machine, and when one of them
/// falls back to compiling here.
///
/// A remote job still runs a little locally (distcc and icecc preprocess here: `cc1 -E`), and that is measured and
/// counted as it is; what it does not do is the compile itself, so its memory is not a compile's. A job is remote by
/// its command (a client named in it, a masquerade directory such as `/usr/lib/distcc/gcc`, `CCACHE_PREFIX=distcc`)
/// or by what it does (a compiler driver that runs another compiler driver, as a masquerading client does to
/// preprocess, and then sits with no local compiler while a helper works). It turns local, for good, once its tree
/// runs a compiler proper that is not preprocessing, an assembler or a linker, or grows past what a remote job holds.
public enum RemoteClient: String, Sendable, Equatable, CaseIterable {
    case distcc
    case icecc
    case sccache
    /// A client behind a compiler's name (`/usr/lib/distcc/gcc` found through PATH), known by what it does.
    case wrapper = "compiler wrapper"

    /// The client a command runs, by its words: `distcc gcc -c a.c`, `CC="distcc gcc"`, `/usr/lib/icecc/bin/g++`,
    /// `CCACHE_PREFIX=distcc ccache gcc`, `sh -c 'cd x && icecc gcc ...'`. Nil for a command that names none.
    public static func named(in command: String) -> RemoteClient? {
        let separators: Set<Character> = [" ", "\t", "\n", ";", "&", "|", "(", ")", "\"", "'", "`", "="]
        for word in command.split(whereSeparator: { separators.contains($0) }) {
            let path = word.split(separator: "/")
            guard let base = path.last else { continue }
            switch base {
            case "distcc", "pump": return .distcc
            case "icecc": return .icecc
            case "sccache": return .sccache
            default: break
            }
            // Masquerade directories: `/usr/lib/distcc/gcc`, `/usr/lib/icecc/bin/gcc`, `/usr/lib64/icecc/bin/cc`.
            if path.count >= 2, path.dropLast().contains(where: { $0 == "distcc" }) { return .distcc }
            if path.count >= 2, path.dropLast().contains(where: { $0 == "icecc" }) { return .icecc }
        }
        return nil
    }

    /// Short names (`comm`) of client processes.
    static func named(process name: String) -> RemoteClient? {
        switch name {
        case "distcc", "pump": .distcc
        case "icecc": .icecc
        case "sccache": .sccache
        default: nil
        }
    }
}

/// What a job's process tree says about where it compiles, kept from reading to reading.
public struct RemoteEvidence: Sendable, Equatable {
    /// The client it runs, when known.
    public var client: RemoteClient?
    /// A masquerading client: the compiler driver that ran another driver (its pid), and how many readings in a row
    /// it has sat with no process below it (waiting for a helper).
    var wrapperPID: Int32?
    var idleReadings = 0
    /// It ran a compile, assembler or linker here, or outgrew a remote job: local from then on.
    public private(set) var fellBack = false

    public init(client: RemoteClient? = nil) {
        self.client = client
        wasRemote = isRemote
    }

    /// Compiles elsewhere now.
    public var isRemote: Bool {
        guard !fellBack, let client else { return false }
        return client != .wrapper || idleReadings >= 2
    }

    /// It was taken for remote at some reading (a job that fell back included).
    public private(set) var wasRemote = false

    /// Compiler drivers: a driver that starts another driver is a wrapper (distcc, icecc, ccache behind the name).
    static let drivers: Set<String> = ["cc", "c++", "gcc", "g++", "clang", "clang++", "c89-gcc", "c99-gcc"]
    /// Compilers proper (GCC's back ends); clang's is `clang -cc1`, told by its arguments.
    static let compilersProper: Set<String> = ["cc1", "cc1plus", "cc1obj", "cc1objplus", "f951", "lto1", "d21",
                                               "go1", "gnat1", "jc1"]
    /// Processes that do local work a remote compile never does here.
    static let localWork: Set<String> = ["as", "collect2", "ld", "ld.bfd", "ld.gold", "ld.lld", "lld", "mold"]

    static func isDriver(_ name: String) -> Bool {
        drivers.contains(name) || (name.hasPrefix("gcc-") || name.hasPrefix("g++-") || name.hasPrefix("clang-"))
            && name.last?.isNumber == true
    }

    /// A process that is a compiler proper (whose arguments tell whether it only preprocesses).
    static func isCompilerProper(_ p: ProcessObservation) -> Bool {
        compilersProper.contains(p.name) || p.name.hasPrefix("clang")
    }

    /// Whether a compiler proper's arguments are those of a compile (not `-E`, the preprocessing a client does
    /// here). A clang process is a compiler proper only with `-cc1`.
    static func compiles(name: String, arguments: [String]) -> Bool {
        if name.hasPrefix("clang") && !arguments.contains("-cc1") { return false }
        return !arguments.contains("-E")
    }

    /// One reading of the job's processes (its root first). `compiling` answers, for a compiler proper, whether it
    /// compiles here (nil: its arguments could not be read, as when it just exited). `footprintLimit`: a remote job
    /// holding more than this is doing a compile's work here.
    public mutating func observe(_ processes: [ProcessObservation], peakBytes: UInt64, footprintLimit: UInt64,
                                 compiling: (ProcessObservation) -> Bool?) {
        guard !fellBack else { return }
        let pids = Set(processes.map(\.pid))
        if client == nil || client == .wrapper {
            if let named = processes.lazy.compactMap({ RemoteClient.named(process: $0.name) }).first {
                client = named
            } else if wrapperPID == nil,
                      let parent = processes.first(where: { p in
                          Self.isDriver(p.name) && processes.contains { $0.parent == p.pid && Self.isDriver($0.name) }
                      }) {
                client = .wrapper
                wrapperPID = parent.pid
            }
        }
        guard client != nil else { return }
        if let wrapper = wrapperPID, client == .wrapper {
            let busy = processes.contains { $0.parent == wrapper }
            idleReadings = pids.contains(wrapper) && !busy ? idleReadings + 1 : 0
        }
        let localCompile = processes.contains { p in
            Self.localWork.contains(p.name) || (Self.isCompilerProper(p) && compiling(p) == true)
        }
        if localCompile || peakBytes > footprintLimit { fellBack = true } else { wasRemote = wasRemote || isRemote }
    }
}

/// What this build's remote jobs tell: what one holds here (the most of the recent ones, a quarter more; a prior
/// before any has finished), and whether the next job is likely remote (the latest jobs were, and none fell back
/// lately: helpers that went away make every job compile here).
public struct RemoteJobs: Sendable, Equatable {
    public static let prior: UInt64 = 128 << 20
    /// After a fallback, new jobs are planned as local ones for this long.
    public static let fallbackHoldSeconds = 5.0
    private var recentPeaks: [UInt64] = []
    /// Whether each of the latest finished jobs ran remotely, oldest first.
    private var recentKinds: [Bool] = []
    private var lastFallbackAt: Double?
    public private(set) var remoteCount = 0
    public private(set) var localCount = 0
    public private(set) var fellBackCount = 0

    public init() {}

    public mutating func noteFinished(_ job: FinishedJob) {
        if job.ranRemotely {
            recentPeaks.append(job.peakBytes)
            if recentPeaks.count > 32 { recentPeaks.removeFirst() }
            remoteCount += 1
        } else {
            localCount += 1
        }
        if job.fellBack {
            fellBackCount += 1
            lastFallbackAt = max(lastFallbackAt ?? job.endedAt, job.endedAt)
        }
        recentKinds.append(job.ranRemotely)
        if recentKinds.count > 4 { recentKinds.removeFirst() }
    }

    /// The peak a new remote job is planned at.
    public var peakBytes: UInt64 {
        guard let most = recentPeaks.max() else { return Self.prior }
        return max(most + most / 4, 8 << 20)
    }

    /// Whether the next job to start is likely to run remotely: the four latest jobs (the newest running ones
    /// after the latest finished) are remote, and no job fell back within `fallbackHoldSeconds`.
    public func nextJobRemote(running: [Job], now: Double) -> Bool {
        if let t = lastFallbackAt, now - t < Self.fallbackHoldSeconds { return false }
        if running.contains(where: { $0.remote.fellBack && $0.remote.wasRemote }) { return false }
        let latest = (recentKinds + running.sorted { $0.startedAt < $1.startedAt }.map(\.remote.isRemote)).suffix(4)
        return !latest.isEmpty && latest.allSatisfy { $0 }
    }
}

/// `DISTCC_HOSTS` (or a distcc hosts file): how many compiles the helpers take at once.
public enum DistccHosts {
    /// The slots of the remote helpers: `host/N`, `host:port/N`, `@host/N` (ssh), `host/N,lzo,cpp`; distcc's
    /// default of 4 when no `/N` is given (2 for `localhost`, which compiles here and is not counted). Options
    /// (`--randomize`, `--localslots=N`, `--localslots_cpp=N`) and zeroconf (`+zeroconf`, whose helpers are not
    /// known ahead) count nothing. Nil when no remote helper is named. `#` starts a comment.
    public static func remoteSlots(_ spec: String) -> Int? {
        var total = 0
        var named = false
        for line in spec.split(separator: "\n") {
            let text = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            for word in text.split(whereSeparator: { $0 == " " || $0 == "\t" }) {
                if word.hasPrefix("-") || word.hasPrefix("+") { continue }
                let host = word.split(separator: ",").first ?? word
                let parts = host.split(separator: "/", maxSplits: 1)
                let name = parts.first.map { $0.hasPrefix("@") ? $0.dropFirst() : $0 } ?? ""
                let bare = name.split(separator: ":").first.map(String.init) ?? ""
                if bare == "localhost" || bare.isEmpty { continue }
                named = true
                total += parts.count > 1 ? max(0, Int(parts[1]) ?? 4) : 4
            }
        }
        return named ? total : nil
    }
}

extension JobTable {
    /// One reading of a job's processes for `RemoteEvidence`: a compiler proper's arguments are read once per
    /// process (by pid and start time), and only in jobs that run a client.
    mutating func observeRemote(_ job: inout Job, members: [ProcessObservation], arguments: (Int32) -> [String]?) {
        guard !job.remote.fellBack else { return }
        job.remote.observe(members, peakBytes: job.peakBytes, footprintLimit: remoteFootprintLimit) { p in
            let key = JobID(pid: p.pid, startTicks: p.startTicks)
            if let known = compilerCompiles[key] { return known }
            guard let args = p.arguments ?? arguments(p.pid) else { return nil }
            let compiles = RemoteEvidence.compiles(name: p.name, arguments: args)
            compilerCompiles[key] = compiles
            return compiles
        }
    }
}
