#if canImport(Glibc)
import Glibc
#endif
import JobgovCore
import Jobserver
import LinuxSystem

/// `jobgov monitor`'s view of a listening `jobgov daemon`: the builds it serves, asked once per update with the
/// request `jobgov daemon --status` makes (a user sees their own builds, root all). Where no daemon listens this
/// costs one refused connection per place looked at and shows nothing.
final class MonitorDaemon {
    private let paths: [String]
    private var refused: Set<String> = []
    /// How long one update waits for the daemon's answer: a stopped daemon must not stall the monitor.
    static let replyMilliseconds: Int32 = 250

    init(paths: [String]) {
        self.paths = paths
    }

    /// The status of the first daemon that answers, with its JSON as the daemon sent it; nil when none does.
    func read() -> (path: String, status: DaemonStatus, json: String)? {
        for path in paths {
            guard let reply = try? ControlClient.sendLine(DaemonRequest.builds.line, to: path,
                                                          timeoutMilliseconds: Self.replyMilliseconds,
                                                          unreachableHint: "") else { continue }
            if reply.isEmpty {
                // Closed without a reply: the daemon does not serve this user. Said once per daemon.
                if refused.insert(path).inserted {
                    note("jobgov daemon at \(path) serves root and the members of its group only; its builds are not "
                         + "shown (ask its administrator to add you to that group)")
                }
                continue
            }
            guard let status = try? DaemonStatus.decode(json: reply) else { continue }
            return (path, status, reply)
        }
        return nil
    }
}
