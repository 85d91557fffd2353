import Testing
import JobgovCore

private let MiB: UInt64 = 1 << 20

private func claim(_ id: String, at t: Double, weight: Int = 10, held: UInt64 = 0, floor: UInt64, need: UInt64,
                   want: UInt64) -> BudgetSharing.Claim {
    BudgetSharing.Claim(id: id, startedAt: t, weight: weight,
                        demand: BuildDemand(heldBytes: held * MiB, floorBytes: floor * MiB, needBytes: need * MiB,
                                            wantBytes: want * MiB))
}

@Suite("Budget sharing between builds")
struct BudgetSharingTests {
    @Test func aloneABuildGetsTheWholeBudget() {
        let shares = BudgetSharing.targets(budget: 2000 * MiB, claims: [claim("a", at: 0, floor: 100, need: 300, want: 800)])
        #expect(shares["a"] == 2000 * MiB, "what nobody wants is handed out too, so that the build can admit more")
    }

    @Test func demandsThatFitAreMetAndTheRestSharedByWeight() {
        let shares = BudgetSharing.targets(budget: 2000 * MiB, claims: [
            claim("a", at: 0, weight: 10, floor: 100, need: 300, want: 500),
            claim("b", at: 1, weight: 30, floor: 100, need: 200, want: 700),
        ])
        let a = shares["a"]!, b = shares["b"]!
        #expect(a + b == 2000 * MiB)
        // 800 MiB are left over after both wants: a quarter to a, three quarters to b.
        #expect(a == 500 * MiB + 200 * MiB)
        #expect(b == 700 * MiB + 600 * MiB)
    }

    @Test func whenShortTheNewestBuildGivesFirst() {
        // Running jobs of both need 1800 MiB, 1000 are there: the older build's running jobs come first, the newer
        // keeps its floor (its oldest job) and must freeze the rest.
        let shares = BudgetSharing.targets(budget: 1000 * MiB, claims: [
            claim("new", at: 5, floor: 200, need: 900, want: 1500),
            claim("old", at: 1, floor: 300, need: 900, want: 1500),
        ])
        #expect(shares["old"] == 800 * MiB, "its need, less the newer build's floor")
        #expect(shares["new"] == 200 * MiB, "its oldest job only")
        #expect(shares.values.reduce(0, +) <= 1000 * MiB)
    }

    @Test func aNewerBuildStartsNothingWhileAnOlderBuildsOldestJobStillNeedsRoom() {
        // The older build's oldest job (a link predicted at 650 MiB) holds 300 so far; the newer build holds more than
        // its running jobs were predicted to need. 300 MiB are free, the link needs 350 more: the newer build keeps
        // room for its running jobs and starts none, where the rule alone would give it 200 MiB to start jobs in.
        let growing = claim("old", at: 1, held: 300, floor: 650, need: 650, want: 650)
        let newer = claim("new", at: 2, held: 400, floor: 50, need: 150, want: 600)
        #expect(BudgetSharing.waiting(budget: 1000 * MiB, claims: [newer, growing]) == ["new"])
        let shares = BudgetSharing.targets(budget: 1000 * MiB, claims: [newer, growing])
        #expect(shares["new"] == 150 * MiB, "its need, nothing to start new jobs with")
        #expect(shares["old"] == 850 * MiB, "the rest, for its oldest job to grow into")

        // Once the room the link still needs is free (it grew to 600, the newer build froze down to 300), the newer
        // build starts jobs again: the rule's share.
        var grown = growing, shrunk = newer
        grown.demand = BuildDemand(heldBytes: 600 * MiB, floorBytes: 650 * MiB, needBytes: 650 * MiB, wantBytes: 650 * MiB)
        shrunk.demand = BuildDemand(heldBytes: 300 * MiB, floorBytes: 50 * MiB, needBytes: 150 * MiB, wantBytes: 600 * MiB)
        #expect(BudgetSharing.waiting(budget: 1000 * MiB, claims: [shrunk, grown]).isEmpty)
        #expect(BudgetSharing.targets(budget: 1000 * MiB, claims: [shrunk, grown])["new"] == 350 * MiB)
    }

