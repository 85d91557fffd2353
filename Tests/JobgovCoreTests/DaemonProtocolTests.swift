import Testing
import JobgovCore

private let MiB: UInt64 = 1 << 20

private func report(pid: Int32, at t: Double = 0, need: UInt64 = 300, weight: Int = 10) -> BuildReport {
    BuildReport(pid: pid, startedAt: t, command: "make -j8", cgroup: "/sys/fs/cgroup/jobgov-\(pid)", weight: weight,
                aloneBudgetBytes: 2000 * MiB,
                demand: BuildDemand(heldBytes: 10 * MiB, floorBytes: 100 * MiB, needBytes: need * MiB, wantBytes: 900 * MiB))
}

@Suite("Daemon protocol")
struct DaemonProtocolTests {
    @Test func requestsRoundTrip() throws {
        for request in [DaemonRequest.report(report(pid: 42)), .leave, .builds, .priority(pid: 7, weight: 20), .cgroup] {
            #expect(try DaemonRequest.parse(request.line).get() == request)
        }
    }

    @Test(arguments: [
        ("", "unknown request"),
        ("report", "unknown request"),
        ("report {", "not a build report (bad JSON)"),
        ("report {\"pid\":1}", "not a build report (no "),
        ("report {\"pid\":\"x\"}", "not a build report (wrong type at pid)"),
        ("priority 7", "priority takes"),
        ("priority 7 0", "priority takes"),
        ("priority -1 5", "priority takes"),
        ("leave now", "unknown request"),
        ("\u{0}\u{1}binary", "unknown request"),
    ])
    func malformedRequestsGetAnError(line: String, message: String) {
        guard case .failure(let error) = DaemonRequest.parse(line) else {
            Issue.record("'\(line)' was accepted")
            return
        }
        #expect(error.message.contains(message), "\(error.message)")
    }

    @Test func aReportForANegativePidIsRefused() {
        var r = report(pid: 5)
        r.pid = -5
        guard case .failure(let error) = DaemonRequest.parse(DaemonRequest.report(r).line) else {
            Issue.record("accepted")
            return
        }
        #expect(error.message.contains("pid must be positive"))
    }

    @Test func aHugeRequestIsRefusedWithoutParsing() {
        let line = "report {\"command\":\"" + String(repeating: "x", count: DaemonRequest.maximumBytes) + "\"}"
        guard case .failure(let error) = DaemonRequest.parse(line) else {
            Issue.record("accepted")
            return
        }
        #expect(error.message.contains("longer than"))
    }

    @Test func aReportedDemandIsKeptInOrder() throws {
        // floor ≤ need ≤ want, whatever the client sent.
        let line = #"report {"pid":3,"started_at":1,"command":"x","cgroup":"","weight":10,"alone_budget_bytes":1,"demand":{"held_bytes":0,"floor_bytes":500,"need_bytes":100,"want_bytes":10,"running_jobs":-4,"frozen_jobs":0}}"#
        guard case .report(let r) = try DaemonRequest.parse(line).get() else {
            Issue.record("not a report")
            return
        }
        #expect(r.demand.needBytes == 500 && r.demand.wantBytes == 500 && r.demand.runningJobs == 0)
    }

    @Test func replies() throws {
        let reply = try ShareReply.parse("share {\"builds\":2,\"budget_bytes\":100,\"share_bytes\":40}")
        #expect(reply == ShareReply(shareBytes: 40, budgetBytes: 100, builds: 2))
        #expect(throws: ControlProtocolError(message: "no room")) { try ShareReply.parse("error no room") }
        #expect(throws: ControlProtocolError.self) { try ShareReply.parse("share {") }
    }

    @Test func supplementaryGroupsFromProcStatus() {
        let status = "Name:\tbash\nUid:\t1000\t1000\t1000\t1000\nGroups:\t4 24 27 998 \nNgid:\t0\n"
        #expect(PeerCredentials.supplementaryGroups(procStatus: status) == [4, 24, 27, 998])
        #expect(PeerCredentials.supplementaryGroups(procStatus: "Groups:\n").isEmpty)
    }
}

