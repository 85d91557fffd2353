import BPFProbes
import JobgovCore
import Foundation
import LinuxSystem
import Testing

/// jobgov's BPF programs on the running kernel. Each test makes its own cgroup below the test's own, puts the
/// processes it starts there, and removes both, whatever happens.
@Suite("BPF probes on the real kernel", .serialized, .enabled(if: isRoot, "needs root to load BPF and create cgroups"))
struct BPFProbesKernelTests {
    @Test("every observer loads and attaches on this kernel")
    func everythingLoads() throws {
        let h = try ProbeHarness("load")
        defer { h.dispose() }
        for (observer, reason) in h.probes.unavailable { Issue.record("\(observer) is off: \(reason)") }
        #expect(h.probes.pollDescriptor != nil)
        for observer in ProbeObserver.allCases { #expect(h.probes.isAvailable(observer), "\(observer)") }
    }

    @Test("exec and exit events carry pids, commands and statuses of the cgroup's processes only")
    func execExit() throws {
        let h = try ProbeHarness("exec")
        defer { h.dispose() }
        let marker = "jgmark\(getpid())"
        let outside = try h.spawnOutside(["/bin/sh", "-c", "/bin/echo outside-\(marker) >/dev/null; exit 5"])
        let inside = try h.spawnInside(["/bin/sh", "-c", "/bin/echo inside-\(marker) >/dev/null; /bin/sleep 0.2; exit 7"])
        let killed = try h.spawnInside(["/bin/sh", "-c", "kill -TERM $$; sleep 5"])
        #expect(h.exitStatus(outside) == 5)
        #expect(h.exitStatus(inside) == 7)
        #expect(h.exitStatus(killed) == 128 + SIGTERM)
        h.collect { events in
            events.contains(.exit(pid: inside, status: .exited(7), peakRSS: 0)) || events.contains {
                if case .exit(inside, .exited(7), _) = $0 { return true } else { return false }
            } && events.contains { if case .exit(killed, _, _) = $0 { return true } else { return false } }
        }
        let events = h.events
        // the shell itself
        #expect(events.contains(.exec(pid: inside, ppid: getpid(),
                                      command: "/bin/sh -c /bin/echo inside-\(marker) >/dev/null; /bin/sleep 0.2; exit 7")))
        #expect(events.contains { if case .exit(inside, .exited(7), _) = $0 { return true } else { return false } })
        #expect(events.contains { if case .exit(killed, .signaled(SIGTERM), _) = $0 { return true } else { return false } })
        // its children: fork, exec with the command, exit 0
        let children = events.compactMap { if case .fork(inside, let child) = $0 { return child } else { return nil } }
        #expect(children.count == 2, "echo and sleep")
        let echo = try #require(events.first {
            if case .exec(let pid, inside, "/bin/echo inside-\(marker)") = $0 { return children.contains(pid) }
            return false
        }, "exec of /bin/echo with its arguments")
        guard case .exec(let echoPID, _, _) = echo else { return }
        #expect(events.contains { if case .exit(echoPID, .exited(0), _) = $0 { return true } else { return false } })
        #expect(events.contains { if case .exec(_, _, "/bin/sleep 0.2") = $0 { return true } else { return false } })
        // nothing from outside
        for event in events {
            switch event {
            case .exec(let pid, _, let command):
                #expect(pid != outside && !command.contains("outside-"), "\(event)")
            case .exit(let pid, _, _), .fork(let pid, _):
                #expect(pid != outside, "\(event)")
            default: break
            }
        }
    }

    @Test("a job that allocates and touches 200 MB reports a peak RSS within 10% of it")
    func peakRSS() throws {
        let h = try ProbeHarness("rss", limits: CgroupLimits(memoryMax: 400 << 20))
        defer { h.dispose() }
        let size: UInt64 = 200 << 20
        let job = try h.spawnInside([python, "-S", "-c",
                                     "import time; b = bytearray(\(size)); b[::4096] = b'x' * len(b[::4096]); time.sleep(2)"])
        // While it runs: the kmem:rss_stat map (sampled, so it may lag a little).
        var running: (current: UInt64, peak: UInt64)?
        waitFor("the running job's RSS in the map to pass 90% of 200 MiB", timeout: 20) {
            running = h.probes.memory(of: job)
            return (running?.peak ?? 0) >= size * 9 / 10
        }
        usleep(500_000) // past its ramp: it sleeps 2 s once all of it is touched
        running = h.probes.memory(of: job)
        let runningError = abs(Double(running?.peak ?? 0) - Double(size)) / Double(size)
        print("running job's RSS from kmem:rss_stat: current \(running?.current ?? 0), peak \(running?.peak ?? 0) bytes (\(String(format: "%.1f", runningError * 100))% off)")
        #expect(runningError < 0.10)
        #expect(h.exitStatus(job, timeout: 30) == 0)
        h.collect { $0.contains { if case .exit(job, _, _) = $0 { return true } else { return false } } }
        let peak = try #require(h.events.lazy.compactMap { event -> UInt64? in
            if case .exit(job, _, let peak) = event { return peak } else { return nil }
        }.first, "an exit event for the job")
        let error = abs(Double(peak) - Double(size)) / Double(size)
        print("peak RSS of a 200 MiB job: \(peak) bytes (\(String(format: "%.1f", error * 100))% off)")
        #expect(error < 0.10)
        // The map keeps the peak after exit until read, then forgets it.
        let record = try #require(h.probes.memory(of: job))
        #expect(record.peak == peak)
        #expect(h.probes.memory(of: job) == nil)
    }

    @Test("an OOM kill in a small memory-limited cgroup names the victim")
    func oomVictim() throws {
        // No swapping in its cgroup (v1 memory.swappiness 0): with any swap on the machine (another program's zram)
        // the hog would otherwise page out and finish instead of meeting the OOM killer.
        let h = try ProbeHarness("oom", limits: CgroupLimits(memoryMax: 50 << 20, swappiness: 0))
        defer { h.dispose() }
        let hog = try h.spawnInside([python, "-S", "-c", "b = bytearray(100 << 20)"])
        #expect(h.exitStatus(hog, timeout: 30) == 128 + SIGKILL)
        let seen = h.collect { $0.contains { if case .oomVictim(hog, _, _, _) = $0 { return true } else { return false } } }
        #expect(seen, "an OOM event for pid \(hog); got \(h.events.filter { if case .oomVictim = $0 { return true } else { return false } })")
        if case .oomVictim(_, let command, let cgroupID, let inBuild)? = h.events.first(where: {
            if case .oomVictim(hog, _, _, _) = $0 { return true } else { return false }
        }) {
            #expect(command.hasPrefix("python3"))
            #expect(inBuild)
            #expect(cgroupID != 0)
        }
        #expect(h.events.contains { if case .exit(hog, .signaled(SIGKILL), _) = $0 { return true } else { return false } })
    }

    @Test("the exec gate holds the tool's job beyond the target at exec, lets an admitted job's programs pass, and admits in the kernel while there is room")
    func execGate() throws {
        let h = try ProbeHarness("gate")
        defer { h.dispose() }
        let marks = "/tmp/jobgov-bpftest-\(getpid())-gate"
        defer { for m in ["a", "b"] { unlink("\(marks).\(m)") } }
        h.probes.startGate(supervisor: getpid(), target: 1)
        // The tool (this test's child) starts two jobs; the first runs programs of its own (sleep, echo).
        let tool = try h.spawnInside([python, "-S", "-c", """
            import subprocess, time
            a = subprocess.Popen(["/bin/sh", "-c", "/bin/sleep 1; /bin/echo a > \(marks).a"])
            time.sleep(0.3)
            b = subprocess.Popen(["/bin/sh", "-c", "/bin/echo b > \(marks).b"])
            raise SystemExit(a.wait() + b.wait())
            """])
        h.probes.setGateTool(tool)
        let outside = try h.spawnOutside(["/bin/sh", "-c", "exit 4"])
        #expect(h.exitStatus(outside) == 4, "outside the cgroup nothing is stopped")
        h.collect { $0.contains { if case .gateStopped = $0 { return true } else { return false } } }
        let held = h.probes.gatedProcesses
        try #require(held.count == 1, "the second job is held: \(h.events)")
        #expect(held[0].job == held[0].pid, "a job's first program is its root's")
        #expect(h.events.contains(.gateStopped(pid: held[0].pid, command: "sh", job: held[0].pid)))
        #expect(h.probes.admittedJobs == 1)
        waitFor("the held job to stop") { processState(held[0].pid) == "T" }
        waitFor("the first job to run its own programs to the end", timeout: 20) {
            access("\(marks).a", F_OK) == 0 && h.probes.admittedJobs == 0
        }
        #expect(access("\(marks).b", F_OK) != 0, "the held job has not run")
        #expect(processState(held[0].pid) == "T", "it stays stopped with its place taken")
        let release = GateAdmission.release(target: 1, admittedJobs: h.probes.admittedJobs, held: h.probes.gatedProcesses)
        #expect(h.probes.admit(release) == [held[0].pid])
        #expect(h.exitStatus(tool) == 0, "admitted, the held job runs and the tool ends")
        #expect(access("\(marks).b", F_OK) == 0)
        #expect(h.probes.gatedProcesses.isEmpty)
        #expect(h.probes.gateCounts.stopped == 1)
        #expect(h.probes.gateCounts.admittedInKernel == 1)

        // With room for three, three jobs started at once pass in the kernel, none stopped (the tool not named:
        // any child of the supervisor's in the cgroup is taken for it).
        h.probes.startGate(supervisor: getpid(), target: 3)
        let burst = try h.spawnInside([python, "-S", "-c", """
            import subprocess
            jobs = [subprocess.Popen(["/bin/sleep", "0.2"]) for _ in range(3)]
            raise SystemExit(sum(j.wait() for j in jobs))
            """])
        #expect(h.exitStatus(burst) == 0)
        #expect(h.probes.gateCounts.stopped == 1, "nothing more held")
        #expect(h.probes.gateCounts.admittedInKernel == 4)
    }

    @Test("run-queue latency of the build's tasks is measured")
    func runQueue() throws {
        let h = try ProbeHarness("runq")
        defer { h.dispose() }
        let before = h.probes.histogram(.runQueue).count
        // Three spinners on two CPUs must wait for each other.
        let spinners = try (0..<3).map { _ in try h.spawnInside(["/bin/sh", "-c", "timeout 1 sh -c 'while :; do :; done'; true"]) }
        for pid in spinners { #expect(h.exitStatus(pid) == 0) }
        let after = h.probes.histogram(.runQueue)
        #expect(after.count > before)
        print("run-queue latency p90 ≤ \(after.quantileUpperBound(0.9) ?? 0) µs over \(after.count) waits")
    }

    @Test("after close no program or map of ours stays loaded")
    func detach() throws {
        let h = try ProbeHarness("detach")
        let (programs, maps) = h.probes.kernelObjectIDs
        #expect(programs.count == 14)
        #expect(maps.count >= 10)
        let loadedBefore = Set(BPFInventory.programs().map(\.id))
        #expect(Set(programs).isSubset(of: loadedBefore))
        h.dispose()
        h.probes.close() // idempotent
        waitFor("the kernel to free our programs and maps", timeout: 10) {
            Set(BPFInventory.programs().map(\.id)).isDisjoint(with: programs)
                && Set(BPFInventory.maps().map(\.id)).isDisjoint(with: maps)
        }
        #expect(Set(BPFInventory.programs().map(\.id)).isDisjoint(with: programs))
        #expect(Set(BPFInventory.maps().map(\.id)).isDisjoint(with: maps))
    }
}

