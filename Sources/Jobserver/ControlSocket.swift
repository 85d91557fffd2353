#if canImport(Glibc)
import Glibc
#endif
import CJobgovShims
import JobgovCore
import LinuxSystem
import SystemPackage

private func makeUnixAddress(_ path: String) throws(SystemError) -> sockaddr_un {
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    let capacity = MemoryLayout.size(ofValue: address.sun_path)
    guard bytes.count < capacity else {
        throw SystemError("socket path too long", path: path, errno: ENAMETOOLONG,
                          hint: "set XDG_RUNTIME_DIR or TMPDIR to a shorter directory")
    }
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        raw.copyBytes(from: bytes)
        raw[bytes.count] = 0
    }
    return address
}

/// The control socket of a running build: a Unix stream socket in the private directory (mode 0600), one
/// request line and one reply line per connection. Non-blocking, driven by the supervisor's poll loop.
public final class ControlServer {
    public let path: String
    public let listener: FileDescriptor
    /// Open connections by raw descriptor (what poll(2) reports back), with what each sent so far.
    private var connections: [Int32: [UInt8]] = [:]
    /// Connections whose reply is put off.
    private var waiting: Set<Int32> = []

    public init(path: String) throws(SystemError) {
        self.path = path
        var address = try makeUnixAddress(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw SystemError("cannot create the control socket") }
        // No umask juggling (it is process-wide): the directory is 0700, so nobody else can reach the socket in
        // the moment before chmod narrows it to 0600.
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0, chmod(path, 0o600) == 0, listen(fd, 16) == 0 else {
            let e = SystemError("cannot listen on the control socket", path: path)
            Glibc.close(fd)
            throw e
        }
        listener = FileDescriptor(rawValue: fd)
    }

    /// Descriptors to poll for input: the listener and every open connection (raw: they go into a pollfd array).
    public var pollDescriptors: [Int32] { [listener.rawValue] + connections.keys.sorted() }

    /// Handles whatever is ready on `fd`. `respond` turns a request into a reply line.
    public func handleReadable(_ fd: Int32, respond: (Result<ControlRequest, ControlProtocolError>) -> String) {
        handleReadable(fd) { _, request in respond(request) }
    }

    /// Handles whatever is ready on `fd`. `respond` gets the connection and the request, and returns the reply
    /// line, or nil to reply later with `reply(_:to:)` (the connection is not polled meanwhile).
    public func handleReadable(_ fd: Int32,
                               respond: (Int32, Result<ControlRequest, ControlProtocolError>) -> String?) {
        if fd == listener.rawValue {
            while true {
                let conn = jobgov_accept_nonblocking(listener.rawValue)
                if conn < 0 { break }
                // Only the owner can reach the socket (the directory is 0700); check the peer anyway.
                let peer = jobgov_peer_uid(conn)
                if peer != Int(getuid()), peer != 0 {
                    Glibc.close(conn)
                    continue
                }
                connections[conn] = []
            }
            return
        }
        guard var buffer = connections[fd] else { return }
        var chunk = [UInt8](repeating: 0, count: 512)
        let n = chunk.withUnsafeMutableBytes { raw in retryingInterrupts { read(fd, raw.baseAddress, raw.count) } }
        if n < 0 && errno == EAGAIN { return }
        if n <= 0 {
            finish(fd, buffer: buffer, respond: respond)
            return
        }
        buffer.append(contentsOf: chunk[0..<n])
        if buffer.contains(UInt8(ascii: "\n")) || buffer.count > 4096 {
            finish(fd, buffer: buffer, respond: respond)
        } else {
            connections[fd] = buffer
        }
    }

    private func finish(_ fd: Int32, buffer: [UInt8],
                        respond: (Int32, Result<ControlRequest, ControlProtocolError>) -> String?) {
        connections[fd] = nil
        let line = String(decoding: buffer.prefix(while: { $0 != UInt8(ascii: "\n") }), as: UTF8.self)
        if !line.isEmpty {
            guard let text = respond(fd, ControlRequest.parse(line)) else {
                waiting.insert(fd)
                return
            }
            send(text, on: fd)
        }
        Glibc.close(fd)
    }

    /// The reply to a request whose answer was put off; closes the connection.
    public func reply(_ text: String, to connection: Int32) {
        guard waiting.remove(connection) != nil else { return }
        send(text, on: connection)
        Glibc.close(connection)
    }

    private func send(_ text: String, on fd: Int32) {
        let reply = Array((text + "\n").utf8)
        _ = reply.withUnsafeBytes { raw in retryingInterrupts { Glibc.send(fd, raw.baseAddress, raw.count, Int32(MSG_NOSIGNAL)) } }
    }

    public func close() {
        for fd in connections.keys { Glibc.close(fd) }
        connections.removeAll()
        for fd in waiting { Glibc.close(fd) }
        waiting.removeAll()
        try? listener.close()
        unlink(path)
    }
}

/// The client side, used by `jobgov ctl`.
public enum ControlClient {
    /// Sends one request and returns the reply line.
    public static func send(_ request: ControlRequest, to path: String, timeoutMilliseconds: Int32 = 5000) throws(SystemError) -> String {
        var address = try makeUnixAddress(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError("cannot create a socket") }
        defer { Glibc.close(fd) }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else { throw SystemError("cannot reach jobgov at", path: path, hint: "is the build still running?") }
        let line = Array((request.line + "\n").utf8)
        _ = line.withUnsafeBytes { raw in retryingInterrupts { Glibc.send(fd, raw.baseAddress, raw.count, Int32(MSG_NOSIGNAL)) } }
        var reply: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while !reply.contains(UInt8(ascii: "\n")) {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = retryingInterrupts { poll(&pfd, 1, timeoutMilliseconds) }
            guard ready > 0 else { throw SystemError("no reply from jobgov at", path: path, errno: ETIMEDOUT) }
            let n = chunk.withUnsafeMutableBytes { raw in retryingInterrupts { read(fd, raw.baseAddress, raw.count) } }
            if n <= 0 { break }
            reply.append(contentsOf: chunk[0..<n])
        }
        return String(decoding: reply.prefix(while: { $0 != UInt8(ascii: "\n") }), as: UTF8.self)
    }
}