@Suite("Daemon registry")
struct DaemonRegistryTests {
    let root = PeerCredentials(pid: 1, uid: 0, gid: 0)
    let alice = PeerCredentials(pid: 100, uid: 1000, gid: 1000)
    let bob = PeerCredentials(pid: 200, uid: 1001, gid: 1001)

    private func send(_ r: inout DaemonRegistry, _ line: String, from peer: PeerCredentials, at now: Double = 0) -> String {
        r.respond(to: DaemonRequest.parse(line), from: peer, now: now).reply
    }

    @Test func aBuildJoinsWithItsFirstReportAndLeaves() throws {
        var r = DaemonRegistry(budget: 1000 * MiB, budgetSource: "cgroup limit")
        let answer = r.respond(to: .success(.report(report(pid: 100))), from: alice, now: 0)
        #expect(answer.joined)
        #expect(try ShareReply.parse(answer.reply) == ShareReply(shareBytes: 1000 * MiB, budgetBytes: 1000 * MiB, builds: 1))
        #expect(send(&r, "leave", from: alice) == "ok")
        #expect(r.builds.isEmpty)
        #expect(send(&r, "leave", from: alice).hasPrefix("error"))
    }

    @Test func aBuildReportsOnlyForItself() {
        var r = DaemonRegistry(budget: 1000 * MiB, budgetSource: "x")
        let reply = send(&r, DaemonRequest.report(report(pid: 200)).line, from: alice)
        #expect(reply.hasPrefix("error a build reports for itself"))
        #expect(r.builds.isEmpty)
    }

    @Test func usersSeeAndChangeOnlyTheirOwnBuilds() throws {
        var r = DaemonRegistry(budget: 1000 * MiB, budgetSource: "x")
        _ = send(&r, DaemonRequest.report(report(pid: 100, at: 1)).line, from: alice)
        _ = send(&r, DaemonRequest.report(report(pid: 200, at: 2)).line, from: bob)
        #expect(try DaemonStatus.decode(json: send(&r, "builds", from: alice)).builds.map(\.pid) == [100])
        #expect(try DaemonStatus.decode(json: send(&r, "builds", from: bob)).builds.map(\.pid) == [200])
        #expect(try DaemonStatus.decode(json: send(&r, "builds", from: root)).builds.map(\.pid) == [100, 200])
        #expect(send(&r, "priority 200 90", from: alice).hasPrefix("error no build of yours"))
        #expect(r.builds[200]?.report.weight == 10)
        #expect(send(&r, "priority 100 90", from: alice) == "ok weight=90")
        #expect(send(&r, "priority 200 1", from: root) == "ok weight=1")
        // The weight set stays over what the build keeps reporting.
        _ = send(&r, DaemonRequest.report(report(pid: 100, at: 1)).line, from: alice, at: 1)
        #expect(r.builds[100]?.report.weight == 90)
    }

    @Test func claimsPastTheBudgetAreCut() throws {
        var r = DaemonRegistry(budget: 1000 * MiB, budgetSource: "x")
        var big = report(pid: 100)
        big.demand = BuildDemand(heldBytes: .max, floorBytes: .max, needBytes: .max, wantBytes: .max)
        big.weight = 1_000_000
        let reply = try ShareReply.parse(send(&r, DaemonRequest.report(big).line, from: alice))
        #expect(reply.shareBytes == 1000 * MiB)
        #expect(r.builds[100]?.report.weight == BuildReport.weights.upperBound)
        #expect(r.builds[100]?.report.demand.floorBytes == 1000 * MiB)
    }

    @Test func silentOrDeadBuildsExpire() {
        var r = DaemonRegistry(budget: 1000 * MiB, budgetSource: "x")
        _ = send(&r, DaemonRequest.report(report(pid: 100, at: 1)).line, from: alice, at: 0)
        _ = send(&r, DaemonRequest.report(report(pid: 200, at: 2)).line, from: bob, at: 0)
        #expect(r.expire(now: 1, isAlive: { $0 != 200 }) == [200])
        #expect(r.expire(now: 2, isAlive: { _ in true }).isEmpty)
        #expect(r.expire(now: 1 + DaemonTiming.staleSeconds + 0.1, isAlive: { _ in true }) == [100])
        #expect(r.builds.isEmpty)
    }

