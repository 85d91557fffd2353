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
            switch askDaemonStatus(path, timeoutMilliseconds: Self.replyMilliseconds) {
            case .status(let status, let json):
                return (path, status, json)
            case .refused:
                // The daemon does not serve this user. Said once per daemon.
                if refused.insert(path).inserted {
                    note("jobgov daemon at \(path) serves root and the members of its group only; its builds are not "
                         + "shown (ask its administrator to add you to that group)")
                }
            case nil:
                continue
            }
        }
        return nil
    }
}

/// A daemon's answer to `builds`: its status (with the JSON as sent), or `refused` when it closed the connection
/// without a reply (it does not serve this user).
enum DaemonStatusAnswer {
    case status(DaemonStatus, json: String)
    case refused
}

/// Asks the daemon at `path` for the builds it serves (`jobgov monitor`, `jobgov ctl --pid`); nil when nobody
/// answers there or the reply is not a daemon's status.
func askDaemonStatus(_ path: String, timeoutMilliseconds: Int32) -> DaemonStatusAnswer? {
    guard let reply = try? ControlClient.sendLine(DaemonRequest.builds.line, to: path,
                                                  timeoutMilliseconds: timeoutMilliseconds, unreachableHint: "") else {
        return nil
    }
    if reply.isEmpty { return .refused }
    guard let status = try? DaemonStatus.decode(json: reply) else { return nil }
    return .status(status, json: reply)
}
