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

/// Decides when tokens held by clients are lost for good.
///
/// A plain FIFO cannot say who holds a token. But every token a client holds stands for a job it runs, and each
/// job is a live task (a process, or a thread for rustc's codegen) below jobgov. So the tokens out can never
/// exceed the tasks of the build minus the launched client itself. More tokens out than that means some were taken
/// by a client that died (SIGKILL) without giving them back. The two counts are read at slightly different
/// moments, so a deficit must be seen on several consecutive checks before tokens are re-created, and only the
/// smallest deficit seen is re-created.
public struct LostTokenDetector: Sendable, Equatable {
    public let checksRequired: Int
    private var deficits: [Int] = []

    public init(checksRequired: Int = 3) {
        self.checksRequired = max(1, checksRequired)
    }

    /// - Parameters:
    ///   - outstanding: tokens not in the pool (held by clients).
    ///   - liveTasks: tasks (threads) of the build's processes, the launched client included.
    /// - Returns: how many tokens to re-create now.
    public mutating func observe(outstanding: Int, liveTasks: Int) -> Int {
        let bound = max(0, liveTasks - 1)
        let deficit = outstanding - bound
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
