import BPFProbes
import Foundation
import LinuxSystem
import Testing

let isRoot = geteuid() == 0
let python = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") ? "/usr/bin/python3" : "python3"

/// A cgroup made for one test below the test's own (v2 child, and on this hybrid machine a v1 memory child too),
/// the probes attached to it, and the processes the test started. `dispose` resumes and kills those processes,
/// lifts limits, closes the probes and removes the cgroup, whatever happened.
final class ProbeHarness {
    let cgroup: BuildCgroup
    let probes: BuildProbes
    private(set) var started: [pid_t] = []
    private(set) var events: [ProbeEvent] = []

    init(_ tag: String, limits: CgroupLimits? = nil) throws {
        cgroup = try BuildCgroup.create(layout: CgroupLayout.detect(), name: "jobgov-bpftest-\(getpid())-\(tag)")
        do {
            if let limits { try cgroup.apply(limits) }
            let dir = try #require(cgroup.directories.unified, "the machine has no cgroup v2 tree")
            probes = try BuildProbes.open(cgroupV2Path: dir)
        } catch {
            Self.remove(cgroup, pids: [])
            throw error
        }
    }

    /// Starts `argv` inside the cgroup's build leaf (joined before exec).
    func spawnInside(_ argv: [String]) throws -> pid_t {
        let pid = try ProcessLauncher.spawn(executable: argv[0], arguments: argv, environment: ["PATH=/usr/bin:/bin"],
                                            intoCgroups: cgroup.leafProcsFiles, defaultSignals: [SIGINT, SIGTERM, SIGCHLD])
        started.append(pid)
        return pid
    }

    /// Starts `argv` outside the cgroup (where the test itself runs).
    func spawnOutside(_ argv: [String]) throws -> pid_t {
        let pid = try ProcessLauncher.spawn(executable: argv[0], arguments: argv, environment: ["PATH=/usr/bin:/bin"],
                                            defaultSignals: [SIGINT, SIGTERM, SIGCHLD])
        started.append(pid)
        return pid
    }

    /// Collects events until `done` holds for the events seen so far, or `timeout` seconds pass.
    @discardableResult
    func collect(timeout: Double = 20, until done: ([ProbeEvent]) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            probes.poll(milliseconds: 50) { events.append($0) }
            if done(events) { return true }
        }
        return false
    }

    /// The exit status of one of our children (0-255, or 128+signal), waiting at most `timeout` seconds.
    func exitStatus(_ pid: pid_t, timeout: Double = 20) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                started.removeAll { $0 == pid }
                return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
            }
            probes.poll(milliseconds: 20) { events.append($0) }
        }
        return nil
    }

    func dispose() {
        probes.close()
        Self.remove(cgroup, pids: started)
        started.removeAll()
    }

    private static func remove(_ cgroup: BuildCgroup, pids: [pid_t]) {
        BuildCgroup.liftLimits(cgroup.directories)
        for pid in Set(pids + cgroup.processes()) {
            kill(pid, SIGCONT)
            kill(pid, SIGKILL)
        }
        for pid in pids {
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
        for _ in 0..<100 where !cgroup.remove() { usleep(50_000) }
    }
}

/// The scheduler state letter of a process (field 3 of /proc/PID/stat): R, S, D, T, Z...
func processState(_ pid: pid_t) -> Character? {
    guard let text = readSmallFile("/proc/\(pid)/stat"), let close = text.lastIndex(of: ")") else { return nil }
    return text[text.index(after: close)...].first { $0 != " " }
}

func waitFor(_ what: String, timeout: Double = 20, sourceLocation: SourceLocation = #_sourceLocation,
             _ condition: () -> Bool) {
    let deadline = Date().addingTimeInterval(timeout)
    while !condition() {
        if Date() > deadline {
            Issue.record("gave up waiting for \(what)", sourceLocation: sourceLocation)
            return
        }
        usleep(20_000)
    }
}
