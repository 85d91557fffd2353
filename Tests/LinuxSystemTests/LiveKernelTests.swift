#if canImport(Glibc)
import Glibc
#endif
import JobgovCore
import LinuxSystem
import Testing

/// On the real kernel. PSI is required on the project's machines, so these fail (not skip) where it is missing.
@Suite("Live kernel")
struct LiveKernelTests {
    @Test(.enabled(if: geteuid() == 0, "needs root"))
    func pressureTriggerOnSystemMemory() throws {
        let trigger: PressureTrigger
        if PressureTrigger.allowsShortWindows {
            trigger = try PressureTrigger(
                path: "/proc/pressure/memory", kind: .some, stallMicroseconds: 150_000, windowMicroseconds: 1_000_000)
        } else {
            // Root without CAP_SYS_RESOURCE (as in the project's sandbox): the kernel refuses a 1 s window.
            do {
                _ = try PressureTrigger(path: "/proc/pressure/memory", kind: .some, stallMicroseconds: 150_000,
                                        windowMicroseconds: 1_000_000)
                Issue.record("a 1 s window was accepted without CAP_SYS_RESOURCE")
            } catch {
                #expect(error.errno == EINVAL)
                #expect(error.description.contains("CAP_SYS_RESOURCE"))
            }
            trigger = try PressureTrigger(
                path: "/proc/pressure/memory", kind: .some, stallMicroseconds: 150_000, windowMicroseconds: 2_000_000)
        }
        defer { trigger.close() }
        #expect(trigger.fd.rawValue >= 0)
        #expect(fcntl(trigger.fd.rawValue, F_GETFD) & FD_CLOEXEC != 0)
        #expect(fcntl(trigger.fd.rawValue, F_GETFL) & O_NONBLOCK != 0)
        var entry = pollfd(fd: trigger.fd.rawValue, events: Int16(POLLPRI), revents: 0)
        let ready = poll(&entry, 1, 100)
        #expect(ready >= 0)
        #expect(entry.revents & Int16(POLLERR | POLLNVAL) == 0)
        _ = trigger.waitForEvent(timeoutMilliseconds: 10)  // no pressure is induced; either answer is fine
    }

    @Test(.enabled(if: geteuid() == 0, "needs root"))
    func fullTriggerOnIO() throws {
        let trigger = try PressureTrigger(
            path: "/proc/pressure/io", kind: .full, stallMicroseconds: 500_000, windowMicroseconds: 2_000_000)
        #expect(trigger.fd.rawValue >= 0)
        trigger.close()
        trigger.close()  // a second close is harmless
        #expect(trigger.waitForEvent(timeoutMilliseconds: 0) == false)
    }

    /// The v2 directory this process is in, on either layout; nil without a v2 hierarchy.
    private static var ownUnifiedDirectory: String? {
        let mount = access("/sys/fs/cgroup/unified/cgroup.procs", F_OK) == 0 ? "/sys/fs/cgroup/unified"
            : access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0 ? "/sys/fs/cgroup" : nil
        guard let mount, let text = readSmallFile("/proc/self/cgroup"),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("0::") }) else { return nil }
        return mount + line.dropFirst(3)
    }

    /// A trigger on a cgroup that is removed reports POLLERR (with POLLPRI), and waitForEvent says false.
    @Test(.enabled(if: geteuid() == 0 && ownUnifiedDirectory != nil, "needs root and a v2 hierarchy"))
    func triggerOnRemovedCgroupReportsError() throws {
        let dir = try #require(Self.ownUnifiedDirectory) + "/jobgov-sensor-test-\(getpid())"
        #expect(mkdir(dir, 0o755) == 0)
        defer { rmdir(dir) }
        let trigger = try PressureTrigger(
            path: dir + "/memory.pressure", kind: .some, stallMicroseconds: 150_000, windowMicroseconds: 2_000_000)
        defer { trigger.close() }
        #expect(trigger.waitForEvent(timeoutMilliseconds: 10) == false)
        #expect(rmdir(dir) == 0)
        var entry = pollfd(fd: trigger.fd.rawValue, events: Int16(POLLPRI), revents: 0)
        #expect(poll(&entry, 1, 1000) == 1)
        #expect(entry.revents & Int16(POLLERR) != 0)
        #expect(trigger.waitForEvent(timeoutMilliseconds: 0) == false)
    }

    @Test func triggerRejectsBadParametersBeforeTouchingTheKernel() {
        #expect(throws: SystemError.self) {
            try PressureTrigger(path: "/proc/pressure/memory", kind: .some, stallMicroseconds: 100,
                                windowMicroseconds: 100_000)
        }
        #expect(throws: SystemError.self) {
            try PressureTrigger(path: "/proc/pressure/memory", kind: .some, stallMicroseconds: 2_000_000,
                                windowMicroseconds: 1_000_000)
        }
    }

    @Test func triggerOnMissingFileNamesIt() {
        do {
            _ = try PressureTrigger(path: "/nonexistent/memory.pressure", kind: .some, stallMicroseconds: 100_000,
                                    windowMicroseconds: 1_000_000)
            Issue.record("expected an error")
        } catch {
            #expect(error.errno == ENOENT)
            #expect(error.description.contains("/nonexistent/memory.pressure"))
        }
    }

    @Test func liveSampleHasMemoryCPUAndPressure() {
        let sample = SensorReader(root: "/").sample()
        #expect(sample.unavailable == [:])
        #expect(sample.memory.map { $0.total > 0 && $0.available <= $0.total } == true)
        #expect(sample.cpu != nil)
        #expect(Set(sample.systemPressure.keys) == [.cpu, .memory, .io])
        #expect(!sample.zones.isEmpty)
        #expect(sample.vmstat?.counters["nr_free_pages"] != nil)
        #expect(!sample.disks.isEmpty)
        #expect(sample.time > 0)
    }

    /// This process's own cgroups, on the hybrid layout of the project's machines.
    @Test(.enabled(if: access("/sys/fs/cgroup/unified/cgroup.procs", F_OK) == 0
                   && access("/sys/fs/cgroup/memory/memory.usage_in_bytes", F_OK) == 0, "hybrid layout only"))
    func liveSampleOfOwnHybridCgroups() throws {
        var own: [String: String] = [:]
        for line in try #require(readSmallFile("/proc/self/cgroup")).split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            if parts.count == 3 { own[String(parts[1])] = String(parts[2]) }
        }
        let paths = CgroupDirectories(
            unified: "/sys/fs/cgroup/unified" + (own[""] ?? "/"),
            memory: "/sys/fs/cgroup/memory" + (own["memory"] ?? "/"),
            cpuacct: "/sys/fs/cgroup/cpuacct" + (own["cpuacct"] ?? own["cpu,cpuacct"] ?? "/"))
        let sample = SensorReader(cgroup: paths).sample()
        #expect(sample.unavailable == [:])
        #expect(sample.cgroupPressure.count == 3)
        #expect(sample.cgroupMemory.map { $0.usageBytes > 0 } == true)
        #expect(sample.cgroupMemory?.underOOM == false)
        #expect(sample.cgroupCPU.map { $0.usageMicroseconds > 0 } == true)
    }
}