    @Test func noBuildWaitsWhileWhatTheOlderOnesStillNeedIsFree() {
        let older = claim("old", at: 1, held: 300, floor: 500, need: 500, want: 500)
        let newer = claim("new", at: 2, held: 200, floor: 50, need: 150, want: 600)
        // 500 MiB free, 200 still needed by the older build's oldest job.
        #expect(BudgetSharing.waiting(budget: 1000 * MiB, claims: [older, newer]).isEmpty)
        let shares = BudgetSharing.targets(budget: 1000 * MiB, claims: [older, newer])
        #expect(shares["new"] == 500 * MiB, "floors, needs, then its want from what is left")
        // A build alone never waits, however much its oldest job has still to grow.
        #expect(BudgetSharing.waiting(budget: 100 * MiB, claims: [claim("a", at: 0, held: 10, floor: 900, need: 900,
                                                                        want: 900)]).isEmpty)
        // Three builds: the middle one's oldest job is short of room, so only the newest waits.
        let middle = claim("mid", at: 1.5, held: 100, floor: 600, need: 600, want: 600)
        #expect(BudgetSharing.waiting(budget: 1000 * MiB, claims: [older, middle, newer]) == ["new"])
    }

    @Test func theBuildWhoseOldestJobCannotGrowYieldsAndSoDoNewerOnes() {
        // Three links at once, as their oldest jobs: 450, 391 and 343 MiB in 889 MiB. The first two fit beside each
        // other; the third's does not, so it (and only it) yields even its oldest job while that is small.
        let a = claim("a", at: 1, held: 100, floor: 450, need: 450, want: 450)
        let b = claim("b", at: 2, held: 50, floor: 391, need: 391, want: 391)
        let c = claim("c", at: 3, held: 20, floor: 343, need: 343, want: 343)
        #expect(BudgetSharing.yielding(budget: 889 * MiB, claims: [c, a, b]) == ["c"])
        #expect(BudgetSharing.waiting(budget: 889 * MiB, claims: [c, a, b]).isEmpty,
                "waiting (starting nothing new) is for the builds after it")
        // The oldest build never yields, even when its own oldest job does not fit: the others do.
        let huge = claim("a", at: 1, held: 10, floor: 950, need: 950, want: 950)
        #expect(BudgetSharing.yielding(budget: 889 * MiB, claims: [huge, b, c]) == ["b", "c"])
        #expect(BudgetSharing.yielding(budget: 889 * MiB, claims: [huge]).isEmpty)
        // Room for all three: nobody yields.
        #expect(BudgetSharing.yielding(budget: 2000 * MiB, claims: [a, b, c]).isEmpty)
    }

    @Test func floorsComeFirstOldestBuildFirst() {
        let shares = BudgetSharing.targets(budget: 500 * MiB, claims: [
            claim("c", at: 3, floor: 300, need: 300, want: 300),
            claim("a", at: 1, floor: 300, need: 600, want: 900),
            claim("b", at: 2, floor: 300, need: 300, want: 300),
        ])
        #expect(shares["a"] == 300 * MiB)
        #expect(shares["b"] == 200 * MiB, "what is left of the budget")
        #expect(shares["c"] == 0)
    }

    @Test func aHeavierBuildIsServedFirst() {
        let shares = BudgetSharing.targets(budget: 1000 * MiB, claims: [
            claim("background", at: 1, weight: 1, floor: 100, need: 900, want: 900),
            claim("interactive", at: 5, weight: 50, floor: 100, need: 900, want: 900),
        ])
        #expect(shares["interactive"] == 900 * MiB)
        #expect(shares["background"] == 100 * MiB, "its floor is kept: its oldest job runs")
    }

    @Test func wantsAreWaterFilledByWeight() {
        // 600 left after the needs; a wants 100 more, b and c 1000 each at equal weights: a gets its 100, the other
        // two split the rest.
        let shares = BudgetSharing.targets(budget: 900 * MiB, claims: [
            claim("a", at: 1, floor: 100, need: 100, want: 200),
            claim("b", at: 2, floor: 100, need: 100, want: 1100),
            claim("c", at: 3, floor: 100, need: 100, want: 1100),
        ])
        #expect(shares["a"] == 200 * MiB)
        let b = shares["b"]!, c = shares["c"]!
        #expect(b + c == 700 * MiB)
        #expect(max(b, c) - min(b, c) <= 1 * MiB)
    }

    @Test func noBuildGetsMoreThanItCouldUseAlone() {
        var small = claim("small", at: 0, floor: 100, need: 200, want: 1500)
        small.cap = 600 * MiB
        #expect(BudgetSharing.targets(budget: 2000 * MiB, claims: [small]) == ["small": 600 * MiB])
        let other = claim("other", at: 1, floor: 100, need: 200, want: 400)
        let shares = BudgetSharing.targets(budget: 2000 * MiB, claims: [small, other])
        #expect(shares["small"] == 600 * MiB)
        #expect(shares["other"] == 1400 * MiB, "what the capped build cannot use goes to the other")
    }

    @Test func theSumNeverPassesTheBudget() {
        // Random claims, random pacing: after every division the shares fit the budget.
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<300 {
            let budget = UInt64.random(in: 100...5000, using: &rng) * MiB
            var sharing = BudgetSharing(budget: budget)
            var now = 0.0
            for _ in 0..<20 {
                let claims = (0..<Int.random(in: 1...5, using: &rng)).map { i -> BudgetSharing.Claim in
                    let floor = UInt64.random(in: 0...2000, using: &rng)
                    let need = floor + UInt64.random(in: 0...2000, using: &rng)
                    return claim("b\(i)", at: Double(i), weight: Int.random(in: 1...100, using: &rng),
                                 held: UInt64.random(in: 0...3000, using: &rng), floor: floor, need: need,
                                 want: need + UInt64.random(in: 0...4000, using: &rng))
                }
                now += Double.random(in: 0...2, using: &rng)
                let shares = sharing.divide(claims, now: now)
                #expect(shares.values.reduce(0, +) <= budget)
                #expect(BudgetSharing.targets(budget: budget, claims: claims).values.reduce(0, +) <= budget)
            }
        }
    }

    @Test func aShareFallsNoFasterThanTheBuildCanReact() {
        var sharing = BudgetSharing(budget: 2000 * MiB)   // falls at most 500 MiB a second
        let old = claim("old", at: 0, held: 1800, floor: 200, need: 1800, want: 3000)
        #expect(sharing.divide([old], now: 0)["old"] == 2000 * MiB)
        // A second build arrives; the old one's running jobs shrink to what its oldest job needs.
        var shrunk = old
        shrunk.demand = BuildDemand(heldBytes: 1800 * MiB, floorBytes: 200 * MiB, needBytes: 400 * MiB, wantBytes: 3000 * MiB)
        let new = claim("new", at: 10, held: 0, floor: 300, need: 300, want: 3000)
        let first = sharing.divide([shrunk, new], now: 0.2)
        #expect(first["old"] == 1900 * MiB, "a fifth of a second: 100 MiB given up")
        #expect(first["new"] == 100 * MiB)
        // While the old build still holds 1800 MiB, the new one gets only what is neither held nor given.
        let second = sharing.divide([shrunk, new], now: 1.2)
        #expect(second["old"] == 1400 * MiB)
        #expect(second["new"] == 200 * MiB, "the old build still holds 1800 MiB of the 2000")
        shrunk.demand.heldBytes = 400 * MiB
        let third = sharing.divide([shrunk, new], now: 1.4)
        #expect(third["old"]! >= 1300 * MiB)
        #expect(third["new"]! + third["old"]! <= 2000 * MiB)
        #expect(third["new"]! > second["new"]!, "memory given up goes to the new build")
        // Long after: the shares reach their targets.
        var t = 1.4
        var last: [String: UInt64] = [:]
        for _ in 0..<40 { t += 0.25; last = sharing.divide([shrunk, new], now: t) }
        #expect(last == BudgetSharing.targets(budget: 2000 * MiB, claims: [shrunk, new]))
    }

    @Test func aBuildThatLeftFreesItsShareAtOnce() {
        var sharing = BudgetSharing(budget: 1000 * MiB)
        let a = claim("a", at: 0, floor: 100, need: 500, want: 900)
        let b = claim("b", at: 1, floor: 100, need: 500, want: 900)
        _ = sharing.divide([a, b], now: 0)
        let after = sharing.divide([b], now: 0.1)
        #expect(after == ["b": 1000 * MiB])
    }

    @Test func demandFromTheGovernorsInput() {
        let jobs = [
            GovernorInput.RunningJob(id: JobID(pid: 10, startTicks: 1), startedAt: 1, rssBytes: 100 * MiB, peakBytes: 100 * MiB,
                                     predictedPeakBytes: 300 * MiB),
            GovernorInput.RunningJob(id: JobID(pid: 11, startTicks: 2), startedAt: 2, rssBytes: 50 * MiB, peakBytes: 80 * MiB,
                                     predictedPeakBytes: 60 * MiB, frozen: true),
        ]
        let input = GovernorInput(now: 5, memoryUsedBytes: 170 * MiB, jobs: jobs, nextJobPeakBytes: 200 * MiB)
        let d = BuildDemand.estimate(input, ceiling: 4)
        #expect(d.heldBytes == 170 * MiB)
        #expect(d.floorBytes == 20 * MiB + 300 * MiB, "outside the jobs, and the oldest job at its prediction")
        #expect(d.needBytes == 20 * MiB + 300 * MiB + 80 * MiB, "a job past its prediction counts at its peak")
        #expect(d.wantBytes == d.needBytes + 2 * 200 * MiB, "two more jobs up to -j4")
        #expect(d.runningJobs == 1 && d.frozenJobs == 1)
    }
}

