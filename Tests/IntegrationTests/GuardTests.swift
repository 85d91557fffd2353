import Foundation
import LinuxSystem
import Testing

/// `jobgov guard` on the real kernel against a real memory hog in a memory-limited cgroup this test creates.
@Suite("jobgov guard", .serialized, .enabled(if: geteuid() == 0, "needs root to create cgroups and move processes"))
struct GuardTests {
    /// The hog is found, frozen in freeze mode (in a cgroup of its own), and at exit thawed and put back.
    @Test func findsFreezesAndReleasesAMemoryHog() throws {
        let scratch = try Scratch()
        let layout = CgroupLayout.detect()
        let mount = try #require(layout.unifiedMount, "needs a cgroup v2 hierarchy")
        let own = try #require(layout.ownUnifiedDirectory)
        let hogSource = Clients.repo.appendingPathComponent("Tests/IntegrationTests/Fixtures/memhog.c").path
        let hog = scratch.path + "/memhog"
        let cc = try jobgovRun("/usr/bin/cc", ["-O2", "-o", hog, hogSource], in: scratch)
        try #require(cc.status == 0, "cc: \(cc.stderr)")
        // 160 MiB of data under /var/tmp (the root filesystem: real page cache, unlike tmpfs).
        let data = "/var/tmp/jobgov-guard-test-\(getpid()).data"
        defer { unlink(data) }
        let dd = try jobgovRun("/bin/dd", ["if=/dev/zero", "of=\(data)", "bs=1M", "count=160", "status=none"], in: scratch)
        try #require(dd.status == 0)

        // 128 MiB for the hog: its 96 MiB of anonymous memory leaves the file little room, so it reclaims all along.
        let cgroup = try BuildCgroup.create(layout: layout, name: "jobgov-guard-test-\(getpid())", controllers: ["memory"])
        defer {
            for pid in cgroup.processes() { kill(pid, SIGKILL) }
            waitUntil("the hog's cgroup to empty", timeout: 10) { cgroup.processes().isEmpty }
            cgroup.remove()
        }
        try cgroup.apply(CgroupLimits(memoryMax: 128 << 20))
        let procs = cgroup.leafProcsFiles.map { "echo $$ > \($0)" }.joined(separator: " && ")
        let started = try Running("/bin/sh", ["-c", "\(procs) && exec \(hog) \(data) 96"], in: scratch, tag: "hog")
        defer { kill(started.pid, SIGKILL) }
        let hogPID = started.pid
        let hogCgroup = String(try #require(cgroup.directories.unified).dropFirst(mount.count)) + "/" + cgroup.leafName
        waitUntil("the hog to run in its cgroup") { cgroup.processes().contains(hogPID) }

        // One hog on a 24 GiB machine stalls it a few percent of the time, hence the low threshold.
        let guardRun = try Running(Clients.jobgov, ["guard", "--action", "freeze", "--interval", "0.5", "--confirm", "2",
                                                    "--memory-pressure", "1",
                                                    "--cgroup", hogCgroup, "--for", "12"], in: scratch, tag: "guard")
        // While jobgov guard runs, the hog sits frozen in a leaf of jobgov's own.
        let leaf = own + "/jobgov-guard-\(guardRun.pid)/pid-\(hogPID)"
        var frozenSeen = false
        waitUntil("the hog to be frozen", timeout: 11) {
            frozenSeen = (try? String(contentsOfFile: leaf + "/cgroup.events", encoding: .utf8))?.contains("frozen 1") == true
            return frozenSeen
        }
        if frozenSeen {
            let procsInLeaf = (try? String(contentsOfFile: leaf + "/cgroup.procs", encoding: .utf8)) ?? ""
            #expect(procsInLeaf.split(separator: "\n") == [Substring(String(hogPID))])
            // On a hybrid machine only its v2 cgroup changed: its v1 memory cgroup (and limit) kept it.
            if let memory = cgroup.directories.memory, layout.kind == .hybrid {
                #expect(BuildCgroup.processes(in: memory).contains(hogPID))
            }
        }
        let result = guardRun.finish(timeout: 30)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("memory: pid \(hogPID) (memhog)"), "\(result.stderr)")
        #expect(result.stderr.contains("froze pid \(hogPID) (memhog): moved from cgroup \(hogCgroup)"), "\(result.stderr)")
        #expect(result.stderr.contains("thawed pid \(hogPID) and moved it back to cgroup \(hogCgroup)"), "\(result.stderr)")
        // Back where it was, running, and jobgov's cgroups are gone.
        let line = try String(contentsOfFile: "/proc/\(hogPID)/cgroup", encoding: .utf8)
            .split(separator: "\n").first { $0.hasPrefix("0::") }
        #expect(line.map(String.init) == "0::" + hogCgroup)
        #expect(access(own + "/jobgov-guard-\(guardRun.pid)", F_OK) != 0)
        let cpuBefore = cpuTicks(hogPID)
        waitUntil("the thawed hog to run again", timeout: 10) { cpuTicks(hogPID) > cpuBefore }
    }

