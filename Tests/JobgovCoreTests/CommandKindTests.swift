import Testing
import JobgovCore

private let MiB: UInt64 = 1 << 20

/// A command never seen is predicted from others of its kind, and a new kind of job mid-build runs alone where
/// nothing can take memory back.
struct CommandKindTests {
    @Test(arguments: [
        ("g++ -O2 -c src/a.cc -o a.o", "g++ -c"),
        ("/usr/bin/g++ -std=c++17 -Iinclude -c b.cc", "g++ -c"),
        ("g++ -O2 -o bin/app a.o b.o -lm", "g++"),
        ("g++ -shared -o libx.so a.o", "g++ -shared"),
        ("ccache gcc -c x.c", "gcc -c"),
        ("env LANG=C CCACHE_DIR=/tmp/c distcc g++ -c y.cc", "g++ -c"),
        ("sh -c ld -r -o all.o a.o b.o", "ld -r"),
        ("rustc --crate-name foo --crate-type lib src/lib.rs", "rustc --crate-type lib"),
        ("out/bin/memjob --name core1/a.o --peak 40", "memjob"),
        ("", ""),
    ])
    func kinds(command: String, kind: String) {
        #expect(CommandKind.of(command) == kind)
    }

    private func finish(_ model: inout MemoryModel, _ command: String, peak: UInt64) {
        model.noteStarted(command)
        model.record(FinishedJob(command: command, startedAt: 0, endedAt: 1, peakBytes: peak, frozenSeconds: 0))
    }

    @Test func aLinkIsPredictedFromLinksNotFromTheCompilesBeforeIt() {
        var model = MemoryModel(prior: 64 * MiB)
        for i in 0..<6 { finish(&model, "c++ -O2 -c f\(i).cc", peak: 100 * MiB) }
        // No link has finished: the first link is of a new kind, guessed as the typical job.
        #expect(model.isNewKind("c++ -o bin/app0 a.o"))
        #expect(!model.isNewKind("c++ -O2 -c f9.cc"))
        #expect(model.predictedPeak(of: "c++ -o bin/app0 a.o") == model.typicalJobPeak)
        finish(&model, "c++ -o bin/app0 a.o", peak: 700 * MiB)
        // The next link: from the link, not from the compiles' mean.
        #expect(!model.isNewKind("c++ -o bin/app1 b.o"))
        #expect(model.predictedPeak(of: "c++ -o bin/app1 b.o") == 700 * MiB)
        // A compile never seen: the typical job still (its kind's mean is lower: never predicted below typical).
        #expect(model.predictedPeak(of: "c++ -O2 -c f9.cc") == model.typicalJobPeak)
        // Kinds from a history count as known.
        let warm = MemoryModel(prior: 64 * MiB, history: ["c++ -o bin/app0 a.o": 700 * MiB, "c++ -O2 -c f0.cc": 100 * MiB])
        #expect(!warm.isNewKind("c++ -o bin/app5 z.o"))
        #expect(warm.predictedPeak(of: "c++ -o bin/app5 z.o") >= 700 * MiB)
        // Nothing known at all (the first jobs of a first build): no kind is new; the slow start covers them.
        #expect(!MemoryModel(prior: 64 * MiB).isNewKind("c++ -o bin/app0 a.o"))
    }

    @Test func noJobOfUnknownSizeStartsBesideANewKindWhereNothingCanTakeMemoryBack() {
        var s = GovernorSettings(maxJobs: 8, budget: 1000 * MiB, cpus: 2)
        s.slowStart = true
        var g = Governor(settings: s)
        var link = GovernorInput.RunningJob(id: JobID(pid: 1, startTicks: 0), startedAt: 0, rssBytes: 200 * MiB,
                                            peakBytes: 200 * MiB, predictedPeakBytes: 250 * MiB, ranSeconds: 5)
        link.peakKnown = false
        // An old job of unknown size (past its youth) lets one more start...
        #expect(g.decide(GovernorInput(now: 5, memoryUsedBytes: 200 * MiB, jobs: [link], nextJobPeakBytes: 250 * MiB)).targetJobs == 2)
        // ...but not while it is the first of a new kind: its size may show only at its end.
        link.newKind = true
        var held = Governor(settings: s)
        #expect(held.decide(GovernorInput(now: 5, memoryUsedBytes: 200 * MiB, jobs: [link], nextJobPeakBytes: 250 * MiB)).targetJobs == 1)
        // Where a wrong admission can be undone (swap or re-runs), no slow start and no hold.
        var undoable = GovernorSettings(maxJobs: 8, budget: 1000 * MiB, cpus: 2)
        undoable.canPageOut = true
        var free = Governor(settings: undoable)
        #expect(free.decide(GovernorInput(now: 5, memoryUsedBytes: 200 * MiB, jobs: [link], nextJobPeakBytes: 250 * MiB)).targetJobs >= 2)
    }
}
