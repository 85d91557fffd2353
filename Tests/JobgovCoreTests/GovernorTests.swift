import Testing
import JobgovCore

private let MiB: UInt64 = 1 << 20

/// A recorded trace, one tick per line: the time, the build's memory in MiB, and each job as (pid, rss MiB).
/// Job start times come from the first tick that lists them; predictions come from a fixed table.
private struct Trace {
    var ticks: [(t: Double, usedMiB: UInt64, jobs: [(pid: Int32, rssMiB: UInt64)])]
    var predictedMiB: [Int32: UInt64] = [:]
    var nextJobMiB: UInt64 = 100

    /// Runs the governor over the trace, applying its freezes and thaws to the jobs as the supervisor would.
    func replay(_ governor: inout Governor) -> [(t: Double, decision: GovernorDecision)] {
        var started: [Int32: Double] = [:]
        var peaks: [Int32: UInt64] = [:]
        var frozen = Set<Int32>()
        var out: [(Double, GovernorDecision)] = []
        for tick in ticks {
            var jobs: [GovernorInput.RunningJob] = []
            for (pid, rss) in tick.jobs {
                let start = started[pid] ?? tick.t
                started[pid] = start
                let growing = rss > (peaks[pid] ?? rss)
                peaks[pid] = max(peaks[pid] ?? 0, rss)
                jobs.append(GovernorInput.RunningJob(
                    id: JobID(pid: pid, startTicks: 0), startedAt: start, rssBytes: rss * MiB,
                    peakBytes: peaks[pid]! * MiB, predictedPeakBytes: (predictedMiB[pid] ?? nextJobMiB) * MiB,
                    frozen: frozen.contains(pid), growing: growing))
            }
            let d = governor.decide(GovernorInput(now: tick.t, memoryUsedBytes: tick.usedMiB * MiB, jobs: jobs,
                                                  nextJobPeakBytes: nextJobMiB * MiB))
            for id in d.freeze { frozen.insert(id.pid) }
            for id in d.thaw { frozen.remove(id.pid) }
            out.append((tick.t, d))
        }
        return out
    }
}

@Suite("Governor")
struct GovernorTests {
    private func governor(jobs: Int = 8, budgetMiB: UInt64 = 1000) -> Governor {
        Governor(settings: GovernorSettings(maxJobs: jobs, budget: budgetMiB * MiB, cpus: 2))
    }

    @Test func plentyOfMemoryRunsEveryJobAskedFor() {
        var g = governor()
        let d = g.decide(GovernorInput(now: 0, memoryUsedBytes: 50 * MiB, jobs: [], nextJobPeakBytes: 50 * MiB))
        #expect(d.targetJobs == 8)
        #expect(d.rung == .run)
        #expect(d.freeze.isEmpty)
    }

    @Test func targetAdmitsWhatFitsInTheBudgetAndNothingWhileUseIsAboveThreshold() {
        var g = governor()
        // 3 running jobs predicted at 200 MiB each = 600 of 1000; the next at 100 each: 4 more fit.
        let jobs = (1...3).map {
            GovernorInput.RunningJob(id: JobID(pid: Int32($0), startTicks: 0), startedAt: Double($0), rssBytes: 50 * MiB,
                                     peakBytes: 50 * MiB, predictedPeakBytes: 200 * MiB)
        }
        let d = g.decide(GovernorInput(now: 10, memoryUsedBytes: 150 * MiB, jobs: jobs, nextJobPeakBytes: 100 * MiB))
        #expect(d.targetJobs == 7)
        #expect(d.rung == .withhold)
        #expect(d.reason.contains("memory"))
        // Memory in use above 85% of the budget: no job starts, whatever the predictions say.
        var h = governor()
        let full = (1...3).map {
            GovernorInput.RunningJob(id: JobID(pid: Int32($0), startTicks: 0), startedAt: Double($0), rssBytes: 200 * MiB,
                                     peakBytes: 200 * MiB, predictedPeakBytes: 200 * MiB)
        }
        let busy = h.decide(GovernorInput(now: 10, memoryUsedBytes: 900 * MiB, jobs: full, nextJobPeakBytes: 1 * MiB))
        #expect(busy.targetJobs == 3)
        #expect(busy.reason.contains("memory in use"))
    }

    @Test func aSingleJobLargerThanTheBudgetStillRuns() {
        var g = governor()
        let big = GovernorInput.RunningJob(id: JobID(pid: 1, startTicks: 0), startedAt: 0, rssBytes: 900 * MiB,
                                           peakBytes: 900 * MiB, predictedPeakBytes: 3000 * MiB, growing: true)
        let d = g.decide(GovernorInput(now: 1, memoryUsedBytes: 990 * MiB, jobs: [big], nextJobPeakBytes: 3000 * MiB))
        #expect(d.targetJobs == 1)
        #expect(d.freeze.isEmpty, "the oldest (here the only) job is never frozen")
    }