    @Test func tooManyBuildsAreTurnedAway() {
        var r = DaemonRegistry(budget: 1000 * MiB, budgetSource: "x")
        r.maximumBuilds = 2
        for pid: Int32 in [10, 11] {
            #expect(send(&r, DaemonRequest.report(report(pid: pid)).line, from: PeerCredentials(pid: pid, uid: 0, gid: 0)).hasPrefix("share"))
        }
        #expect(send(&r, DaemonRequest.report(report(pid: 12)).line, from: PeerCredentials(pid: 12, uid: 0, gid: 0))
            .hasPrefix("error the daemon serves 2 builds already"))
    }

    @Test func aRestartedDaemonStartsFromTheSharesTheBuildsHad() throws {
        // The daemon before had given 500 and 389 MiB; the builds come back one by one after the restart at t=10.
        var r = DaemonRegistry(budget: 889 * MiB, budgetSource: "x", startedAt: 10)
        var a = report(pid: 100, at: 1)
        a.shareBytes = 500 * MiB
        var b = report(pid: 200, at: 2)
        b.shareBytes = 389 * MiB
        let first = try ShareReply.parse(send(&r, DaemonRequest.report(a).line, from: alice, at: 10.3))
        #expect(first.shareBytes == 500 * MiB, "not the whole budget for the first to come back")
        let second = try ShareReply.parse(send(&r, DaemonRequest.report(b).line, from: bob, at: 10.8))
        #expect(second.shareBytes == 389 * MiB)
        // Once the others have had their time to come back, shares move to the rule's again.
        _ = send(&r, DaemonRequest.report(a).line, from: alice, at: 12.5)
        #expect(r.sharing.shares.values.reduce(0, +) <= 889 * MiB)
        // A build's word on what it had counts only then: a newcomer later gets what the rule gives.
        var c = report(pid: 300, at: 3)
        c.shareBytes = 889 * MiB
        let late = try ShareReply.parse(send(&r, DaemonRequest.report(c).line, from: PeerCredentials(pid: 300, uid: 0, gid: 0), at: 13))
        #expect(late.shareBytes < 889 * MiB)
        #expect(r.sharing.shares.values.reduce(0, +) <= 889 * MiB)
    }

    @Test func aDaemonWithCPUsSharesThemInItsReplies() throws {
        var r = DaemonRegistry(budget: 1000 * MiB, budgetSource: "x", cpus: 2)
        var a = report(pid: 100, at: 1)
        a.cpuUsed = 1.9
        let first = try ShareReply.parse(send(&r, DaemonRequest.report(a).line, from: alice))
        #expect(first.cpus == 2, "alone: every CPU")
        var b = report(pid: 200, at: 2)
        b.cpuUsed = 0.9
        let second = try ShareReply.parse(send(&r, DaemonRequest.report(b).line, from: bob))
        #expect(second.cpus == 1)
        let again = try ShareReply.parse(send(&r, DaemonRequest.report(a).line, from: alice))
        #expect(again.cpus == 1)
        let status = try DaemonStatus.decode(json: send(&r, "builds", from: root))
        #expect(status.cpus == 2)
        #expect(status.builds.map(\.cpuShare) == [1, 1])
        #expect(status.builds.map(\.cpuUsed) == [1.9, 0.9])
        #expect(status.lines[0] == "budget 1000 MiB (x), 2.0 CPUs, 2 builds")
        #expect(status.lines[2].contains("1.9/1.0"))
        // A daemon without CPUs to share (an older one) sends none: the build counts all of its own.
        var old = DaemonRegistry(budget: 1000 * MiB, budgetSource: "x")
        #expect(try ShareReply.parse(send(&old, DaemonRequest.report(a).line, from: alice)).cpus == nil)
    }

    @Test func aNewerBuildIsToldToYieldWhileAnOlderBuildsOldestJobNeedsTheRoom() throws {
        var r = DaemonRegistry(budget: 1000 * MiB, budgetSource: "x")
        var old = report(pid: 100, at: 1)
        old.demand = BuildDemand(heldBytes: 100 * MiB, floorBytes: 700 * MiB, needBytes: 700 * MiB, wantBytes: 700 * MiB)
        var new = report(pid: 200, at: 2)
        new.demand = BuildDemand(heldBytes: 30 * MiB, floorBytes: 450 * MiB, needBytes: 450 * MiB, wantBytes: 450 * MiB)
        #expect(try ShareReply.parse(send(&r, DaemonRequest.report(old).line, from: alice)).yield == nil)
        let told = try ShareReply.parse(send(&r, DaemonRequest.report(new).line, from: bob))
        #expect(told.yield == true, "870 MiB free, 600 for the older link: not the 420 the newer one still needs")
        #expect(try ShareReply.parse(send(&r, DaemonRequest.report(old).line, from: alice)).yield == nil,
                "the oldest build never yields")
        // The older link ended: the newer build goes on.
        old.demand = BuildDemand(heldBytes: 20 * MiB, floorBytes: 50 * MiB, needBytes: 50 * MiB, wantBytes: 300 * MiB)
        _ = send(&r, DaemonRequest.report(old).line, from: alice)
        #expect(try ShareReply.parse(send(&r, DaemonRequest.report(new).line, from: bob)).yield == nil)
        #expect(ShareReply(shareBytes: 1, budgetBytes: 2, builds: 1, yield: true).yield == true)
        let line = "share " + DaemonJSON.encode(ShareReply(shareBytes: 1, budgetBytes: 2, builds: 1, yield: true))
        #expect(try ShareReply.parse(line).yield == true)
    }

    @Test func cgroupGrantsRoundTripAndAreRefusedWithoutCgroups() throws {
        let grant = CgroupGrant(unified: "/sys/fs/cgroup/unified/svc/build-42", memory: "/sys/fs/cgroup/memory/svc/build-42",
                                freezer: nil)
        #expect(try CgroupGrant.parse(grant.line) == grant)
        #expect(throws: ControlProtocolError.self) { try CgroupGrant.parse("error no") }
        #expect(throws: ControlProtocolError.self) { try CgroupGrant.parse("cgroup {}") }
        var r = DaemonRegistry(budget: 1000 * MiB, budgetSource: "x")
        #expect(send(&r, "cgroup", from: alice).hasPrefix("error this daemon makes no cgroups"))
        #expect(send(&r, "cgroup please", from: alice).hasPrefix("error unknown request"))
    }

    @Test func theStatusTableShowsEveryBuild() throws {
        var r = DaemonRegistry(budget: 1000 * MiB, budgetSource: "cgroup limit")
        _ = send(&r, DaemonRequest.report(report(pid: 100, at: 1)).line, from: alice)
        let lines = try DaemonStatus.decode(json: send(&r, "builds", from: alice)).lines
        #expect(lines.count == 3)
        #expect(lines[0] == "budget 1000 MiB (cgroup limit), 1 build")
        #expect(lines[2].contains("100") && lines[2].hasSuffix("make -j8"))
    }

    @Test func theMonitorsLineNamesEachBuildsNumbers() throws {
        var r = DaemonRegistry(budget: 1000 * MiB, budgetSource: "cgroup limit")
        _ = send(&r, DaemonRequest.report(report(pid: 100, at: 1)).line, from: alice)
        var b = report(pid: 200, at: 2, need: 400)
        b.demand.runningJobs = 3
        b.demand.frozenJobs = 1
        _ = send(&r, DaemonRequest.report(b).line, from: PeerCredentials(pid: 200, uid: 0, gid: 0))
        let status = try DaemonStatus.decode(json: send(&r, "builds", from: root))
        let share = status.builds.map { MemorySize.format($0.shareBytes) }
        #expect(status.summary == "daemon 1000 MiB, 2 builds; "
                + "100 uid 1000 share \(share[0]) held 10 MiB need 300 MiB want 900 MiB jobs 0; "
                + "200 uid 0 share \(share[1]) held 10 MiB need 400 MiB want 900 MiB jobs 3+1 frozen")
        #expect(DaemonStatus(budgetBytes: 64 * MiB, budgetSource: "x", builds: []).summary == "daemon 64 MiB, 0 builds")
    }
}
