import Testing
import JobgovCore

private let MiB: UInt64 = 1 << 20

@Suite("Remote compiles")
struct RemoteCompileTests {
    @Test func clientsAreKnownByTheCommand() {
        #expect(RemoteClient.named(in: "distcc gcc -O2 -c a.c -o a.o") == .distcc)
        #expect(RemoteClient.named(in: "/usr/bin/distcc g++ -c b.cc") == .distcc)
        #expect(RemoteClient.named(in: "cd sub && CC=\"distcc gcc\" ./build.sh") == .distcc)
        #expect(RemoteClient.named(in: "/usr/lib/distcc/gcc -c a.c") == .distcc)
        #expect(RemoteClient.named(in: "CCACHE_PREFIX=distcc ccache gcc -c a.c") == .distcc)
        #expect(RemoteClient.named(in: "icecc g++ -c x.cpp") == .icecc)
        #expect(RemoteClient.named(in: "/usr/lib/icecc/bin/g++ -c x.cpp") == .icecc)
        #expect(RemoteClient.named(in: "sccache clang -c y.c") == .sccache)
        #expect(RemoteClient.named(in: "pump make -j40") == .distcc)
        // Names that merely contain a client's name, a plain compile, a link.
        #expect(RemoteClient.named(in: "gcc -c distcc.c -o distcc.o") == nil)
        #expect(RemoteClient.named(in: "gcc -c src/mydistccthing.c") == nil)
        #expect(RemoteClient.named(in: "ccache gcc -c a.c") == nil)
        #expect(RemoteClient.named(in: "ld -o prog a.o") == nil)
    }

    @Test func distccHostsGiveTheHelpersSlots() {
        #expect(DistccHosts.remoteSlots("127.0.0.1:3632/4 127.0.0.1:3633/4") == 8)
        #expect(DistccHosts.remoteSlots("localhost/2 buildbox/8,lzo @sshbox/3 --randomize") == 11)
        // No /N: distcc's default of 4. localhost compiles here and is not a helper.
        #expect(DistccHosts.remoteSlots("a b") == 8)
        #expect(DistccHosts.remoteSlots("localhost/4 --localslots=2") == nil)
        #expect(DistccHosts.remoteSlots("+zeroconf") == nil)
        #expect(DistccHosts.remoteSlots("# the farm\nhostA/6 # fast\nhostB/2\n") == 8)
        #expect(DistccHosts.remoteSlots("") == nil)
    }

    private func p(_ pid: Int32, _ parent: Int32, _ name: String, _ args: [String]? = nil,
                   rss: UInt64 = 5 * MiB) -> ProcessObservation {
        ProcessObservation(pid: pid, parent: parent, name: name, startTicks: UInt64(pid), rssBytes: rss, arguments: args)
    }

    /// A table reading: make (pid 1) and its recipes below it.
    private func read(_ table: inout JobTable, _ procs: [ProcessObservation], at t: Double) -> [FinishedJob] {
        table.update([p(1, 0, "make", ["make", "-j16"])] + procs, launched: 1, now: t)
    }