    /// Pressure rises: tokens are withheld first; only when memory keeps climbing is the newest job frozen, never the
    /// oldest; when the old jobs end and headroom returns, the frozen job is thawed and tokens come back.
    @Test func ladderWithholdsThenFreezesNewestThenThawsAndGivesTokensBack() {
        var trace = Trace(ticks: [
            (0.0, 100, [(1, 20), (2, 20), (3, 20), (4, 20)]),
            (0.5, 400, [(1, 150), (2, 100), (3, 80), (4, 60)]),      // growing past predictions
            (1.0, 700, [(1, 250), (2, 200), (3, 150), (4, 90)]),
            (1.5, 880, [(1, 300), (2, 260), (3, 200), (4, 110)]),
            (2.0, 960, [(1, 320), (2, 300), (3, 220), (4, 110)]),    // above 95%: freeze the newest
            (3.0, 990, [(1, 330), (2, 320), (3, 230), (4, 110)]),    // still: freeze the next newest
            (4.0, 995, [(1, 335), (2, 320), (3, 230), (4, 110)]),    // still: freeze job 2, job 1 runs on
            (5.0, 560, [(2, 320), (3, 230), (4, 110)]),              // job 1 ended
            (6.0, 250, [(3, 230), (4, 110)]),                        // job 2 ended
            (7.0, 250, [(3, 230), (4, 110)]),
            (8.0, 130, [(4, 110)]),
            (9.0, 20, []),
            (10.0, 20, []),
        ])
        trace.nextJobMiB = 100
        var g = governor(jobs: 8)
        let decisions = trace.replay(&g)
        func at(_ t: Double) -> GovernorDecision { decisions.first { $0.t == t }!.decision }

        // Withheld before any freeze.
        let firstWithheld = decisions.first { $0.decision.targetJobs < 8 }!.t
        let firstFreeze = decisions.first { !$0.decision.freeze.isEmpty }!.t
        #expect(firstWithheld < firstFreeze)
        #expect(at(1.0).freeze.isEmpty)
        #expect(at(1.0).targetJobs <= 4)
        // The newest job is frozen first, then the next newest, while memory is still below the budget (projected
        // growth gives it away); job 1 (the oldest) never.
        let freezes = decisions.flatMap { d in d.decision.freeze.map { (d.t, $0.pid) } }
        #expect(freezes.map(\.1) == [4, 3, 2])
        #expect(freezes.first!.0 <= 2.0)
        #expect(!freezes.contains { $0.1 == 1 })
        #expect(at(3.0).rung == .freezeJobs)
        // No job is admitted while jobs are frozen.
        for (t, d) in decisions where t >= 2.0 && t < 6.0 { #expect(d.targetJobs <= 4, "t=\(t)") }
        // Thawed once the older jobs ended, oldest frozen first.
        let thaws = decisions.flatMap { d in d.decision.thaw.map { (d.t, $0.pid) } }
        #expect(thaws.map(\.1) == [2, 3, 4])
        #expect(thaws.first!.0 >= 5.0)
        // Tokens are given back once everything has ended.
        #expect(at(10.0).targetJobs == 8)
        #expect(at(10.0).rung == .run)
    }

    /// When every job older than a frozen one has ended, the frozen one is the oldest and runs, even if memory
    /// says it does not fit (a job killed by the OOM killer can leave the model expecting the worst).
    @Test func theOldestJobIsThawedWhateverMemorySays() {
        var g = governor(jobs: 4, budgetMiB: 200)
        let small = GovernorInput.RunningJob(id: JobID(pid: 7, startTicks: 0), startedAt: 1, rssBytes: 8 * MiB,
                                             peakBytes: 8 * MiB, predictedPeakBytes: 300 * MiB, frozen: true)
        let d = g.decide(GovernorInput(now: 10, memoryUsedBytes: 8 * MiB, jobs: [small], nextJobPeakBytes: 300 * MiB))
        #expect(d.thaw.map(\.pid) == [7])
        #expect(d.targetJobs >= 1)
    }

    /// Under `jobgov daemon`, a build told to yield to an older one freezes even its oldest job while that job is
    /// small and does not fit the share, keeps it frozen while told so, and runs it again once the daemon lifts it.
    /// Alone, the same job runs.
    @Test func aBuildThatYieldsFreezesItsSmallOldestJob() {
        let link = GovernorInput.RunningJob(id: JobID(pid: 7, startTicks: 0), startedAt: 1, rssBytes: 20 * MiB,
                                            peakBytes: 20 * MiB, predictedPeakBytes: 400 * MiB, growing: true,
                                            growthRate: Double(150 * MiB))
        let input = GovernorInput(now: 2, memoryUsedBytes: 25 * MiB, jobs: [link], nextJobPeakBytes: 400 * MiB)
        var alone = governor(jobs: 4, budgetMiB: 100)
        #expect(alone.decide(input).freeze.isEmpty, "alone, the oldest job always runs")
        var yielding = governor(jobs: 4, budgetMiB: 100)
        yielding.setYieldsToOlderBuild(true)
        let d = yielding.decide(input)
        #expect(d.freeze.map(\.pid) == [7])
        #expect(d.reason.contains("yield"))
        // Told to yield, it is frozen even where the share would hold it: the daemon counts what the builds hold,
        // and a share can be there while the memory behind it is not.
        var roomy = governor(jobs: 4, budgetMiB: 1000)
        roomy.setYieldsToOlderBuild(true)
        #expect(roomy.decide(input).freeze.map(\.pid) == [7])
        // Frozen and still told to yield: not thawed, even where it fits the share.
        var frozen = link
        frozen.frozen = true
        frozen.growing = false
        let later = GovernorInput(now: 3, memoryUsedBytes: 25 * MiB, jobs: [frozen], nextJobPeakBytes: 400 * MiB)
        #expect(yielding.decide(later).thaw.isEmpty)
        let roomyLater = GovernorInput(now: 5, memoryUsedBytes: 25 * MiB, jobs: [frozen], nextJobPeakBytes: 400 * MiB)
        #expect(roomy.decide(roomyLater).thaw.isEmpty)
        // A job that has grown past half its peak is not frozen to yield: without swap it would free nothing.
        var grown = link
        grown.rssBytes = 250 * MiB
        grown.peakBytes = 250 * MiB
        var other = governor(jobs: 4, budgetMiB: 100)
        other.setYieldsToOlderBuild(true)
        #expect(other.decide(GovernorInput(now: 2, memoryUsedBytes: 255 * MiB, jobs: [grown],
                                           nextJobPeakBytes: 400 * MiB)).freeze.isEmpty)
        // The daemon lifts it: the oldest job runs again, whatever memory says.
        yielding.setYieldsToOlderBuild(false)
        let again = GovernorInput(now: 4, memoryUsedBytes: 25 * MiB, jobs: [frozen], nextJobPeakBytes: 400 * MiB)
        #expect(yielding.decide(again).thaw.map(\.pid) == [7])
    }

    @Test func raisingWaitsAfterLoweringSoTheTargetDoesNotFlap() {
        var g = governor(jobs: 8)
        let job = { (pid: Int32, rss: UInt64) in
            // Started long ago: a recently started big job would raise the estimate for the next ones.
            GovernorInput.RunningJob(id: JobID(pid: pid, startTicks: 0), startedAt: Double(pid) - 60, rssBytes: rss * MiB,
                                     peakBytes: rss * MiB, predictedPeakBytes: 200 * MiB)
        }
        let low = g.decide(GovernorInput(now: 0, memoryUsedBytes: 900 * MiB, jobs: (1...4).map { job($0, 200) },
                                         nextJobPeakBytes: 100 * MiB))
        #expect(low.targetJobs == 4)
        // Three jobs end at once: room for more, but the hold keeps the target down for a second.
        let soon = g.decide(GovernorInput(now: 0.3, memoryUsedBytes: 300 * MiB, jobs: [job(1, 200)],
                                          nextJobPeakBytes: 100 * MiB))
        #expect(soon.targetJobs == 4)
        // Then it rises, as far as fits with a 3% margin: 300 + 6 x 100 <= 970, a seventh would not.
        let later = g.decide(GovernorInput(now: 1.5, memoryUsedBytes: 300 * MiB, jobs: [job(1, 200)],
                                           nextJobPeakBytes: 100 * MiB))
        #expect(later.targetJobs == 7)
    }

    /// A job started a moment ago that is already far bigger than the model's estimate means a heavier phase
    /// began: the next jobs are counted at its size.
    @Test func aRecentBigJobRaisesTheEstimateForTheNextOnes() {
        var g = governor(jobs: 16)
        let big = GovernorInput.RunningJob(id: JobID(pid: 1, startTicks: 0), startedAt: 9.5, rssBytes: 250 * MiB,
                                           peakBytes: 250 * MiB, predictedPeakBytes: 40 * MiB)
        let d = g.decide(GovernorInput(now: 10, memoryUsedBytes: 260 * MiB, jobs: [big], nextJobPeakBytes: 40 * MiB,
                                       typicalJobPeakBytes: 30 * MiB))
        // 260 + 1 x 250 (the running one, past its prediction) ... each new one at 250: 2 more at most.
        #expect(d.targetJobs <= 3)
        var h = governor(jobs: 16)
        let old = GovernorInput.RunningJob(id: JobID(pid: 1, startTicks: 0), startedAt: 0, rssBytes: 250 * MiB,
                                           peakBytes: 250 * MiB, predictedPeakBytes: 250 * MiB)
        let e = h.decide(GovernorInput(now: 10, memoryUsedBytes: 260 * MiB, jobs: [old], nextJobPeakBytes: 40 * MiB,
                                       typicalJobPeakBytes: 30 * MiB))
        #expect(e.targetJobs > 10, "a big job known to be big says nothing about the next ones")
    }

    @Test func cpuSaturationHoldsTheJobCount() {
        var g = governor(jobs: 8)
        let jobs = (1...3).map {
            GovernorInput.RunningJob(id: JobID(pid: Int32($0), startTicks: 0), startedAt: 0, rssBytes: 10 * MiB,
                                     peakBytes: 10 * MiB, predictedPeakBytes: 10 * MiB)
        }
        var input = GovernorInput(now: 0, memoryUsedBytes: 30 * MiB, jobs: jobs, nextJobPeakBytes: 10 * MiB,
                                  cpuBusy: 0.99)
        #expect(g.decide(input).targetJobs == 3)
        input.now = 2
        input.cpuBusy = 0.5
        #expect(g.decide(input).targetJobs == 8)
        // One job left and the CPUs still busy: not below one job per CPU (no ratchet as jobs end).
        input.now = 4
        input.cpuBusy = 0.99
        input.jobs = [jobs[0]]
        #expect(g.decide(input).targetJobs == 2)
    }

    /// Under `jobgov daemon` two builds each using half of the CPUs would each read 50% busy and start jobs up to
    /// their ceiling on full CPUs; measured against its share of one CPU each is busy, and holds.
    @Test func aCPUShareFromTheDaemonHoldsTheJobCountEarlier() {
        let job = GovernorInput.RunningJob(id: JobID(pid: 1, startTicks: 0), startedAt: 0, rssBytes: 10 * MiB,
                                           peakBytes: 10 * MiB, predictedPeakBytes: 10 * MiB)
        let input = GovernorInput(now: 0, memoryUsedBytes: 10 * MiB, jobs: [job], nextJobPeakBytes: 10 * MiB,
                                  cpuBusy: 0.5)
        var alone = governor(jobs: 8)
        #expect(alone.decide(input).targetJobs == 8, "half of two CPUs is not busy")
        var shared = governor(jobs: 8)
        shared.setCPUShare(1)
        let d = shared.decide(input)
        #expect(d.targetJobs == 1, "one CPU used of a share of one: held at the job running")
        #expect(d.reason.contains("cpu"))
        // A share of a third of the CPUs (three builds on two) still lets each build run one job.
        var third = governor(jobs: 8)
        third.setCPUShare(0.67)
        #expect(third.decide(GovernorInput(now: 0, memoryUsedBytes: 0, jobs: [], nextJobPeakBytes: 10 * MiB,
                                           cpuBusy: 0.4)).targetJobs == 1)
        // The I/O hold's floor is the share too.
        var io = governor(jobs: 8)
        io.setCPUShare(1)
        #expect(io.decide(GovernorInput(now: 0, memoryUsedBytes: 10 * MiB, jobs: [job], nextJobPeakBytes: 10 * MiB,
                                        ioLatencySeconds: 0.250)).targetJobs == 1)
    }

    @Test func slowIOHoldsTheJobCount() {
        var g = governor(jobs: 8)
        let job = GovernorInput.RunningJob(id: JobID(pid: 1, startTicks: 0), startedAt: 0, rssBytes: 10 * MiB,
                                           peakBytes: 10 * MiB, predictedPeakBytes: 10 * MiB)
        let d = g.decide(GovernorInput(now: 0, memoryUsedBytes: 10 * MiB, jobs: [job], nextJobPeakBytes: 10 * MiB,
                                       ioLatencySeconds: 0.250))
        #expect(d.targetJobs == 2, "held at the running jobs, but not below one per CPU")
        #expect(d.reason.contains("io"))
    }

    @Test func machineOutOfMemoryFreezesTheBuildAndThawsWhenItRecovers() {
        var g = governor(jobs: 4)
        let jobs = (1...3).map {
            GovernorInput.RunningJob(id: JobID(pid: Int32($0), startTicks: 0), startedAt: Double($0), rssBytes: 10 * MiB,
                                     peakBytes: 10 * MiB, predictedPeakBytes: 10 * MiB)
        }
        let total: UInt64 = 16 << 30
        var input = GovernorInput(now: 0, memoryUsedBytes: 30 * MiB, jobs: jobs, nextJobPeakBytes: 10 * MiB,
                                  systemAvailableBytes: total / 50, systemTotalBytes: total)
        let frozen = g.decide(input)
        #expect(frozen.buildFrozen)
        #expect(frozen.rung == .freezeBuild)
        #expect(frozen.freeze.map(\.pid) == [2, 3], "all but the oldest stay frozen after the build thaws")
        input.now = 1
        input.systemAvailableBytes = total / 20
        #expect(g.decide(input).buildFrozen, "between the two thresholds it stays frozen")
        input.now = 2
        input.systemAvailableBytes = total / 5
        #expect(!g.decide(input).buildFrozen)
    }

    @Test func ceilingFromCtlBoundsTheTarget() {
        var g = governor(jobs: 8)
        g.setCeiling(3)
        let d = g.decide(GovernorInput(now: 0, memoryUsedBytes: 0, jobs: [], nextJobPeakBytes: MiB))
        #expect(d.targetJobs == 3)
        // A raise from the user is not held back by the hysteresis after the lowering.
        g.setCeiling(6)
        let raised = g.decide(GovernorInput(now: 0.1, memoryUsedBytes: 0, jobs: [], nextJobPeakBytes: MiB))
        #expect(raised.targetJobs == 6)
        #expect(raised.calm, "nothing near a limit")
    }
}

