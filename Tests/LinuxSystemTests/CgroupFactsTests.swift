import Foundation
import LinuxSystem
import Testing

/// The cgroup value type, and the readings of "no limit" and of OOM kill counts that every caller shares.
@Suite("Cgroup directories and shared readings")
struct CgroupFactsTests {
    private let hybrid = CgroupDirectories(unified: "/sys/fs/cgroup/unified/jobgov-1", memory: "/sys/fs/cgroup/memory/jobgov-1",
                                           cpu: "/sys/fs/cgroup/cpu,cpuacct/jobgov-1",
                                           cpuacct: "/sys/fs/cgroup/cpu,cpuacct/jobgov-1")

    @Test func directoriesInEveryHierarchy() {
        #expect(hybrid.all == ["/sys/fs/cgroup/unified/jobgov-1", "/sys/fs/cgroup/memory/jobgov-1",
                               "/sys/fs/cgroup/cpu,cpuacct/jobgov-1"])  // cpu and cpuacct co-mounted: once
        let leaf = hybrid.child("build")
        #expect(leaf.unified == "/sys/fs/cgroup/unified/jobgov-1/build")
        #expect(leaf.memory == "/sys/fs/cgroup/memory/jobgov-1/build" && leaf.freezer == nil)
        #expect(hybrid.freezing == CgroupDirectories(unified: "/sys/fs/cgroup/unified/jobgov-1"))
        let legacy = CgroupDirectories(memory: "/m/j", freezer: "/f/j")
        #expect(legacy.freezing == CgroupDirectories(freezer: "/f/j"))
        #expect(CgroupDirectories().isEmpty && CgroupDirectories().freezing.isEmpty)
    }

    @Test func watchdogArgumentsNameEachHierarchy() {
        let plan = WatchdogPlan(runtimeDirectory: "/run/j", cgroup: CgroupDirectories(unified: "/u", memory: "/m",
                                                                                       cpu: "/c", freezer: "/f"),
                                removeWhenEmpty: ["/u"])
        #expect(plan.arguments == ["--runtime-dir", "/run/j", "--unified", "/u", "--memory", "/m", "--cpu", "/c",
                                   "--freezer", "/f", "--remove", "/u"])
    }

    private func scratch(_ files: [String: String]) throws -> String {
        let dir = NSTemporaryDirectory() + "jobgov-cgroup-facts-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        for (path, text) in files {
            let full = dir + "/" + path
            try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent,
                                                    withIntermediateDirectories: true)
            try text.write(toFile: full, atomically: false, encoding: .utf8)
        }
        return dir
    }

    /// `max` (v2) and PAGE_COUNTER_MAX (v1) both mean no limit, for the sensors and for jobgov's own limit alike.
    @Test func noLimitIsReadOneWay() throws {
        let dir = try scratch([
            "v2/a/memory.max": "1073741824\n", "v2/a/b/memory.max": "max\n",
            "v1/a/memory.stat": "cache 0\nhierarchical_memory_limit 9223372036854771712\n",
            "v1/a/memory.limit_in_bytes": "9223372036854771712\n",
            "v1/c/memory.stat": "hierarchical_memory_limit 536870912\n",
        ])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func layout(unified: String?, v1: String?) -> CgroupLayout {
            CgroupLayout(kind: v1 == nil ? .unified : .legacy, unifiedMount: unified == nil ? nil : dir + "/v2",
                         v1Mounts: v1 == nil ? [:] : ["memory": dir + "/v1"], unifiedPath: unified,
                         v1Paths: v1.map { ["memory": $0] } ?? [:])
        }
        #expect(layout(unified: "/a/b", v1: nil).effectiveMemoryLimit() == 1 << 30)
        #expect(layout(unified: nil, v1: "/a").effectiveMemoryLimit() == nil)
        #expect(layout(unified: nil, v1: "/c").effectiveMemoryLimit() == 512 << 20)
        let v1 = try parseCgroupV1Memory(usage: "4096\n", limit: "9223372036854771712\n", maxUsage: nil, stat: nil,
                                         oomControl: nil, directory: "/m")
        #expect(v1.limitBytes == nil)
    }

    /// The build's OOM kill count (v1: summed over the leaves) reads the files as the sensors do.
    @Test func oomKillsAreParsedOnce() throws {
        let dir = try scratch([
            "memory.oom_control": "oom_kill_disable 1\nunder_oom 0\noom_kill 1\n",
            "build/memory.oom_control": "oom_kill_disable 1\nunder_oom 0\noom_kill 2\n",
            "build/job-7/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\n",  // before Linux 4.13: no count
        ])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(BuildCgroup.v1OOMKills(below: dir) == 3)
        #expect(try parseOOMKills("low 0\nhigh 4\nmax 2\noom 1\noom_kill 1\n", path: "memory.events") == 1)
        #expect(try parseOOMKills("oom_kill_disable 0\nunder_oom 0\n", path: "memory.oom_control") == nil)
        #expect(throws: SensorError.self) { try parseOOMKills("oom_kill many\n", path: "memory.events") }
    }
}
