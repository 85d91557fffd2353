import Testing
import JobgovCore

private let MiB: UInt64 = 1 << 20

/// How far the history of an earlier build is trusted when this build turns out different.
struct MemoryHistoryTrustTests {
    private let commands = (0..<10).map { "cc \($0)" }
    private var peaks: [String: UInt64] { Dictionary(uniqueKeysWithValues: commands.map { ($0, 100 * MiB) }) }

    private func finish(_ model: inout MemoryModel, _ command: String, peak: UInt64) {
        model.noteStarted(command)
        model.record(FinishedJob(command: command, startedAt: 0, endedAt: 1, peakBytes: peak, frozenSeconds: 0))
    }

    @Test func aHistoryOfAnotherTreeIsDropped() {
        var model = MemoryModel(prior: 64 * MiB, history: peaks, historyOrder: commands)
        // Four jobs the history knew come out at a fifth, half, 1.5 and 3 times what it says: unrelated sizes.
        for (i, peak) in [20, 50, 150, 300].enumerated() { finish(&model, "cc \(i)", peak: UInt64(peak) * MiB) }
        #expect(model.historyDisowned)
        #expect(model.upcomingJobs(count: 3).isEmpty)
        // The rest is predicted from this build's own jobs, as in a first build.
        #expect(model.predictedPeak(of: "cc 9") == model.typicalJobPeak)
        #expect(model.knowsPeak(of: "cc 9") == false)
        // The next build's history is what this one measured, not the other tree's.
        #expect(Set(model.updatedHistory.keys) == ["cc 0", "cc 1", "cc 2", "cc 3"])
        // Three such jobs are not yet enough to judge.
        var early = MemoryModel(prior: 64 * MiB, history: peaks, historyOrder: commands)
        for (i, peak) in [20, 150, 300].enumerated() { finish(&early, "cc \(i)", peak: UInt64(peak) * MiB) }
        #expect(!early.historyDisowned)
    }

    @Test func aHistoryTooHighByOneFactorIsScaledDownOnFourFinishedJobs() {
        var model = MemoryModel(prior: 64 * MiB, history: peaks, historyOrder: commands)
        for i in 0..<3 { finish(&model, "cc \(i)", peak: 50 * MiB) }
        // Three are not enough to scale down (scaling up needs only one: it is the safe direction).
        #expect(model.predictedPeak(of: "cc 9") == 100 * MiB)
        finish(&model, "cc 3", peak: 50 * MiB)
        #expect(!model.historyDisowned)
        #expect(model.historyCorrection == 0.5)
        #expect(model.predictedPeak(of: "cc 9") == 50 * MiB)
        #expect(model.upcomingJobs(count: 1).first?.peakBytes == 50 * MiB)
        // A job that outgrows the history ends the scaling down at once.
        model.noteStarted("cc 4")
        model.noteRunning("cc 4", bytes: 120 * MiB)
        #expect(model.predictedPeak(of: "cc 9") == 100 * MiB)
    }

    @Test func afterAJobTheHistoryDidNotKnowItsNextJobsAreNotTakenAsNext() {
        var model = MemoryModel(prior: 64 * MiB, history: peaks, historyOrder: commands)
        model.noteStarted("cc 0")
        #expect(model.inStep)
        #expect(model.upcomingJobs(count: 1).first?.peakBytes == 100 * MiB)
        // A file added since the history was made: the jobs after it are not known to be the history's next ones.
        model.noteStarted("cc added.c")
        #expect(!model.inStep)
        #expect(model.upcomingJobs(count: 3).isEmpty)
        // Back on the history's path.
        model.noteStarted("cc 1")
        #expect(model.inStep)
        #expect(model.upcomingJobs(count: 1).count == 1)
        // Without a history every job is "in step": there is nothing to follow.
        var none = MemoryModel(prior: 64 * MiB)
        none.noteStarted("cc 0")
        #expect(none.inStep)
    }
}