@Suite("Memory plan and time-aware admission")
struct MemoryPlanTests {
    private func job(_ pid: Int32, started: Double, rss: UInt64, peak: UInt64? = nil, predicted: UInt64,
                     remaining: Double? = nil, ran: Double = 0, shape: MemoryShape? = nil, growing: Bool = false,
                     rate: Double = 0) -> GovernorInput.RunningJob {
        GovernorInput.RunningJob(id: JobID(pid: pid, startTicks: 0), startedAt: started, rssBytes: rss * MiB,
                                 peakBytes: (peak ?? rss) * MiB, predictedPeakBytes: predicted * MiB,
                                 growing: growing, growthRate: rate * Double(MiB), ranSeconds: ran,
                                 runSeconds: remaining.map { ran + $0 }, shape: shape)
    }

    static let linear = MemoryShape(reach: MemoryShape.levels)!

    @Test func jobsThatEndAtDifferentTimesDoNotPeakTogether() {
        // A at its peak, ending in 0.2 s; B young (0.2 s of a 2.2 s run), growing linearly to 400 MiB as the same
        // command did before. Their peaks sum to 800 MiB, but when A ends B holds at most a quarter of its peak
        // (its growth planned 1.5 times as fast as measured, and the step envelope above the line), and when B
        // peaks A is gone.
        let b = MemoryPlan.Item(bytes: 40, peakBytes: 400, endsAt: 12, shape: Self.linear, ranSeconds: 0.2,
                                runSeconds: 2.2)
        let plan = MemoryPlan(now: 10, baseBytes: 0, items: [.init(bytes: 400, peakBytes: 400, endsAt: 10.2), b])
        #expect(plan.peakBytes == 500)
        // The same job of unknown shape is held at its peak until its end: the sum of peaks.
        var unknownShape = b
        unknownShape.shape = nil
        #expect(MemoryPlan(now: 10, baseBytes: 0, items: [.init(bytes: 400, peakBytes: 400, endsAt: 10.2),
                                                          unknownShape]).peakBytes == 800)
        // Without ends it is the plain sum of peaks.
        let unknown = MemoryPlan(now: 10, baseBytes: 5, items: [
            .init(bytes: 400, peakBytes: 400, endsAt: nil), .init(bytes: 40, peakBytes: 400, endsAt: nil),
        ])
        #expect(unknown.peakBytes == 805)
        // A frozen job thawed into the plan leaves the base it was counted in.
        let thawed = MemoryPlan(now: 0, baseBytes: 100).adding(.init(bytes: 100, peakBytes: 300, endsAt: 1), fromBase: 100)
        #expect(thawed.baseBytes == 0)
        #expect(thawed.peakBytes == 300)
    }

    @Test func anEarlyPeakingJobIsPlannedAtItsPeakEarly() {
        // A compile that held 90% of its peak by a fifth of its run (as g++ does), 1 s into a 10 s run: a linear ramp
        // would plan it at about a tenth; its measured shape plans it near its peak within the next second.
        let early = MemoryShape(reach: [0.05, 0.1, 0.15, 0.2, 0.6])!
        let item = MemoryPlan.Item(bytes: 50, peakBytes: 600, endsAt: 20, shape: early, ranSeconds: 1, runSeconds: 10)
        let other = MemoryPlan.Item(bytes: 300, peakBytes: 300, endsAt: 11.5)
        // When the other job ends (1.5 s on), this one has passed 90% of its peak and is planned at its peak (the
        // envelope steps up to the next level the moment the previous one was reached): 600 + 300.
        #expect(MemoryPlan(now: 10, baseBytes: 0, items: [other, item]).peakBytes == 900)
        // Half a second on, it is still below a quarter of the run's 90% mark: planned at 90%.
        let soon = MemoryPlan.Item(bytes: 50, peakBytes: 600, endsAt: 20, shape: early, ranSeconds: 1, runSeconds: 10)
        #expect(MemoryPlan(now: 10, baseBytes: 0, items: [.init(bytes: 300, peakBytes: 300, endsAt: 10.4), soon])
            .peakBytes == 300 + 540)
    }

    @Test func knownDurationsAdmitMoreThanTheSumOfPeaks() {
        // Four jobs of 200 MiB known from the history, started a second apart, each running 4 s; budget 1000.
        // They hold 400 MiB (plus 20 outside them). As a sum of peaks (820) only one more 150 MiB job fits; knowing
        // they end one after the other, more do.
        let now = 10.0
        func jobs(known: Bool) -> [GovernorInput.RunningJob] {
            (0..<4).map { i in
                let age = 3.5 - Double(i)  // the oldest is 3.5 s in, near its end
                return job(Int32(i + 1), started: now - age, rss: UInt64(200 * age / 4), predicted: 200,
                           remaining: known ? 4 - age : nil, ran: age, shape: known ? Self.linear : nil)
            }
        }
        func target(_ known: Bool) -> Int {
            var g = Governor(settings: GovernorSettings(maxJobs: 16, budget: 1000 * MiB, cpus: 2))
            return g.decide(GovernorInput(now: now, memoryUsedBytes: 420 * MiB, jobs: jobs(known: known),
                                          nextJobPeakBytes: 150 * MiB, typicalJobPeakBytes: 150 * MiB)).targetJobs
        }
        #expect(target(false) == 5)
        #expect(target(true) > 5)
    }

    @Test func aHeavyBatchIsFrozenWhileSmallAndKnownJobsAreLeftAlone() {
        // A phase change: eight jobs predicted at 20 MiB (the light phase's mean) started together and are at
        // 40 MiB, growing 100 MiB/s. Memory is low and half a second of growth still fits, but together they will
        // pass the budget: the newest surprises are frozen now, the oldest never.
        let surprises = (1...8).map {
            job(Int32($0), started: 5 + Double($0) * 0.01, rss: 40, predicted: 20, growing: true, rate: 100)
        }
        var g = Governor(settings: GovernorSettings(maxJobs: 16, budget: 1000 * MiB, cpus: 2))
        let d = g.decide(GovernorInput(now: 5.3, memoryUsedBytes: 330 * MiB, jobs: surprises,
                                       nextJobPeakBytes: 20 * MiB))
        #expect(!d.freeze.isEmpty)
        #expect(!d.freeze.contains(JobID(pid: 1, startTicks: 0)))
        #expect(d.freeze.first == JobID(pid: 8, startTicks: 0), "newest first")
        // The same memory in jobs the model knows (history says 140 MiB each, and that is what they reach) is
        // admission's business: nothing is frozen while use and its near future fit.
        let known = (1...8).map {
            job(Int32($0), started: 5 + Double($0) * 0.01, rss: 40, predicted: 140, growing: true, rate: 100)
        }
        var g2 = Governor(settings: GovernorSettings(maxJobs: 16, budget: 1000 * MiB, cpus: 2))
        let d2 = g2.decide(GovernorInput(now: 5.3, memoryUsedBytes: 330 * MiB, jobs: known, nextJobPeakBytes: 140 * MiB))
        #expect(d2.freeze.isEmpty)
    }

    @Test func aThawDoesNotTripTheNextFreeze() {
        // Two running jobs and four frozen ones that were growing 150 MiB/s. Thawing all four would, at those
        // rates, pass the budget within half a second: only as many are thawed as the freeze check accepts, so
        // the next tick freezes nothing.
        var g = Governor(settings: GovernorSettings(maxJobs: 16, budget: 1000 * MiB, cpus: 2))
        var jobs = [job(1, started: 0, rss: 300, predicted: 320, remaining: 0.5),
                    job(2, started: 1, rss: 200, predicted: 220, remaining: 0.5)]
        for pid in Int32(3)...6 {
            var j = job(pid, started: 2 + Double(pid) * 0.01, rss: 60, predicted: 150, growing: true, rate: 150)
            j.frozen = true
            jobs.append(j)
        }
        let used: UInt64 = 300 + 200 + 4 * 60
        let d = g.decide(GovernorInput(now: 3, memoryUsedBytes: used * MiB, jobs: jobs, nextJobPeakBytes: 150 * MiB))
        #expect(!d.thaw.isEmpty && d.thaw.count < 4, "thawed \(d.thaw.count)")
        for i in jobs.indices where d.thaw.contains(jobs[i].id) { jobs[i].frozen = false }
        let next = g.decide(GovernorInput(now: 3.1, memoryUsedBytes: used * MiB, jobs: jobs, nextJobPeakBytes: 150 * MiB))
        #expect(next.freeze.isEmpty)
    }
}