@Suite("Shared pool for plain clients")
struct SharedPoolTests {
    private func p(_ pid: Int32, parent: Int32, children: Int = 0, threads: Int = 1, holds: Bool = false) -> BuildProcess {
        BuildProcess(pid: pid, parent: parent, threads: threads, children: children, holdsPool: holds)
    }

    @Test func aTopLevelClientHoldsOneTokenLessThanItsJobs() {
        // A user's shell (100) started make (200), which runs 3 jobs: its implicit slot and 2 tokens.
        let procs = [p(100, parent: 1, children: 1), p(200, parent: 100, children: 3, holds: true),
                     p(201, parent: 200), p(202, parent: 200), p(203, parent: 200)]
        #expect(sharedPoolHoldingBound(processes: procs) == 2)
    }

    @Test func aNestedClientUnderARecipesShellHoldsItsParentsToken() {
        // make (200) → sh (210, a recipe on a token) → make (220) with 2 jobs: 220's first job is on 210's token.
        let procs = [p(200, parent: 100, children: 2, holds: true), p(201, parent: 200), p(210, parent: 200, children: 1),
                     p(220, parent: 210, children: 2, holds: true), p(221, parent: 220), p(222, parent: 220)]
        #expect(sharedPoolHoldingBound(processes: procs) == 1 + 1 + 1)
    }

