import Testing
import JobgovCore

private let MiB: UInt64 = 1 << 20

/// With swap, frozen jobs that stay resident must not leave the build running one job at a time.
struct PageOutToThawTests {
    private func job(_ pid: Int32, rss: UInt64, peak: UInt64, frozen: Bool = false, paged: UInt64 = 0)
        -> GovernorInput.RunningJob {
        GovernorInput.RunningJob(id: JobID(pid: pid, startTicks: 0), startedAt: Double(pid), rssBytes: rss * MiB,
                                 peakBytes: rss * MiB, predictedPeakBytes: peak * MiB, frozen: frozen,
                                 pagedOutBytes: paged * MiB)
    }

    private func governor(pageOut: Bool) -> Governor {
        var s = GovernorSettings(maxJobs: 8, budget: 1000 * MiB, cpus: 2, hardLimit: 1100 * MiB)
        s.canPageOut = pageOut
        return Governor(settings: s)
    }

    @Test func theNewestFrozenJobsArePagedOutSoThatTheOldestFrozenOneCanRun() {
        // One job runs (100 MiB, at its peak); three frozen ones hold 280 MiB each, the oldest of them still to grow
        // to 400. It cannot be thawed beside the other two: 560 + 100 + 400 > 1000.
        let jobs = [job(1, rss: 100, peak: 100), job(2, rss: 280, peak: 400, frozen: true),
                    job(3, rss: 280, peak: 400, frozen: true), job(4, rss: 280, peak: 400, frozen: true)]
        let input = GovernorInput(now: 10, memoryUsedBytes: 940 * MiB, jobs: jobs, nextJobPeakBytes: 100 * MiB)
        var g = governor(pageOut: true)
        let d = g.decide(input)
        #expect(d.thaw.isEmpty)
        // The newest alone is enough: 280 + 100 + 400 fits.
        #expect(d.pageOut == [JobID(pid: 4, startTicks: 0)], "\(d.reason)")
        #expect(d.reason.contains("to thaw oldest"))
        // Without swap there is nothing to page out to.
        var none = governor(pageOut: false)
        #expect(none.decide(input).pageOut.isEmpty)
        // Once the newest is paged out (it holds nothing resident), the oldest frozen job is thawed.
        let after = [job(1, rss: 100, peak: 100), job(2, rss: 280, peak: 400, frozen: true),
                     job(3, rss: 280, peak: 400, frozen: true), job(4, rss: 0, peak: 400, frozen: true, paged: 280)]
        var next = governor(pageOut: true)
        let d2 = next.decide(GovernorInput(now: 10, memoryUsedBytes: 660 * MiB, jobs: after, nextJobPeakBytes: 100 * MiB))
        #expect(d2.thaw.first == JobID(pid: 2, startTicks: 0))
    }

    @Test func nothingIsPagedOutWhenEvenAllOfItWouldNotLetTheOldestRun() {
        // The oldest frozen job needs 900 MiB: beside the running 100 MiB job, paging out every other frozen job
        // still leaves it no room, so paging out would cost CPU for nothing.
        let jobs = [job(1, rss: 100, peak: 100), job(2, rss: 300, peak: 950, frozen: true),
                    job(3, rss: 200, peak: 300, frozen: true)]
        var g = governor(pageOut: true)
        let d = g.decide(GovernorInput(now: 10, memoryUsedBytes: 600 * MiB, jobs: jobs, nextJobPeakBytes: 100 * MiB))
        #expect(d.pageOut.isEmpty, "\(d.reason)")
    }
}