@Suite("JobTable")
struct JobTableTests {
    @Test func childrenOfClientsAreJobsAndSubMakesAreNot() {
        var table = JobTable()
        let procs = [
            ProcessObservation(pid: 10, parent: 1, name: "make"),
            ProcessObservation(pid: 11, parent: 10, name: "sh", rssBytes: 1 * MiB, arguments: ["/bin/sh", "-c", "cc -c a.c"]),
            ProcessObservation(pid: 12, parent: 11, name: "cc1", rssBytes: 40 * MiB, peakRSSBytes: 60 * MiB),
            ProcessObservation(pid: 20, parent: 10, name: "sh", arguments: ["/bin/sh", "-c", "make -C sub"]),
            ProcessObservation(pid: 21, parent: 20, name: "make"),
            ProcessObservation(pid: 22, parent: 21, name: "ld", rssBytes: 100 * MiB, arguments: ["ld", "-o", "x"]),
        ]
        _ = table.update(procs, launched: 10, now: 1)
        let jobs = table.running
        #expect(jobs.map(\.id.pid).sorted() == [11, 22])
        let compile = jobs.first { $0.id.pid == 11 }!
        #expect(compile.command == "cc -c a.c")
        #expect(compile.rssBytes == 41 * MiB)
        #expect(compile.peakBytes == 60 * MiB)
        #expect(jobs.first { $0.id.pid == 22 }!.command == "ld -o x")

        let finished = table.update(Array(procs.dropFirst(3)) + [procs[0]], launched: 10, now: 3)
        #expect(finished.count == 1)
        #expect(finished[0].command == "cc -c a.c")
        #expect(finished[0].peakBytes == 60 * MiB)
        #expect(finished[0].seconds == 2)
    }

    @Test func aReusedPidIsANewJob() {
        var table = JobTable()
        _ = table.update([ProcessObservation(pid: 1, parent: 0, name: "ninja"),
                          ProcessObservation(pid: 5, parent: 1, name: "cc", startTicks: 100, arguments: ["cc", "a"])],
                         launched: 1, now: 0)
        let finished = table.update([ProcessObservation(pid: 1, parent: 0, name: "ninja"),
                                     ProcessObservation(pid: 5, parent: 1, name: "cc", startTicks: 200, arguments: ["cc", "b"])],
                                    launched: 1, now: 1)
        #expect(finished.map(\.command) == ["cc a"])
        #expect(table.running.map(\.command) == ["cc b"])
    }

    @Test func frozenTimeIsCounted() {
        var table = JobTable()
        let procs = [ProcessObservation(pid: 1, parent: 0, name: "make"), ProcessObservation(pid: 2, parent: 1, name: "cc")]
        _ = table.update(procs, launched: 1, now: 0)
        let id = table.running[0].id
        table.setFrozen(id, true, now: 1)
        table.setFrozen(id, false, now: 4)
        let done = table.update([procs[0]], launched: 1, now: 5)
        #expect(done[0].frozenSeconds == 3)
    }
}

@Suite("MemoryModel")
struct MemoryModelTests {
    @Test func priorUntilSomethingIsMeasured() {
        let model = MemoryModel(prior: 256 * MiB)
        #expect(model.nextJobPeak == 256 * MiB)
        #expect(model.predictedPeak(of: "cc a.c") == 256 * MiB)
        #expect(MemoryModel.defaultPrior(budget: 14 << 30, cpus: 8) == (14 << 30) / 16)
        #expect(MemoryModel.defaultPrior(budget: 100 * MiB, cpus: 8) == 64 * MiB)
    }