    @Test func aClientThatDiedHoldsNothing() {
        // The make was SIGKILLed; its jobs, re-parented to init, have no pool open.
        let procs = [p(201, parent: 1), p(202, parent: 1)]
        #expect(sharedPoolHoldingBound(processes: procs) == 0)
        var detector = LostTokenDetector()
        #expect(detector.observe(outstanding: 2, bound: 0) == 0)
        #expect(detector.observe(outstanding: 2, bound: 0) == 0)
        #expect(detector.observe(outstanding: 2, bound: 0) == 2, "re-created after three looks")
    }
}

@Suite("Sharing the CPUs between builds")
struct CPUSharingTests {
    private func share(_ cpus: Double, _ claims: [CPUSharing.Claim]) -> [String: Double] {
        CPUSharing.divide(cpus: cpus, claims: claims)
    }

    @Test func aBuildAloneGetsEveryCPU() {
        #expect(share(16, [.init(id: "a", used: 2)]) == ["a": 16])
        #expect(share(16, [.init(id: "a", used: nil)]) == ["a": 16])
        #expect(share(16, []).isEmpty)
    }

    @Test func busyBuildsShareByWeight() throws {
        let even = share(2, [.init(id: "a", used: 1.9), .init(id: "b", used: 1.8)])
        #expect(abs(even["a"]! - 1) < 1e-9 && abs(even["b"]! - 1) < 1e-9)
        let weighted = share(16, [.init(id: "a", weight: 30, used: 15), .init(id: "b", weight: 10, used: 15)])
        #expect(abs(weighted["a"]! - 12) < 1e-9 && abs(weighted["b"]! - 4) < 1e-9)
        let three = share(2, (1...3).map { .init(id: "\($0)", used: 1) })
        #expect(three.values.allSatisfy { abs($0 - 2.0 / 3) < 1e-9 })
    }

    /// A build in a serial phase keeps what it uses and one CPU more; the rest goes to the build that uses it.
    @Test func aQuietBuildLeavesItsCPUsToTheBusyOne() {
        let s = share(16, [.init(id: "linking", used: 1), .init(id: "compiling", used: 14)])
        #expect(abs(s["linking"]! - 2) < 1e-9)
        #expect(abs(s["compiling"]! - 14) < 1e-9)
        #expect(abs(s.values.reduce(0, +) - 16) < 1e-9, "the shares add up to the CPUs")
    }

    @Test func theSharesNeverPassTheCPUs() {
        var seed: UInt64 = 7
        func next() -> Double {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return Double(seed >> 11) / Double(1 << 53)
        }
        for _ in 0..<500 {
            let cpus = Double(1 + Int(next() * 64))
            let claims = (0..<(1 + Int(next() * 6))).map {
                CPUSharing.Claim(id: "\($0)", weight: 1 + Int(next() * 100), used: next() < 0.2 ? nil : next() * cpus)
            }
            let s = share(cpus, claims)
            #expect(s.count == claims.count)
            #expect(s.values.reduce(0, +) <= cpus + 1e-6)
            #expect(s.values.allSatisfy { $0 >= 0 && $0 <= cpus + 1e-9 })
        }
    }
}

