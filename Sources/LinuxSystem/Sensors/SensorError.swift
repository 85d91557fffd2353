#if canImport(Glibc)
import Glibc
#endif

/// Why a /proc, sysfs or cgroupfs file could not give a reading.
public enum SensorError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The file does not exist: the kernel or the cgroup does not offer it.
    case missing(path: String)
    /// The file exists but open(2) or read(2) failed.
    case unreadable(path: String, errno: Int32)
    /// A line (1-based) is not in the format the kernel documents.
    case malformed(path: String, line: Int, text: String)
    /// The file is empty or ends before something every kernel jobgov supports writes.
    case truncated(path: String, expected: String)

    public var path: String {
        switch self {
        case .missing(let path), .unreadable(let path, _), .malformed(let path, _, _), .truncated(let path, _):
            return path
        }
    }

    public var description: String {
        switch self {
        case .missing(let path):
            return "\(path) does not exist: this kernel or cgroup does not provide it "
                + "(PSI needs CONFIG_PSI and psi=1 on the kernel command line; cgroup files need the controller)"
        case .unreadable(let path, let errno):
            let reason = String(cString: strerror(errno))
            let hint = switch errno {
            case EACCES, EPERM: " (run jobgov as a user allowed to read it)"
            case EOPNOTSUPP: " (the feature is compiled in but switched off; for PSI boot with psi=1)"
            default: ""
            }
            return "cannot read \(path): \(reason)\(hint)"
        case .malformed(let path, let line, let text):
            return "\(path) line \(line) is not in the expected format: \"\(text)\" "
                + "(an unknown kernel format; please report it with the file attached)"
        case .truncated(let path, let expected):
            return "\(path) has no \(expected) (the file is empty, was cut short, or comes from an older kernel)"
        }
    }
}