    @Test func learnsFromFinishedJobs() {
        var model = MemoryModel(prior: 256 * MiB)
        for i in 0..<10 {
            model.record(FinishedJob(command: "cc \(i)", startedAt: 0, endedAt: 1, peakBytes: UInt64(10 + i) * MiB,
                                     frozenSeconds: 0))
        }
        #expect(model.predictedPeak(of: "cc 3") == 13 * MiB)
        // 90th percentile (19 MiB) plus a tenth.
        #expect(model.nextJobPeak == 19 * MiB + 19 * MiB / 10)
    }

    @Test func historyForeseesTheLinksAtTheEnd() {
        var model = MemoryModel(prior: 256 * MiB, history: ["cc a": 50 * MiB, "cc b": 60 * MiB, "ld all": 800 * MiB])
        model.noteStarted("cc a")
        #expect(model.nextJobPeak == 800 * MiB, "links not yet started dominate what may come")
        #expect(model.predictedPeak(of: "cc b") == 60 * MiB)
        model.noteStarted("cc b")
        model.noteStarted("ld all")
        model.record(FinishedJob(command: "ld all", startedAt: 0, endedAt: 1, peakBytes: 900 * MiB, frozenSeconds: 0))
        #expect(model.updatedHistory["ld all"] == 900 * MiB)
    }

    @Test func theHistorysOrderSaysWhichJobsComeNext() {
        // The earlier build: four light compiles, then three heavy ones, then a link.
        let order = ["cc 1", "cc 2", "cc 3", "cc 4", "heavy 1", "heavy 2", "heavy 3", "ld"]
        let peaks: [String: UInt64] = ["cc 1": 10, "cc 2": 10, "cc 3": 10, "cc 4": 10,
                                       "heavy 1": 200, "heavy 2": 200, "heavy 3": 200, "ld": 400]
        var model = MemoryModel(prior: 64, history: peaks, historyOrder: order)
        #expect(model.upcomingPeaks(count: 3) == [10, 10, 10])
        for c in order.prefix(4) { model.noteStarted(c) }
        #expect(model.upcomingPeaks(count: 10) == [200, 200, 200, 400])
        model.noteStarted("heavy 2")
        #expect(model.upcomingPeaks(count: 2) == [200, 200], "heavy 1 and 3: started out of order is fine")
        #expect(model.updatedHistoryOrder == ["cc 1", "cc 2", "cc 3", "cc 4", "heavy 2", "heavy 1", "heavy 3", "ld"])
        // An incremental build that starts far along passes over what came well before: it is not coming.
        var long = (0..<40).map { "cc \($0)" }
        long.append("ld")
        var incremental = MemoryModel(prior: 64, history: Dictionary(uniqueKeysWithValues: long.map { ($0, 10) }),
                                      historyOrder: long)
        incremental.noteStarted("cc 39")
        #expect(incremental.upcomingPeaks(count: 100).count == MemoryModel.reorderWindow + 1)
    }

    @Test func upcomingJobsAreAdmittedAtTheirOwnPeaks() {
        // Two light jobs run; the history says three 300 MiB jobs come next. The mean of everything pending (the
        // fallback) would admit several; knowing the order, only what fits of the heavy ones is admitted.
        func target(_ upcoming: [UInt64]) -> Int {
            var g = Governor(settings: GovernorSettings(maxJobs: 16, budget: 1000 * MiB, cpus: 2))
            let jobs = (1...2).map {
                GovernorInput.RunningJob(id: JobID(pid: Int32($0), startTicks: 0), startedAt: 0, rssBytes: 10 * MiB,
                                         peakBytes: 10 * MiB, predictedPeakBytes: 10 * MiB)
            }
            return g.decide(GovernorInput(now: 1, memoryUsedBytes: 20 * MiB, jobs: jobs, nextJobPeakBytes: 300 * MiB,
                                          typicalJobPeakBytes: 60 * MiB, upcomingJobPeaksBytes: upcoming)).targetJobs
        }
        #expect(target([]) == 2 + 1 + 11)   // 20 running, 300 for the first, then 60 each: 980 of 1000
        let heavyNext: [UInt64] = [300 * MiB, 300 * MiB, 300 * MiB, 10 * MiB, 10 * MiB]
        #expect(target(heavyNext) == 2 + 5 + 1)   // 20, three of 300, two of 10, then one more at 60: 1000
    }

    @Test func durationsAreKnownPerCommandOnly() {
        var model = MemoryModel(prior: 256 * MiB, history: ["cc a": 50 * MiB], historySeconds: ["cc a": 2.5])
        #expect(model.knownSeconds(of: "cc a") == 2.5)
        #expect(model.knownSeconds(of: "cc b") == nil, "no typical duration: the first jobs to end are the short ones")
        model.record(FinishedJob(command: "cc b", startedAt: 1, endedAt: 5, peakBytes: 10 * MiB, frozenSeconds: 1))
        #expect(model.knownSeconds(of: "cc b") == 3, "frozen time is not running time")
        #expect(model.updatedHistorySeconds == ["cc a": 2.5, "cc b": 3])
    }

    @Test func historyFileRoundTripsOddCommands() {
        let history = ["cc -c 'a\tb'.c": 5, "echo \"x\ny\" \\": 7, "plain": UInt64(1) << 40]
        #expect(MemoryHistoryFormat.decode(MemoryHistoryFormat.encode(history)) == history)
        #expect(MemoryHistoryFormat.decode("garbage\n12\tok\nx\ty\n") == ["ok": 12])
        // With durations (milliseconds), and the older lines without them, side by side.
        let text = MemoryHistoryFormat.encode(history, seconds: ["plain": 1.25])
        #expect(text.contains("\(UInt64(1) << 40)\t1250\tplain\n"))
        let both = MemoryHistoryFormat.decodeAll(text + "9\told style\n")
        #expect(both.peaks == history.merging(["old style": 9]) { a, _ in a })
        #expect(both.seconds == ["plain": 1.25])
        // Lines keep the order the commands started in.
        let ordered = MemoryHistoryFormat.encode(["b": 1, "a": 2, "c": 3], order: ["c", "a", "gone"])
        #expect(MemoryHistoryFormat.decodeAll(ordered).order == ["c", "a", "b"])
        let a = MemoryHistoryFormat.fileName(directory: "/src", command: ["make"])
        #expect(a == MemoryHistoryFormat.fileName(directory: "/src", command: ["make"]))
        #expect(a != MemoryHistoryFormat.fileName(directory: "/src2", command: ["make"]))
        #expect(a.count == 20)
    }
}

@Suite("Re-run shell plan and config file")
struct RerunShellAndConfigTests {
    @Test func shellGoesLastAndTheUsersShellIsKept() {
        let r = RerunShellPlan.install("/run/j/shell", argv: ["make", "-j8", "SHELL=/bin/bash", "all"], makefileShell: "/bin/zsh")
        #expect(r.argv == ["make", "-j8", "all", "SHELL=/run/j/shell"])
        #expect(r.shell == "/bin/bash", "the user's command-line SHELL wins")
        let m = RerunShellPlan.install("/w", argv: ["make"], makefileShell: "/bin/bash")
        #expect(m.shell == "/bin/bash")
        #expect(RerunShellPlan.install("/w", argv: ["make"], makefileShell: nil).shell == "/bin/sh")
    }

    @Test func makefileShellAssignments() {
        #expect(RerunShellPlan.makefileShell(text: "CC = gcc\nSHELL := /bin/bash\nall:\n") == "/bin/bash")
        #expect(RerunShellPlan.makefileShell(text: "override SHELL = /usr/bin/zsh # comment\n") == "/usr/bin/zsh")
        #expect(RerunShellPlan.makefileShell(text: "export SHELL ?= /bin/dash\n") == "/bin/dash")
        #expect(RerunShellPlan.makefileShell(text: "SHELL := $(shell which bash)\n") == nil)
        #expect(RerunShellPlan.makefileShell(text: "SHELLFLAGS = -e\nall:\n\techo SHELL=/bin/x\n") == nil)
    }

