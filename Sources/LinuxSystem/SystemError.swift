#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A failed system call, with what jobgov was doing and what the user can do about it.
public struct SystemError: Error, CustomStringConvertible, Sendable {
    public var operation: String
    public var path: String?
    public var errno: Int32
    public var hint: String?

    public init(_ operation: String, path: String? = nil, errno: Int32 = Glibc.errno, hint: String? = nil) {
        self.operation = operation
        self.path = path
        self.errno = errno
        self.hint = hint
    }

    public var description: String {
        var s = operation
        if let path { s += " \(path)" }
        s += ": " + String(cString: strerror(errno))
        if let hint { s += " (\(hint))" }
        return s
    }
}

/// Runs a system call again while it fails with EINTR; the one place that rule lives.
@inline(__always)
public func retryingInterrupts<T: SignedInteger>(_ body: () -> T) -> T {
    while true {
        let result = body()
        if result == -1 && errno == EINTR { continue }
        return result
    }
}

/// Monotonic time in seconds, for intervals (never wall-clock time).
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Writes all of `text` to a descriptor, one write(2) when it fits, so jobgov's lines do not interleave
/// mid-line with the build's.
public func writeAll(_ fd: Int32, _ text: String) {
    var bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeMutableBytes { raw in
            retryingInterrupts { write(fd, raw.baseAddress! + offset, raw.count - offset) }
        }
        if n <= 0 { return }
        offset += n
    }
}

public func writeStandardError(_ text: String) { writeAll(2, text) }