    /// Three CPU spinners on two CPUs: kill mode ends the one found using the most CPU. The machine is shared with
    /// other builds, so a spinner gets well under one CPU: hence the low --cpu-minimum.
    @Test func killsTheRunQueueHog() throws {
        let scratch = try Scratch()
        let own = try #require(CgroupLayout.detect().ownUnifiedDirectory, "needs a cgroup v2 hierarchy")
        let dir = own + "/jobgov-guard-cputest-\(getpid())"
        try #require(mkdir(dir, 0o755) == 0)
        var spinners: [Running] = []
        defer {
            for s in spinners { kill(s.pid, SIGKILL); _ = s.finish(timeout: 10) }
            rmdir(dir)
        }
        for i in 0..<3 {
            spinners.append(try Running("/bin/sh", ["-c", "echo $$ > \(dir)/cgroup.procs && while :; do :; done"],
                                        in: scratch, tag: "spin\(i)"))
        }
        waitUntil("the spinners to join their cgroup") { BuildCgroup.processes(in: dir).count == 3 }
        let result = try jobgov(["guard", "--action", "kill", "--interval", "0.5", "--confirm", "2", "--cpu-pressure", "10",
                                 "--cpu-minimum", "0.1",
                                 "--cgroup", String(dir.dropFirst(CgroupLayout.detect().unifiedMount!.count)), "--for", "4"],
                                in: scratch, timeout: 30)
        #expect(result.status == 0, "\(result.stderr)")
        let killed = spinners.filter { result.stderr.contains("killed pid \($0.pid) (sh) with SIGKILL") }
        #expect(killed.count >= 1, "\(result.stderr)")
        #expect(result.stderr.contains("CPU: pid"))
        for s in killed { #expect(s.finish(timeout: 10).status == 128 + SIGKILL) }
        #expect(spinners.filter { kill($0.pid, 0) == 0 }.count == 3 - killed.count)
    }

    /// Report mode changes nothing: the hog is named, with its evidence, and left where it is.
    @Test func reportModeOnlyReports() throws {
        let scratch = try Scratch()
        let result = try jobgov(["guard", "--for", "1", "--interval", "0.5"], in: scratch, timeout: 30)
        #expect(result.status == 0)
        #expect(result.stderr.contains("action: report"))
        let bad = try jobgov(["guard", "--action", "explode"], in: scratch)
        #expect(bad.status == 2)
        let pct = try jobgov(["guard", "--memory-pressure", "0"], in: scratch)
        #expect(pct.status == 2)
        #expect(pct.stderr.contains("give a percentage above 0 and up to 100"))
    }
}

private func cpuTicks(_ pid: Int32) -> UInt64 {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return 0 }
    let f = stat[stat.index(after: close)...].split(separator: " ")
    return (UInt64(f[11]) ?? 0) + (UInt64(f[12]) ?? 0)
}

private func jobgovRun(_ executable: String, _ arguments: [String], in scratch: Scratch) throws -> RunResult {
    try Running(executable, arguments, in: scratch, tag: URL(fileURLWithPath: executable).lastPathComponent).finish(timeout: 60)
}