    @Test func aDistccCompileIsRemoteWhilePreprocessingAndWaitingAndLocalOnceItCompilesHere() {
        var table = JobTable()
        let sh = p(10, 1, "sh", ["/bin/sh", "-c", "distcc gcc -O2 -c a.c -o a.o"])
        let client = p(11, 10, "distcc", ["distcc", "gcc", "-O2", "-c", "a.c"])
        // Preprocessing here: gcc -E and its cc1 -E.
        _ = read(&table, [sh, client, p(12, 11, "gcc", ["gcc", "-E", "a.c"]),
                          p(13, 12, "cc1", ["/usr/lib/gcc/x86_64-linux-gnu/12/cc1", "-E", "-quiet", "a.c"], rss: 60 * MiB)],
                 at: 0)
        #expect(table.running[0].remote.isRemote)
        #expect(table.running[0].remote.client == .distcc)
        // Waiting for the helper: nothing below the client.
        _ = read(&table, [sh, client], at: 0.1)
        #expect(table.running[0].remote.isRemote)
        // The helper went away: distcc runs the compile here.
        _ = read(&table, [sh, client, p(14, 11, "gcc", ["gcc", "-O2", "-c", "a.c"]),
                          p(15, 14, "cc1", ["cc1", "-quiet", "a.c", "-O2"], rss: 300 * MiB)], at: 0.2)
        #expect(!table.running[0].remote.isRemote)
        #expect(table.running[0].remote.fellBack)
        // Local from then on, even once the compile is done and only the client is left.
        _ = read(&table, [sh, client], at: 0.3)
        #expect(!table.running[0].remote.isRemote)
        let ended = read(&table, [], at: 0.4)
        #expect(ended.count == 1)
        #expect(!ended[0].ranRemotely)
        #expect(ended[0].fellBack)
    }

    @Test func aRemoteJobThatEndsRemoteIsCountedSoAndPlainJobsAreLocal() {
        var table = JobTable()
        _ = read(&table, [p(10, 1, "distcc", ["distcc", "gcc", "-c", "a.c"]),
                          p(20, 1, "gcc", ["gcc", "-c", "b.c"]), p(21, 20, "cc1", ["cc1", "b.c"], rss: 100 * MiB)],
                 at: 0)
        let ended = read(&table, [], at: 1)
        #expect(ended.count == 2)
        #expect(ended.first { $0.command.hasPrefix("distcc") }?.ranRemotely == true)
        #expect(ended.first { $0.command.hasPrefix("gcc") }?.ranRemotely == false)
        #expect(ended.allSatisfy { !$0.fellBack })
    }

    @Test func aLinkThroughDistccOrAJobOutgrowingARemoteFootprintIsLocal() {
        var table = JobTable()
        table.remoteFootprintLimit = 200 * MiB
        _ = read(&table, [p(10, 1, "distcc", ["distcc", "gcc", "-o", "prog", "a.o"]),
                          p(11, 10, "gcc", ["gcc", "-o", "prog", "a.o"]), p(12, 11, "collect2", ["collect2"]),
                          p(20, 1, "icecc", ["icecc", "g++", "-c", "big.cc"], rss: 250 * MiB)], at: 0)
        #expect(table.running.allSatisfy { !$0.remote.isRemote })
    }

    @Test func aMasqueradingClientIsKnownByWhatItDoes() {
        var table = JobTable()
        // make runs `gcc -c a.c` and finds /usr/lib/distcc/gcc first on PATH: its comm is gcc.
        let wrapper = p(10, 1, "gcc", ["gcc", "-c", "a.c"])
        _ = read(&table, [wrapper, p(11, 10, "gcc", ["/usr/bin/gcc", "-E", "a.c"]), p(12, 11, "cc1", ["cc1", "-E", "a.c"])],
                 at: 0)
        #expect(table.running[0].remote.client == .wrapper)
        #expect(!table.running[0].remote.isRemote)
        // Sits idle while a helper compiles: two readings in a row make it remote.
        _ = read(&table, [wrapper], at: 0.1)
        _ = read(&table, [wrapper], at: 0.2)
        #expect(table.running[0].remote.isRemote)
        // A plain gcc with its cc1 and as is never taken for a wrapper, however long it runs.
        var plain = JobTable()
        for k in 0..<5 {
            _ = read(&plain, [p(30, 1, "gcc", ["gcc", "-c", "b.c"]),
                              k < 3 ? p(31, 30, "cc1", ["cc1", "b.c"]) : p(32, 30, "as", ["as"])], at: Double(k) / 10)
        }
        #expect(plain.running[0].remote.client == nil)
        #expect(!plain.running[0].remote.wasRemote)
    }