@Suite("BPF probes without privilege", .enabled(if: isRoot, "needs root to drop privilege"))
struct BPFProbesDegradeTests {
    /// The bench tool run as nobody: every observer is reported off with the reason, and it still runs.
    @Test("without root every observer is reported unavailable, one line each, and nothing fails")
    func unprivileged() throws {
        let bench = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        var tool = bench.appendingPathComponent("jobgov-probe-bench").path
        if !FileManager.default.isExecutableFile(atPath: tool) {
            tool = bench.deletingLastPathComponent().appendingPathComponent("jobgov-probe-bench").path
        }
        try #require(FileManager.default.isExecutableFile(atPath: tool), "jobgov-probe-bench is built with the tests")
        let out = Pipe()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        p.arguments = ["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", tool,
                       CgroupLayout.detect().ownUnifiedDirectory ?? "/sys/fs/cgroup"]
        p.standardOutput = out
        try p.run()
        // It prints its report, then waits for SIGTERM.
        var text = ""
        let deadline = Date().addingTimeInterval(20)
        while !text.contains("ready"), Date() < deadline {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        p.terminate()
        p.waitUntilExit()
        let lines = text.split(separator: "\n").filter { $0.hasPrefix("unavailable: ") }
        print(lines.joined(separator: "\n"))
        #expect(lines.count == ProbeObserver.allCases.count)
        #expect(lines.allSatisfy { $0.contains("CAP_BPF") })
        #expect(text.contains("ready"))
        #expect(p.terminationStatus == 0)
    }
}

@Suite("Histograms")
struct HistogramTests {
    @Test("quantiles and thresholds of a log2 histogram")
    func quantiles() {
        var buckets = Array(repeating: UInt64(0), count: 32)
        buckets[3] = 90   // 8-15 µs
        buckets[17] = 10  // 131-262 ms
        let h = LatencyHistogram(buckets: buckets)
        #expect(h.count == 100)
        #expect(h.quantileUpperBound(0.5) == 16)
        #expect(h.quantileUpperBound(0.95) == 1 << 18)
        #expect(h.count(atLeast: 100_000) == 10)
        #expect(LatencyHistogram(buckets: Array(repeating: 0, count: 32)).quantileUpperBound(0.5) == nil)
        #expect(h.subtracting(h).count == 0)
    }
}
