import Foundation
#if canImport(Glibc)
import Glibc
#endif
import LinuxSystem
import Testing

/// A distributed-compile helper's daemon (distccd, iceccd, the icecream scheduler) standing in for another machine:
/// a process in a memory- and CPU-limited cgroup of its own beside the build's (its compiles are not the build's
/// memory), its output in the scratch directory, killed by pid (every process of its cgroup) and removed at the end.
final class HelperDaemon {
    let cgroup: BuildCgroup
    let process: Running
    let tag: String

    /// `memory` bytes and `cpus` CPUs for the daemon and everything it runs.
    init(_ tag: String, _ command: [String], env: [String: String] = [:], memory: UInt64 = 1 << 30, cpus: Double = 1,
         in s: Scratch) throws {
        self.tag = tag
        cgroup = try BuildCgroup.create(layout: CgroupLayout.detect(), name: "jobgov-test-\(getpid())-\(tag)")
        try cgroup.apply(CgroupLimits(memoryMax: memory, cpuQuotaMicroseconds: Int(cpus * 100_000)))
        let joins = cgroup.leafProcsFiles.map { "echo $$ > \($0)" }.joined(separator: " && ")
        process = try Running("/bin/sh", ["-c", "\(joins) && exec \"$@\"", "sh"] + command, in: s, env: env, tag: tag)
    }

    /// What the daemon wrote so far (stdout, then stderr).
    var log: String { process.scratch.read("\(tag).stdout") + process.scratch.read("\(tag).stderr") }

    /// Waits until `ready` holds while the daemon runs; fails the test with its log when it does not.
    func waitReady(_ what: String, timeout: Double = 60, _ ready: () -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !ready() && process.process.isRunning && Date() < deadline { usleep(100_000) }
        try #require(ready(), "\(tag) is not \(what): \(log.suffix(800))")
    }

    /// Kills every process of the daemon (by pid, from its cgroup), as when its machine goes away.
    func kill() {
        for _ in 0..<100 {
            let pids = cgroup.processes()
            if pids.isEmpty { break }
            for pid in pids { Glibc.kill(pid, SIGKILL) }
            usleep(20_000)
        }
        _ = process.finish(timeout: 10)
    }

    deinit {
        kill()
        for _ in 0..<100 where !cgroup.remove() { usleep(50_000) }
    }

    /// A loopback TCP port free at the time of asking.
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0
            }
        }
        guard ok else { throw POSIXError(.EADDRINUSE) }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// Whether something accepts connections on the loopback port.
    static func accepts(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }
}