    @Test func clangCompilesAreToldByMinusCC1() {
        var table = JobTable()
        _ = read(&table, [p(10, 1, "distcc", ["distcc", "clang", "-c", "a.c"]),
                          p(11, 10, "clang", ["clang", "-E", "a.c"]), p(12, 11, "clang", ["clang", "-cc1", "-E", "a.c"])],
                 at: 0)
        #expect(table.running[0].remote.isRemote)
        _ = read(&table, [p(10, 1, "distcc", ["distcc", "clang", "-c", "a.c"]),
                          p(13, 10, "clang", ["clang", "-c", "a.c"]),
                          p(14, 13, "clang", ["clang", "-cc1", "-emit-obj", "a.c"])], at: 0.1)
        #expect(table.running[0].remote.fellBack)
    }

    @Test func remoteJobsTellTheirFootprintAndWhetherTheNextJobIsRemote() {
        var r = RemoteJobs()
        #expect(r.peakBytes == RemoteJobs.prior)
        #expect(!r.nextJobRemote(running: [], now: 0))
        for k in 0..<4 {
            var job = FinishedJob(command: "distcc gcc -c \(k).c", startedAt: 0, endedAt: 1, peakBytes: UInt64(20 + k) * MiB,
                                  frozenSeconds: 0)
            job.ranRemotely = true
            r.noteFinished(job)
        }
        #expect(r.peakBytes == 23 * MiB + 23 * MiB / 4)
        #expect(r.nextJobRemote(running: [], now: 2))
        var fallback = FinishedJob(command: "distcc gcc -c x.c", startedAt: 1, endedAt: 3, peakBytes: 300 * MiB,
                                   frozenSeconds: 0)
        fallback.fellBack = true
        r.noteFinished(fallback)
        #expect(!r.nextJobRemote(running: [], now: 4))
        #expect(r.remoteCount == 4 && r.localCount == 1 && r.fellBackCount == 1)
        // Remote jobs again after the hold: the four latest are remote once more.
        for k in 0..<4 {
            var job = FinishedJob(command: "distcc gcc -c y\(k).c", startedAt: 3, endedAt: 9, peakBytes: 20 * MiB,
                                  frozenSeconds: 0)
            job.ranRemotely = true
            r.noteFinished(job)
        }
        #expect(r.nextJobRemote(running: [], now: 9))
    }

    private func job(_ pid: Int32, rss: UInt64, predicted: UInt64, remote: Bool, at start: Double = 0,
                     frozen: Bool = false, growing: Bool = false) -> GovernorInput.RunningJob {
        var j = GovernorInput.RunningJob(id: JobID(pid: pid, startTicks: 0), startedAt: start, rssBytes: rss * MiB,
                                         peakBytes: rss * MiB, predictedPeakBytes: predicted * MiB, frozen: frozen,
                                         growing: growing, growthRate: growing ? Double(100 * MiB) : 0)
        j.remote = remote
        return j
    }

    @Test func remoteJobsAreAdmittedAtTheirFootprintUpToTheHelpersSlots() {
        var s = GovernorSettings(maxJobs: 32, budget: 1000 * MiB, cpus: 2)
        s.remoteSlots = 16
        var g = Governor(settings: s)
        // 8 remote jobs holding 30 MiB, next jobs local at 300 MiB: without the remote expectation 2 more fit.
        let running = (1...8).map { job(Int32($0), rss: 30, predicted: 40, remote: true, at: Double($0)) }
        var input = GovernorInput(now: 10, memoryUsedBytes: 260 * MiB, jobs: running, nextJobPeakBytes: 300 * MiB)
        #expect(g.decide(input).targetJobs == 10)
        // The next jobs are remote, at 40 MiB each: the helpers' 8 free slots fill, then local jobs at 300 MiB.
        input.nextJobRemote = true
        input.remoteJobPeakBytes = 40 * MiB
        var h = Governor(settings: s)
        #expect(h.decide(input).targetJobs == 16 + 1)
        // The CPU rule holds local jobs (at one per CPU here), not remote ones: with the CPUs busy, the remote
        // slots still fill (it held every job at max(running, CPUs) = 8 before).
        input.cpuBusy = 1.0
        var c = Governor(settings: s)
        #expect(c.decide(input).targetJobs == 16 + 1)
        input.nextJobRemote = false
        var d = Governor(settings: s)
        #expect(d.decide(input).targetJobs == 8 + 2)
    }

