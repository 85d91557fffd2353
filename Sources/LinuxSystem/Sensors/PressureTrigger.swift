#if canImport(Glibc)
import Glibc
#endif
import SystemPackage

/// A PSI trigger: the kernel marks `fd` with POLLPRI when tasks stalled for at least `stallMicroseconds` within
/// a `windowMicroseconds` window, so the poll loop wakes at the onset of pressure instead of at the next tick.
/// POLLERR means the file went away (its cgroup was removed). One trigger per descriptor; it lives until close.
public final class PressureTrigger {
    public enum Kind: String, Sendable {
        /// At least one task stalled.
        case some
        /// All non-idle tasks stalled at once.
        case full
    }

    public let path: String
    public let fd: FileDescriptor
    private var isOpen = true

    /// - Parameters:
    ///   - path: a pressure file: `/proc/pressure/memory` or a cgroup's `memory.pressure`.
    ///   - windowMicroseconds: 500 ms to 10 s. Without CAP_SYS_RESOURCE (even as root, when it was dropped), Linux
    ///     6.5+ only accepts multiples of 2 s; see `allowsShortWindows`.
    public init(path: String, kind: Kind, stallMicroseconds: Int, windowMicroseconds: Int) throws(SystemError) {
        let rules = "stall must be > 0 and <= window; window 500000...10000000 us"
        guard stallMicroseconds > 0, stallMicroseconds <= windowMicroseconds,
              (500_000...10_000_000).contains(windowMicroseconds) else {
            throw SystemError("set PSI trigger on", path: path, errno: EINVAL, hint: rules)
        }
        let fd = retryingInterrupts { open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC) }
        guard fd >= 0 else {
            let code = errno
            throw SystemError("open PSI file", path: path, errno: code, hint: Self.hint(for: code))
        }
        // The kernel parses a NUL-terminated string; send the terminator with it.
        let request = Array("\(kind.rawValue) \(stallMicroseconds) \(windowMicroseconds)".utf8CString)
        let written = request.withUnsafeBytes { raw in retryingInterrupts { write(fd, raw.baseAddress, raw.count) } }
        guard written == request.count else {
            let code = written < 0 ? errno : EIO
            Glibc.close(fd)
            let unprivileged = "without CAP_SYS_RESOURCE the window must be a multiple of 2000000 us"
            let hint = code != EINVAL ? Self.hint(for: code) : Self.allowsShortWindows ? rules : unprivileged
            throw SystemError("set PSI trigger on", path: path, errno: code, hint: hint)
        }
        self.path = path
        self.fd = FileDescriptor(rawValue: fd)
    }

    /// Whether this process may use windows that are not a multiple of 2 s: it holds CAP_SYS_RESOURCE. (Read from
    /// /proc/self/status because root alone is not enough: containers and sandboxes drop the capability.)
    public static var allowsShortWindows: Bool {
        guard let status = readSmallFile("/proc/self/status"),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
              let mask = UInt64(line.dropFirst("CapEff:".count).trimmingPrefix(while: { $0 == " " || $0 == "\t" }),
                                radix: 16) else { return false }
        return mask & (1 << 24) != 0  // CAP_SYS_RESOURCE
    }

    private static func hint(for code: Int32) -> String? {
        switch code {
        case ENOENT: return "no PSI here: needs CONFIG_PSI, and for a cgroup a v2 directory"
        case EOPNOTSUPP: return "PSI is compiled in but off: boot with psi=1"
        case EACCES, EPERM: return "needs write access to the pressure file (before Linux 6.5: CAP_SYS_RESOURCE)"
        case EBUSY: return "this descriptor already has a trigger"
        default: return nil
        }
    }

    /// Waits up to `timeoutMilliseconds` (-1: forever) for the trigger to fire. False on timeout or when the file
    /// went away (POLLERR). For tests and simple callers; the governor polls `fd` with its other descriptors.
    public func waitForEvent(timeoutMilliseconds: Int32) -> Bool {
        guard isOpen else { return false }
        var entry = pollfd(fd: fd.rawValue, events: Int16(POLLPRI), revents: 0)
        let ready = retryingInterrupts { poll(&entry, 1, timeoutMilliseconds) }
        return ready > 0 && entry.revents & Int16(POLLPRI) != 0 && entry.revents & Int16(POLLERR) == 0
    }

    /// Removes the trigger. Safe to call twice.
    public func close() {
        guard isOpen else { return }
        isOpen = false
        try? fd.close()
    }

    deinit { close() }
}
