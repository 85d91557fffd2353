/// Pure bookkeeping for the token pool: how many tokens should exist, how many do, and what to do about the
/// difference. The caller reads the pool's fill level and performs the writes and reads this asks for.
///
/// Numbers are tokens, not jobs: a pool for `jobs` parallel jobs holds `jobs - 1` tokens, because the client
/// jobgov launches runs its first job on its implicit slot.
public struct TokenLedger: Sendable, Equatable {
    /// Tokens that should exist (target jobs minus the launched client's implicit slot).
    public private(set) var target: Int
    /// Tokens that exist now: in the pool plus held by clients. Lowering the target leaves this above `target`
    /// until enough tokens come back to be absorbed.
    public private(set) var created: Int
    /// Tokens written to replace ones that clients lost by dying while holding them.
    public private(set) var recreated: Int = 0
    /// Tokens taken out of circulation by lowering the target.
    public private(set) var absorbed: Int = 0
    /// Bytes found in the pool beyond `created` (a client wrote more than it took) and removed.
    public private(set) var discardedExtra: Int = 0
    /// The most tokens seen held by clients at once.
    public private(set) var peakOutstanding: Int = 0

    public init(jobs: Int) {
        target = max(0, jobs - 1)
        created = 0
    }

    public var targetJobs: Int { target + 1 }

    public mutating func setJobs(_ jobs: Int) {
        target = max(0, jobs - 1)
    }

    /// What the pool needs, given how many bytes it holds now.
    public enum Action: Equatable, Sendable {
        case none
        /// Write this many new tokens.
        case write(Int)
        /// Read and keep this many tokens (the target was lowered, or a client returned extra bytes).
        case absorb(Int)
    }

    public func action(inPool: Int) -> Action {
        if inPool > created { return .absorb(inPool - created + max(0, created - target)) }
        if created < target { return .write(target - created) }
        if created > target { return .absorb(created - target) }
        return .none
    }

    public mutating func didWrite(_ n: Int) {
        created += n
    }

    /// Records `n` bytes read out of the pool; `inPool` is the fill level that was seen before reading.
    public mutating func didAbsorb(_ n: Int, inPoolBefore inPool: Int) {
        var left = n
        let extra = min(left, max(0, inPool - created))
        discardedExtra += extra
        left -= extra
        let taken = min(left, max(0, created - target))
        created -= taken
        absorbed += taken
        // Anything beyond that was still more than the target needed; drop it from the count too.
        created -= (left - taken)
    }

    /// Records `n` tokens read out of the pool while the target was below `created` (the fast path when lowering,
    /// taken without first asking the pool how full it is).
    public mutating func didAbsorbExcess(_ n: Int) {
        let taken = min(n, max(0, created - target))
        created -= taken
        absorbed += taken
        created -= (n - taken)  // more than needed: out of circulation all the same; the next refill writes it back
    }

    /// Tokens held by clients, given the pool's fill level.
    public func outstanding(inPool: Int) -> Int { max(0, created - inPool) }

    public mutating func noteOutstanding(_ n: Int) {
        peakOutstanding = max(peakOutstanding, n)
    }

    /// Writes off `n` tokens that died with their client and counts their replacements, which the caller writes.
    public mutating func didRecreate(_ n: Int) {
        recreated += n
    }
}

/// One process of the build, as seen in procfs, with what matters for token accounting.
public struct BuildProcess: Equatable, Sendable {
    public var pid: Int32
    public var parent: Int32
    /// Threads of the process (rustc takes a token per codegen thread).
    public var threads: Int
    /// Live (or not yet reaped) child processes.
    public var children: Int
    /// It has jobgov's FIFO open (fifo: clients open it by path; pipe clients inherited descriptors on it).
    public var holdsPool: Bool

    public init(pid: Int32, parent: Int32, threads: Int, children: Int, holdsPool: Bool) {
        self.pid = pid
        self.parent = parent
        self.threads = threads
        self.children = children
        self.holdsPool = holdsPool
    }
}

/// The most tokens the live clients of a build can be holding.
///
/// A client takes a token only to start a job, and gives it back when the job ends; its first job runs on its
/// implicit slot. So a client with `c` child processes holds at most `c - 1` tokens, plus one per extra thread
/// (rustc's codegen threads hold tokens without being processes). A client whose parent is not a client (a
/// sub-make orphaned by a dead parent, or started through a shell that does not hold the pool) may be running on
/// a token its parent took, so one more is allowed for it; the client jobgov launched runs on a real implicit
/// slot and gets none. Every rule errs on the generous side: tokens are only re-created when even this
/// generous count cannot explain the tokens that are out.
public func tokenHoldingBound(processes: [BuildProcess], launchedPID: Int32) -> Int {
    let clients = Set(processes.filter(\.holdsPool).map(\.pid))
    var bound = 0
    for p in processes where p.holdsPool {
        bound += max(0, p.children - 1) + max(0, p.threads - 1)
        if p.pid != launchedPID && !clients.contains(p.parent) { bound += 1 }
    }
    return bound
}

/// Decides when tokens held by clients are lost for good.
///
/// A plain FIFO cannot say who holds a token, so jobgov compares the tokens out with `tokenHoldingBound`: more
/// tokens out than the live clients can hold means some were taken by a client that died (SIGKILL) without
/// giving them back. The two counts are read at slightly different moments (a make reads a token a moment
/// before it forks the job), so a deficit must be seen on several consecutive checks before tokens are
/// re-created, and only the smallest deficit seen is re-created.
public struct LostTokenDetector: Sendable, Equatable {
    public let checksRequired: Int
    private var deficits: [Int] = []

    public init(checksRequired: Int = 3) {
        self.checksRequired = max(1, checksRequired)
    }

    /// - Parameters:
    ///   - outstanding: tokens not in the pool (held by clients, or lost).
    ///   - bound: the most tokens the live clients can hold (`tokenHoldingBound`).
    /// - Returns: how many tokens to re-create now.
    public mutating func observe(outstanding: Int, bound: Int) -> Int {
        let deficit = outstanding - max(0, bound)
        guard deficit > 0 else {
            deficits.removeAll()
            return 0
        }
        deficits.append(deficit)
        guard deficits.count >= checksRequired else { return 0 }
        let lost = deficits.suffix(checksRequired).min() ?? 0
        deficits.removeAll()
        return lost
    }
}