    @Test func remoteJobsAreNeverFrozenAndTheOldestLocalJobAlwaysRuns() {
        var g = Governor(settings: GovernorSettings(maxJobs: 16, budget: 1000 * MiB, cpus: 2))
        // Oldest is remote; two local fallbacks grow fast past the budget.
        let jobs = [job(1, rss: 30, predicted: 40, remote: true, at: 0),
                    job(2, rss: 450, predicted: 300, remote: false, at: 1, growing: true),
                    job(3, rss: 450, predicted: 300, remote: false, at: 2, growing: true),
                    job(4, rss: 30, predicted: 40, remote: true, at: 3)]
        let d = g.decide(GovernorInput(now: 5, memoryUsedBytes: 980 * MiB, jobs: jobs, nextJobPeakBytes: 300 * MiB))
        #expect(d.freeze == [JobID(pid: 3, startTicks: 0)])
        // The oldest local job frozen (its elders ended): thawed, although a remote job is older.
        var h = Governor(settings: GovernorSettings(maxJobs: 16, budget: 1000 * MiB, cpus: 2))
        let later = [job(1, rss: 30, predicted: 40, remote: true, at: 0),
                     job(3, rss: 450, predicted: 300, remote: false, at: 2, frozen: true)]
        let e = h.decide(GovernorInput(now: 6, memoryUsedBytes: 500 * MiB, jobs: later, nextJobPeakBytes: 300 * MiB))
        #expect(e.thaw == [JobID(pid: 3, startTicks: 0)])
    }
}

@Suite("Remote compiles in the timeline")
struct RemoteTimelineTests {
    @Test func theTraceSaysWhichJobsRanRemotelyAndWhichFellBack() {
        var table = JobTable()
        var timeline = BuildTimeline(title: "jobgov make -j16", pid: 99)
        func tick(_ procs: [ProcessObservation], _ t: Double) {
            let ended = table.update([ProcessObservation(pid: 1, parent: 0, name: "make", arguments: ["make"])] + procs,
                                     launched: 1, now: t)
            timeline.observe(now: t, jobs: table.jobs.values, ended: ended, sample: nil)
        }
        let a = ProcessObservation(pid: 10, parent: 1, name: "distcc", startTicks: 10, arguments: ["distcc", "gcc", "-c", "a.c"])
        let b = ProcessObservation(pid: 20, parent: 1, name: "distcc", startTicks: 20, arguments: ["distcc", "gcc", "-c", "b.c"])
        tick([a, b], 0)
        tick([a, b, ProcessObservation(pid: 21, parent: 20, name: "cc1", startTicks: 21, arguments: ["cc1", "b.c"])], 0.5)
        tick([], 1)
        let json = timeline.traceEventsJSON(end: 1)
        let lines = json.split(separator: "\n")
        let remote = lines.first { $0.contains("\"pid\":10,") && $0.contains("\"ph\":\"X\"") } ?? ""
        let back = lines.first { $0.contains("\"pid\":20,") && $0.contains("\"ph\":\"X\"") } ?? ""
        #expect(remote.contains("\"cat\":\"job,remote\""))
        #expect(remote.contains("\"remote\":true"))
        #expect(remote.contains("\"remote_client\":\"distcc\""))
        #expect(back.contains("\"cat\":\"job,fell back\""))
        #expect(back.contains("\"remote\":false"))
        #expect(back.contains("\"fell_back\":true"))
    }
}