    @Test func makefileLocationFollowsDashCAndDashF() {
        #expect(RerunShellPlan.makefileLocation(argv: ["make", "-C", "sub", "-j4"]) == ("sub", nil))
        #expect(RerunShellPlan.makefileLocation(argv: ["make", "-Csub", "-f", "x.mk"]) == ("sub", "x.mk"))
        #expect(RerunShellPlan.makefileLocation(argv: ["make", "--directory=d", "--file=f.mk"]) == ("d", "f.mk"))
        #expect(RerunShellPlan.makefileLocation(argv: ["make", "--", "-C", "x"]) == (nil, nil))
    }

    @Test func configFileKeysValuesAndMistakes() throws {
        let parsed = try ConfigFile.parse("# defaults\nmemory-threshold = 80%\n\nno-rerun = true  # make only\n", path: "c")
        #expect(parsed == ["memory-threshold": "80%", "no-rerun": "true"])
        #expect(throws: CommandLineError.self) { try ConfigFile.parse("memory = 80\n", path: "c") }
        #expect(throws: CommandLineError.self) { try ConfigFile.parse("fixed-jobs = yes\n", path: "c") }
        #expect(throws: CommandLineError.self) { try ConfigFile.parse("just words\n", path: "c") }
        do {
            _ = try ConfigFile.parse("a\nmemory = 1\n", path: "/etc/x")
        } catch {
            #expect(error.description.contains("/etc/x:1"))
        }
        let percent = RunSettings.cpuThreshold
        #expect(try percent.value("85", from: "x") == Percent(85))
        #expect(try percent.value("85%", from: "x").share == 0.85)
        #expect(throws: CommandLineError.self) { try percent.value("0", from: "x") }
        #expect(throws: CommandLineError.self) { try percent.value("150", from: "x") }
        #expect(try RunSettings.ioLatency.value("100ms", from: "x").seconds == 0.1)
        #expect(throws: CommandLineError.self) { try RunSettings.ioLatency.value("-1", from: "x") }
    }
}

@Suite("Memory shapes, a wrong history, and the rungs that free frozen memory")
struct ShapeAndRungTests {
    @Test func aShapeIsMeasuredFromReadingsAndKeptInTheHistory() {
        // A compile: half its 600 MiB peak by 1 s of its 10 s run, 90% by 3 s, the peak at 6 s.
        let readings: [(seconds: Double, bytes: UInt64)] = [(0, 10 * MiB), (0.5, 160 * MiB), (1, 300 * MiB),
                                                            (2, 450 * MiB), (3, 540 * MiB), (6, 600 * MiB)]
        let shape = MemoryShape.measured(readings, peak: 600 * MiB, runSeconds: 10)!
        #expect(shape.reach == [0.05, 0.1, 0.2, 0.3, 0.6])
        // Its envelope never plans the job below what it held: at 15% of the run it is planned at 75% of its peak.
        #expect(shape.level(at: 0.15) == 0.75)
        #expect(shape.level(at: 0.7) == 1)
        // A peak the readings missed (the kernel's exact high-water mark) came at the end.
        #expect(MemoryShape.measured(readings, peak: 700 * MiB, runSeconds: 10)!.reach.last == 1)
        // The history keeps it beside the peak and the duration; older lines still read.
        let text = MemoryHistoryFormat.encode(["g++ -c a.cc": 600 * MiB, "ld": 50 * MiB],
                                              seconds: ["g++ -c a.cc": 10], shapes: ["g++ -c a.cc": shape])
        #expect(text.contains("\t10000\ts:0.05,0.1,0.2,0.3,0.6\tg++ -c a.cc\n"))
        let back = MemoryHistoryFormat.decodeAll(text + "12\t100\told line\n")
        #expect(back.shapes["g++ -c a.cc"] == shape)
        #expect(back.peaks["old line"] == 12 && back.shapes["old line"] == nil)
        // A job with the shape from the history is planned along it; one without, at its peak from the start.
        var model = MemoryModel(prior: 64 * MiB, history: back.peaks, historySeconds: back.seconds,
                                historyShapes: back.shapes)
        #expect(model.knownShape(of: "g++ -c a.cc") == shape)
        #expect(model.knownShape(of: "ld") == nil)
        // Two runs of one command: the earlier reach of each level is kept.
        model.record(FinishedJob(command: "ld", startedAt: 0, endedAt: 1, peakBytes: 50 * MiB, frozenSeconds: 0,
                                 shape: MemoryShape(reach: [0.5, 0.5, 0.5, 0.5, 0.5])))
        model.record(FinishedJob(command: "ld", startedAt: 0, endedAt: 1, peakBytes: 50 * MiB, frozenSeconds: 0,
                                 shape: MemoryShape(reach: [0.1, 0.6, 0.6, 0.6, 0.9])))
        #expect(model.knownShape(of: "ld")?.reach == [0.1, 0.5, 0.5, 0.5, 0.5])
    }

    @Test func aHistoryThatIsWrongByHalfIsCorrected() {
        let peaks: [String: UInt64] = Dictionary(uniqueKeysWithValues: (0..<10).map { ("cc \($0)", 100 * MiB) })
        var model = MemoryModel(prior: 64 * MiB, history: peaks)
        #expect(model.predictedPeak(of: "cc 9") == 100 * MiB)
        // The first jobs turn out twice what the history says, one while still running.
        model.noteStarted("cc 0")
        model.noteRunning("cc 0", bytes: 190 * MiB)
        #expect(model.predictedPeak(of: "cc 9") == 190 * MiB)
        for i in 1...4 {
            model.noteStarted("cc \(i)")
            model.record(FinishedJob(command: "cc \(i)", startedAt: 0, endedAt: 1, peakBytes: 200 * MiB, frozenSeconds: 0))
        }
        #expect(model.historyCorrection == 2)
        #expect(model.predictedPeak(of: "cc 9") == 200 * MiB)
        #expect(model.nextJobPeak == 200 * MiB)
        // One job smaller than the history says does not scale it down: that takes four finished jobs.
        var smaller = MemoryModel(prior: 64 * MiB, history: peaks)
        smaller.record(FinishedJob(command: "cc 1", startedAt: 0, endedAt: 1, peakBytes: 20 * MiB, frozenSeconds: 0))
        #expect(smaller.predictedPeak(of: "cc 9") == 100 * MiB)
    }

    @Test func whereNothingCanBeUndoneTheHistoryCountsDoubleUntilAJobConfirmsIt() {
        let peaks: [String: UInt64] = Dictionary(uniqueKeysWithValues: (0..<10).map { ("cc \($0)", 100 * MiB) })
        let seconds = Dictionary(uniqueKeysWithValues: peaks.keys.map { ($0, 4.0) })
        let shapes = Dictionary(uniqueKeysWithValues: peaks.keys.map { ($0, MemoryShape(reach: [0.1, 0.2, 0.3, 0.4, 0.5])!) })
        func model() -> MemoryModel {
            MemoryModel(prior: 64 * MiB, history: peaks, historySeconds: seconds, historyOrder: peaks.keys.sorted(),
                        historyShapes: shapes, historyDoubt: 2)
        }
        var running = model()
        #expect(running.predictedPeak(of: "cc 9") == 200 * MiB)
        #expect(running.upcomingJobs(count: 1).first?.peakBytes == 200 * MiB)
        // Before the point where the history says it peaks (half of its 4 s), a job at its peak confirms nothing.
        running.noteStarted("cc 0")
        running.noteRunning("cc 0", bytes: 98 * MiB, ranSeconds: 1.5)
        #expect(running.predictedPeak(of: "cc 9") == 200 * MiB)
        // Past that point, still about at the history's peak: the history holds for this build.
        running.noteRunning("cc 0", bytes: 98 * MiB, ranSeconds: 2.5)
        #expect(running.predictedPeak(of: "cc 9") == 100 * MiB)
        // A finished job that matches confirms it too; one twice as big keeps the doubt, now measured.
        var finished = model()
        finished.record(FinishedJob(command: "cc 1", startedAt: 0, endedAt: 4, peakBytes: 100 * MiB, frozenSeconds: 0))
        #expect(finished.predictedPeak(of: "cc 9") == 100 * MiB)
        var wrong = model()
        wrong.record(FinishedJob(command: "cc 1", startedAt: 0, endedAt: 4, peakBytes: 200 * MiB, frozenSeconds: 0))
        #expect(wrong.predictedPeak(of: "cc 9") == 200 * MiB)
        // Where admission can be undone the history is taken as it is.
        #expect(MemoryModel(prior: 64 * MiB, history: peaks).predictedPeak(of: "cc 9") == 100 * MiB)
    }

