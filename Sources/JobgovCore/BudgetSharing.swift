/// What one build under `jobgov daemon` asks of the shared memory budget, in bytes. Three tiers, each including the
/// one before: `floor` (what its oldest job needs: that job always runs), `need` (its running jobs at their
/// predicted peaks: less than this and it must freeze) and `want` (what it would use at its full `-j`).
public struct BuildDemand: Sendable, Equatable, Codable {
    /// What the build's cgroup holds now.
    public var heldBytes: UInt64
    public var floorBytes: UInt64
    public var needBytes: UInt64
    public var wantBytes: UInt64
    public var runningJobs: Int
    public var frozenJobs: Int

    public init(heldBytes: UInt64, floorBytes: UInt64, needBytes: UInt64, wantBytes: UInt64,
                runningJobs: Int = 0, frozenJobs: Int = 0) {
        self.heldBytes = heldBytes
        self.floorBytes = floorBytes
        self.needBytes = max(floorBytes, needBytes)
        self.wantBytes = max(self.needBytes, wantBytes)
        self.runningJobs = runningJobs
        self.frozenJobs = frozenJobs
    }

    enum CodingKeys: String, CodingKey {
        case heldBytes = "held_bytes", floorBytes = "floor_bytes", needBytes = "need_bytes", wantBytes = "want_bytes"
        case runningJobs = "running_jobs", frozenJobs = "frozen_jobs"
    }

    /// Through `init`, so that a report keeps floor ≤ need ≤ want whatever a client sends.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(heldBytes: try c.decode(UInt64.self, forKey: .heldBytes),
                  floorBytes: try c.decode(UInt64.self, forKey: .floorBytes),
                  needBytes: try c.decode(UInt64.self, forKey: .needBytes),
                  wantBytes: try c.decode(UInt64.self, forKey: .wantBytes),
                  runningJobs: max(0, try c.decode(Int.self, forKey: .runningJobs)),
                  frozenJobs: max(0, try c.decode(Int.self, forKey: .frozenJobs)))
    }

    /// The demand of a build from its governor's last input: memory outside the jobs (the build tool, page cache)
    /// is held as it is; each running job counts at its predicted peak (or what it holds, if more); the jobs not
    /// yet started, up to `ceiling`, at the next job's predicted peak.
    public static func estimate(_ input: GovernorInput?, ceiling: Int) -> BuildDemand {
        guard let input else {
            return BuildDemand(heldBytes: 0, floorBytes: 0, needBytes: 0, wantBytes: 0)
        }
        let jobs = input.jobs.filter { !$0.remote }
        let inJobs = jobs.reduce(UInt64(0)) { $0 + $1.rssBytes }
        let base = input.memoryUsedBytes > inJobs ? input.memoryUsedBytes - inJobs : 0
        func peak(_ job: GovernorInput.RunningJob) -> UInt64 {
            max(job.predictedPeakBytes, job.peakBytes, job.rssBytes, job.pagedOutBytes)
        }
        let next = max(input.typicalJobPeakBytes ?? input.nextJobPeakBytes, 1 << 20)
        let oldest = jobs.min { $0.startedAt < $1.startedAt }
        let floor = base + (oldest.map(peak) ?? input.nextJobPeakBytes)
        let need = base + jobs.reduce(UInt64(0)) { $0 + peak($1) }
        let more = UInt64(max(0, ceiling - jobs.count))
        return BuildDemand(heldBytes: input.memoryUsedBytes, floorBytes: floor, needBytes: need,
                           wantBytes: need + more * next, runningJobs: jobs.filter { !$0.frozen }.count,
                           frozenJobs: jobs.filter(\.frozen).count)
    }
}