    private func job(_ pid: Int32, rss: UInt64, frozen: Bool = false, evictable: Bool = false, paged: UInt64 = 0,
                     peak: UInt64? = nil) -> GovernorInput.RunningJob {
        GovernorInput.RunningJob(id: JobID(pid: pid, startTicks: 0), startedAt: Double(pid), rssBytes: rss * MiB,
                                 peakBytes: (peak ?? rss) * MiB, predictedPeakBytes: (peak ?? rss) * MiB,
                                 frozen: frozen, pagedOutBytes: paged * MiB, evictable: evictable)
    }

    private func settings(pageOut: Bool, evict: Bool) -> GovernorSettings {
        var s = GovernorSettings(maxJobs: 8, budget: 1000 * MiB, cpus: 2, hardLimit: 1100 * MiB)
        s.canPageOut = pageOut
        s.canEvict = evict
        return s
    }

    @Test func frozenMemoryThatStandsInTheWayIsPagedOut() {
        // The oldest job runs to 700 MiB; two frozen jobs hold 200 MiB each. Beside them it could not finish.
        let jobs = [job(1, rss: 400, peak: 700), job(2, rss: 200, frozen: true), job(3, rss: 200, frozen: true)]
        let input = GovernorInput(now: 10, memoryUsedBytes: 800 * MiB, jobs: jobs, nextJobPeakBytes: 100 * MiB)
        var g = Governor(settings: settings(pageOut: true, evict: false))
        let d = g.decide(input)
        #expect(d.pageOut.first == JobID(pid: 3, startTicks: 0), "the newest frozen job first")
        #expect(!d.pageOut.contains(JobID(pid: 1, startTicks: 0)), "the oldest runs")
        #expect(d.evict.isEmpty)
        // Without swap, under make, the newest is ended to run again instead.
        var m = Governor(settings: settings(pageOut: false, evict: false))
        #expect(m.decide(input).evict.isEmpty, "not evictable: nothing to do but wait")
        let evictable = [job(1, rss: 400, peak: 750), job(2, rss: 200, frozen: true, evictable: true),
                         job(3, rss: 200, frozen: true, evictable: true)]
        var e = Governor(settings: settings(pageOut: false, evict: true))
        let de = e.decide(GovernorInput(now: 10, memoryUsedBytes: 800 * MiB, jobs: evictable, nextJobPeakBytes: 100 * MiB))
        #expect(de.evict == [JobID(pid: 3, startTicks: 0)], "one is enough: 750 beside 200 fits the 1100 hard limit")
        // When the running job fits beside what is frozen, nothing is paged out or ended.
        let fits = [job(1, rss: 400, peak: 450), job(2, rss: 100, frozen: true)]
        var f = Governor(settings: settings(pageOut: true, evict: true))
        let df = f.decide(GovernorInput(now: 10, memoryUsedBytes: 500 * MiB, jobs: fits, nextJobPeakBytes: 100 * MiB))
        #expect(df.pageOut.isEmpty && df.evict.isEmpty)
    }

    @Test func aJobWhosePageOutIsUnderWayIsNotEnded() {
        // The oldest job runs to 900 MiB; two frozen jobs, both asked to page out, still hold 200 MiB each.
        func input(askedSecondsAgo: Double) -> GovernorInput {
            var frozen = [job(2, rss: 200, frozen: true, evictable: true, paged: 250),
                          job(3, rss: 200, frozen: true, evictable: true, paged: 250)]
            for i in frozen.indices { frozen[i].pageOutAskedSecondsAgo = askedSecondsAgo }
            return GovernorInput(now: 10, memoryUsedBytes: 900 * MiB, jobs: [job(1, rss: 500, peak: 900)] + frozen,
                                 nextJobPeakBytes: 100 * MiB)
        }
        // Asked 0.3 s ago: 250 MiB take about 1.6 s at the slowest page-out rate allowed for. Ending them would
        // throw their work away for memory that is leaving anyway.
        var g = Governor(settings: settings(pageOut: true, evict: true))
        #expect(g.decide(input(askedSecondsAgo: 0.3)).evict.isEmpty)
        // 30 s later they still hold it: the page-out did not free it (swap full). The newest is ended.
        var late = Governor(settings: settings(pageOut: true, evict: true))
        #expect(late.decide(input(askedSecondsAgo: 30)).evict == [JobID(pid: 3, startTicks: 0)])
    }

    @Test func atTheHardLimitTheNewestRunningJobGoes() {
        // The plan said it fits, the kernel says the build waits at its hard limit: the plan was wrong.
        let jobs = [job(1, rss: 500, peak: 500), job(2, rss: 500, evictable: true, peak: 500)]
        var input = GovernorInput(now: 10, memoryUsedBytes: 1000 * MiB, jobs: jobs, nextJobPeakBytes: 100 * MiB)
        input.atHardLimit = true
        var p = Governor(settings: settings(pageOut: true, evict: false))
        let dp = p.decide(input)
        #expect(dp.freeze.contains(JobID(pid: 2, startTicks: 0)) && dp.pageOut == [JobID(pid: 2, startTicks: 0)])
        var e = Governor(settings: settings(pageOut: false, evict: true))
        #expect(e.decide(input).evict == [JobID(pid: 2, startTicks: 0)])
        // A thawed job still faulting its pages back holds little: it is frozen again, not paged out again.
        let faulting = [job(1, rss: 600, peak: 600), job(2, rss: 1, paged: 400, peak: 400)]
        var q = Governor(settings: settings(pageOut: true, evict: false))
        var fi = GovernorInput(now: 10, memoryUsedBytes: 1000 * MiB, jobs: faulting, nextJobPeakBytes: 100 * MiB)
        fi.atHardLimit = true
        let dq = q.decide(fi)
        #expect(dq.freeze.contains(JobID(pid: 2, startTicks: 0)) && dq.pageOut.isEmpty)
    }

    @Test func undoableAdmissionPlansTheNextJobsAlongTheirShapes() {
        // One job at its 600 MiB peak ends in about a second; the history's next jobs peak at 500 MiB late in
        // their 10 s runs. Where a wrong admission can be undone, the next job starts now: it is at a quarter of its
        // peak when the running one ends. Otherwise it is counted at its peak from the start, and does not fit.
        let late = MemoryShape(reach: [0.8, 0.85, 0.9, 0.95, 1.0])!
        let running = GovernorInput.RunningJob(id: JobID(pid: 1, startTicks: 0), startedAt: 0, rssBytes: 600 * MiB,
                                               peakBytes: 600 * MiB, predictedPeakBytes: 600 * MiB, ranSeconds: 9,
                                               runSeconds: 10, shape: late)
        let next = Array(repeating: UpcomingJob(peakBytes: 500 * MiB, runSeconds: 10, shape: late), count: 3)
        let input = GovernorInput(now: 9, memoryUsedBytes: 610 * MiB, jobs: [running], nextJobPeakBytes: 500 * MiB,
                                  upcomingJobs: next)
        var undoable = Governor(settings: settings(pageOut: true, evict: false))
        #expect(undoable.decide(input).targetJobs == 2, "the running job and one new")
        var strict = Governor(settings: settings(pageOut: false, evict: false))
        #expect(strict.decide(input).targetJobs == 1)
        // Two new ones would hold 1000 MiB together once at their peaks: never planned to end, they do not fit.
        #expect(undoable.decide(input).targetJobs < 3)
    }

    @Test func aBuildsTypicalJobIsMeasuredFromItsFinishedJobs() throws {
        var model = MemoryModel(prior: 64 * MiB)
        #expect(model.typicalJob == nil)
        // Four jobs ended: 2, 4, 6 and 8 s; shapes from early to late. The typical job runs the median time and
        // reaches each level at the earliest quarter of the reach times.
        let shapes = [[0.1, 0.2, 0.3, 0.4, 0.5], [0.2, 0.4, 0.6, 0.8, 0.9], [0.5, 0.6, 0.7, 0.8, 1.0],
                      [0.8, 0.85, 0.9, 0.95, 1.0]]
        for (i, reach) in shapes.enumerated() {
            model.record(FinishedJob(command: "cc \(i)", startedAt: 0, endedAt: Double(2 * (i + 1)),
                                     peakBytes: 100 * MiB, frozenSeconds: 0, shape: MemoryShape(reach: reach)))
            if i < 2 { #expect(model.typicalJob == nil, "not from fewer than three jobs") }
        }
        let typical = try #require(model.typicalJob)
        #expect(typical.runSeconds == 6)
        #expect(typical.shape?.reach == [0.2, 0.4, 0.6, 0.8, 0.9])
        #expect(typical.peakBytes == model.typicalJobPeak)
    }

    @Test func aFrozenJobIsNotKeptFrozenByTheGrowthRateItWasFrozenAt() {
        // Job 2 was frozen (and paged out) while it rose at 1.3 GB/s; it had reached 300 MiB, near its plateau. The
        // oldest job holds 300 MiB: both fit in 1000. Where a wrong thaw can be undone it is thawed; otherwise its
        // growth rate still counts and it stays frozen until the oldest ends.
        let oldest = job(1, rss: 300)
        var frozen = job(2, rss: 0, frozen: true, paged: 300, peak: 300)
        frozen.predictedPeakBytes = 250 * MiB
        frozen.growing = true
        frozen.growthRate = 1300 * Double(MiB)
        let input = GovernorInput(now: 10, memoryUsedBytes: 310 * MiB, jobs: [oldest, frozen],
                                  nextJobPeakBytes: 250 * MiB)
        var undoable = Governor(settings: settings(pageOut: true, evict: false))
        #expect(undoable.decide(input).thaw == [JobID(pid: 2, startTicks: 0)])
        var strict = Governor(settings: settings(pageOut: false, evict: false))
        #expect(strict.decide(input).thaw.isEmpty)
    }

    @Test func jobsSittingAtTheirPeaksPastTheFreezeThresholdAreNotFrozen() {
        // Three jobs admitted at their known peaks, 970 MiB in all (past 95% of the budget, under the hard limit):
        // none grows, so freezing would only stop them from finishing.
        let still = (1...3).map { job(Int32($0), rss: 320) }
        var g = Governor(settings: settings(pageOut: true, evict: false))
        let d = g.decide(GovernorInput(now: 10, memoryUsedBytes: 970 * MiB, jobs: still, nextJobPeakBytes: 100 * MiB))
        #expect(d.freeze.isEmpty)
        // The newest one still grows: it is frozen.
        var growing = still
        growing[2].growing = true
        var h = Governor(settings: settings(pageOut: true, evict: false))
        let e = h.decide(GovernorInput(now: 10, memoryUsedBytes: 970 * MiB, jobs: growing, nextJobPeakBytes: 100 * MiB))
        #expect(e.freeze == [JobID(pid: 3, startTicks: 0)])
    }

    @Test func aJobFaultingItsPagesBackInIsNotGrowing() {
        var table = JobTable()
        func reading(rss: UInt64, swap: UInt64) -> [ProcessObservation] {
            var cc = ProcessObservation(pid: 2, parent: 1, name: "cc", rssBytes: rss * MiB)
            cc.swapBytes = swap * MiB
            return [ProcessObservation(pid: 1, parent: 0, name: "make"), cc]
        }
        _ = table.update(reading(rss: 300, swap: 0), launched: 1, now: 0)
        let id = table.running[0].id
        table.setFrozen(id, true, now: 1)
        table.setPagedOut(id, bytes: 300 * MiB)
        _ = table.update(reading(rss: 2, swap: 298), launched: 1, now: 2)
        table.setFrozen(id, false, now: 3)
        // Thawed: resident memory comes back from swap, 0 new bytes asked for.
        _ = table.update(reading(rss: 150, swap: 150), launched: 1, now: 4)
        _ = table.update(reading(rss: 300, swap: 0), launched: 1, now: 5)
        #expect(table.running[0].growthRate == 0)
        #expect(table.running[0].lastGrowthAt < 3)
        // Then it grows for real.
        _ = table.update(reading(rss: 400, swap: 0), launched: 1, now: 6)
        #expect(table.running[0].growthRate > 0)
        #expect(table.running[0].lastGrowthAt == 6)
    }

    @Test func aThawForgetsTheGrowthRateAndThePageOutOfBeforeTheFreeze() {
        var table = JobTable()
        func reading(rss: UInt64) -> [ProcessObservation] {
            [ProcessObservation(pid: 1, parent: 0, name: "make"),
             ProcessObservation(pid: 2, parent: 1, name: "cc", rssBytes: rss * MiB)]
        }
        _ = table.update(reading(rss: 100), launched: 1, now: 0)
        _ = table.update(reading(rss: 300), launched: 1, now: 1)
        let id = table.running[0].id
        #expect(table.running[0].growthRate > 0)
        table.setFrozen(id, true, now: 1)
        table.setPagedOut(id, bytes: 300 * MiB, now: 1.5)
        #expect(table.running[0].pageOutAskedAt == 1.5)
        #expect(table.running[0].growthRate > 0, "kept while frozen: the freeze rules plan with it")
        table.setFrozen(id, false, now: 2)
        // Before, the stale rate planned the thawed job growing at once, and it was frozen again the next tick
        // (in the simulator, 93 of 331 freezes came within 0.3 s of the same job's thaw); the page-out stopped.
        #expect(table.running[0].growthRate == 0)
        #expect(table.running[0].pageOutAskedAt == nil)
    }

    @Test func slowStartAdmitsOneJobOfUnknownSizeAtATime() {
        var s = GovernorSettings(maxJobs: 8, budget: 1000 * MiB, cpus: 2)
        s.slowStart = true
        var g = Governor(settings: s)
        // Nothing runs: one job may start, not the eight the prior of 100 MiB would allow.
        #expect(g.decide(GovernorInput(now: 0, memoryUsedBytes: 0, jobs: [], nextJobPeakBytes: 100 * MiB)).targetJobs == 1)
        // While it is young and its size unknown, no other starts; once it has shown its growth, one more may.
        var young = GovernorInput.RunningJob(id: JobID(pid: 1, startTicks: 0), startedAt: 0, rssBytes: 50 * MiB,
                                             peakBytes: 50 * MiB, predictedPeakBytes: 100 * MiB, ranSeconds: 0.5)
        young.peakKnown = false
        #expect(g.decide(GovernorInput(now: 0.5, memoryUsedBytes: 50 * MiB, jobs: [young], nextJobPeakBytes: 100 * MiB)).targetJobs == 1)
        young.ranSeconds = 1.5
        #expect(g.decide(GovernorInput(now: 1.5, memoryUsedBytes: 50 * MiB, jobs: [young], nextJobPeakBytes: 100 * MiB)).targetJobs == 2)
        // Jobs the history knows (upcoming peaks) are not held back.
        #expect(g.decide(GovernorInput(now: 2, memoryUsedBytes: 50 * MiB, jobs: [young], nextJobPeakBytes: 100 * MiB,
                                       upcomingJobPeaksBytes: [100 * MiB, 100 * MiB, 100 * MiB])).targetJobs >= 4)
    }
}