/// How `jobgov daemon` divides one memory budget between the builds that joined it. Pure: the daemon calls
/// `divide` on every report and sends each build its share; the build's governor plans against that share as its
/// budget (see `Governor.setBudget`).
///
/// The rule, in order of precedence:
/// 1. Each build's oldest job has room (its `floor`), oldest build first: every build always progresses.
/// 2. Then each build's running jobs at their predicted peaks (`need`), by rank: higher weight first, then the
///    oldest build. So when the budget runs short, the newest (lowest-weight) build gives first: its governor freezes
///    its newest jobs, as within one build, while the older builds' running jobs finish.
/// 3. Then what the builds would start (`want` above `need`), shared in proportion to weight, no build getting more
///    than it wants (water-filling).
/// 4. What is left over is shared in proportion to weight, so that a build can admit its next job without asking,
///    none past what a build could use alone (`cap`).
/// Steps 3 and 4 skip the builds that must wait (`waiting`): those newer than a build whose oldest job has yet to
/// grow into more memory than is free. They keep what covers their running jobs and start nothing new.
/// The shares never add up to more than the budget.
///
/// Pacing: a share never falls faster than `shrinkBytesPerSecond` (a quarter of the budget per second by default).
/// The build learns its share at its next report (every `DaemonTiming.reportSeconds`) and reacts at its next tick:
/// it withholds tokens at once, freezes its newest job (one per 100 ms) and pages frozen jobs out; a share that fell
/// faster than that would put the sum of what the builds hold over the budget with nobody able to act yet. What a
/// shrinking build still keeps is not given to another build until the shrinking build has given it up, so the sum
/// stays within the budget at every step.
public struct BudgetSharing: Sendable {
    public struct Claim: Sendable, Equatable {
        public var id: String
        /// When the build started (any clock, the same for all claims): older builds come first.
        public var startedAt: Double
        public var weight: Int
        public var demand: BuildDemand
        /// The most the build can use (its budget alone): no more is given to it.
        public var cap: UInt64
        public init(id: String, startedAt: Double, weight: Int = 1, demand: BuildDemand, cap: UInt64 = .max) {
            self.cap = cap
            self.id = id
            self.startedAt = startedAt
            self.weight = max(1, weight)
            self.demand = demand
        }
    }

    public let budget: UInt64
    public var shrinkBytesPerSecond: Double
    /// The shares last given, and when.
    public private(set) var shares: [String: UInt64] = [:]
    private var lastDivision: Double?
    /// Until then, shares that exist do not rise (see `holdRises`).
    private var risesHeldUntil = -Double.infinity

    public init(budget: UInt64, shrinkBytesPerSecond: Double? = nil) {
        self.budget = budget
        self.shrinkBytesPerSecond = shrinkBytesPerSecond ?? Double(budget) / 4
    }

    /// The shares the rule gives now, without pacing (what the shares move towards).
    public static func targets(budget: UInt64, claims: [Claim]) -> [String: UInt64] {
        var left = budget
        var share: [String: UInt64] = [:]
        func give(_ id: String, _ bytes: UInt64) {
            let given = min(bytes, left)
            share[id, default: 0] += given
            left -= given
        }
        let byAge = claims.sorted { ($0.startedAt, $0.id) < ($1.startedAt, $1.id) }
        for c in byAge { give(c.id, c.demand.floorBytes) }
        let byRank = claims.sorted(by: inRankOrder)
        for c in byRank { give(c.id, c.demand.needBytes - min(c.demand.needBytes, share[c.id, default: 0])) }
        // Water-filling by weight up to each build's `limit`: each round gives every open build its weighted part of
        // what is left, capped at its limit; a build that reaches its limit frees its rest for the others.
        func waterFill(upTo limit: (Claim) -> UInt64) {
            var open = byRank.filter { share[$0.id, default: 0] < limit($0) }
            while left > 0, !open.isEmpty {
                let weights = UInt64(open.reduce(0) { $0 + $1.weight })
                let round = left
                for c in open {
                    give(c.id, min(round / weights * UInt64(c.weight), limit(c) - share[c.id, default: 0]))
                }
                if left == round {
                    // Less left than there are weights: the rest goes in rank order.
                    for c in open where left > 0 { give(c.id, limit(c) - share[c.id, default: 0]) }
                    break
                }
                open = open.filter { share[$0.id, default: 0] < limit($0) }
            }
        }
        let waits = waiting(budget: budget, claims: claims)
        waterFill { waits.contains($0.id) ? share[$0.id, default: 0] : min($0.demand.wantBytes, $0.cap) }
        // What nobody wants is handed out too, so that a build can admit its next job without asking first; never
        // past what a build could use (its budget alone).
        waterFill { waits.contains($0.id) ? share[$0.id, default: 0] : $0.cap }
        return share
    }

    /// The builds that may start no new job now: every build newer than one whose oldest job still has to grow
    /// into more memory than is free (its floor above what it holds, counted oldest build first). Each build's
    /// oldest job always runs, so once two builds' oldest jobs are large at the same moment no share keeps them
    /// apart, and without swap freezing returns nothing: the room the older one will need is kept by admission,
    /// before it is needed. The growth is counted from the build's whole holding (an underestimate when it runs
    /// other jobs besides its oldest), and only where its oldest job's peak is predicted (a command it has seen).
    public static func waiting(budget: UInt64, claims: [Claim]) -> Set<String> {
        guard let (byAge, short) = firstShortOfRoom(budget: budget, claims: claims) else { return [] }
        return Set(byAge[(short + 1)...].map(\.id))
    }

    /// The builds that must yield even their oldest job: from the oldest build on, each build's floor is counted
    /// against what is free (its growth, as in `waiting`); the first build whose growth does not fit, unless it is
    /// the oldest build, and every build newer than it. Such a build freezes its oldest job while that job is still
    /// small (`GovernorSettings.yieldsToOlderBuild`), so that nothing, not even a job a build tool starts on its
    /// own implicit slot, takes the room the older builds' oldest jobs will need. The oldest build never yields:
    /// some build always progresses.
    public static func yielding(budget: UInt64, claims: [Claim]) -> Set<String> {
        guard let (byAge, short) = firstShortOfRoom(budget: budget, claims: claims) else { return [] }
        return Set(byAge[max(1, short)...].map(\.id))
    }

    /// The claims oldest first, and the index of the first whose oldest job's growth (its floor above what it
    /// holds) does not fit in what is free after the older builds' growth; nil when every one fits.
    private static func firstShortOfRoom(budget: UInt64, claims: [Claim]) -> ([Claim], Int)? {
        let held = claims.reduce(UInt64(0)) { $0 + $1.demand.heldBytes }
        var free = budget > held ? budget - held : 0
        let byAge = claims.sorted { ($0.startedAt, $0.id) < ($1.startedAt, $1.id) }
        for (i, c) in byAge.enumerated() {
            let growth = c.demand.floorBytes > c.demand.heldBytes ? c.demand.floorBytes - c.demand.heldBytes : 0
            if growth > free { return (byAge, i) }
            free -= growth
        }
        return nil
    }

    /// The shares at time `now` (seconds): the targets, with falls paced and rises given only from what is free,
    /// in shares and in memory actually held (a build over its share keeps what it holds until it gives it up).
    public mutating func divide(_ claims: [Claim], now: Double) -> [String: UInt64] {
        let targets = Self.targets(budget: budget, claims: claims)
        let dt = lastDivision.map { max(0, now - $0) } ?? 0
        lastDivision = now
        let step = UInt64(max(0, shrinkBytesPerSecond * dt))
        var next: [String: UInt64] = [:]
        for c in claims {
            let target = targets[c.id, default: 0]
            let old = shares[c.id] ?? 0
            // A build keeps what it had, less what it could give up since the last division.
            next[c.id] = old > target ? max(target, old > step ? old - step : 0) : old
        }
        var leftShares = budget - min(budget, next.values.reduce(0, +))
        var reserved = Dictionary(uniqueKeysWithValues: claims.map { ($0.id, max(next[$0.id]!, $0.demand.heldBytes)) })
        var leftHeld = budget - min(budget, reserved.values.reduce(0, +))
        let holding = now < risesHeldUntil
        for c in claims.sorted(by: Self.inRankOrder) {
            let have = next[c.id]!, target = targets[c.id, default: 0]
            guard have < target, !(holding && shares[c.id] != nil) else { continue }
            let mine = reserved[c.id]!
            let share = min(target, have + leftShares, max(have, mine + leftHeld))
            next[c.id] = share
            leftShares -= share - have
            if share > mine {
                leftHeld -= share - mine
                reserved[c.id] = share
            }
        }
        shares = next
        return next
    }

    /// Takes on a share a build had before (from a daemon that was restarted), within what is not given; only
    /// while rises are held (after that, a build's word on what it had counts for nothing).
    public mutating func adopt(_ id: String, share: UInt64, now: Double) {
        guard shares[id] == nil, now < risesHeldUntil else { return }
        let given = shares.values.reduce(0, +)
        shares[id] = min(share, budget - min(budget, given))
    }

    /// No share that exists rises before `until`: a restarted daemon waits for the builds that had shares to come
    /// back before it hands out what they hold. New builds still get what is free.
    public mutating func holdRises(until: Double) {
        risesHeldUntil = until
    }

    /// Higher weight first, then the older build.
    static func inRankOrder(_ a: Claim, _ b: Claim) -> Bool {
        if a.weight != b.weight { return a.weight > b.weight }
        return (a.startedAt, a.id) < (b.startedAt, b.id)
    }
}
