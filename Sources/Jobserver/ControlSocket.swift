#if canImport(Glibc)
import Glibc
#endif
import CJobgovShims
import JobgovCore
import LinuxSystem
import SystemPackage

func makeUnixAddress(_ path: String) throws(SystemError) -> sockaddr_un {
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

/// The kernel's word on who is at the other end of a Unix socket.
func peerCredentials(_ fd: Int32) -> PeerCredentials? {
    var pid: Int32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
    guard jobgov_peer_credentials(fd, &pid, &uid, &gid) == 0 else { return nil }
    return PeerCredentials(pid: pid, uid: uid, gid: gid)
}

/// A line server on a Unix stream socket: one request line and one reply line per connection. Non-blocking, driven
/// by the caller's poll loop. It serves a build's control socket (in the private directory, mode 0600, its owner
/// only) and `jobgov daemon`'s socket (reachable by a group, every request known by its sender's credentials).
/// Nothing a client does can stall it: requests past `maximumRequestBytes`, connections past
/// `maximumConnections` and connections idle for `idleSeconds` are answered with an error or dropped, and replies
/// are sent without waiting (a client that never reads loses its reply, not the server's time).
public final class ControlServer {
    public struct Limits: Sendable {
        public var maximumConnections = 64
        public var maximumRequestBytes = 4096
        public var idleSeconds = 5.0
        public init(maximumConnections: Int = 64, maximumRequestBytes: Int = 4096, idleSeconds: Double = 5.0) {
            self.maximumConnections = maximumConnections
            self.maximumRequestBytes = maximumRequestBytes
            self.idleSeconds = idleSeconds
        }
    }

    private struct Connection {
        var buffer: [UInt8] = []
        var peer: PeerCredentials
        var openedAt: Double
    }

    public let path: String
    public let listener: FileDescriptor
    public let limits: Limits
    /// Who may talk to the server, besides what the socket file's mode already allows.
    private let admits: (PeerCredentials) -> Bool
    /// Open connections by raw descriptor (what poll(2) reports back).
    private var connections: [Int32: Connection] = [:]
    /// Connections whose reply is put off.
    private var waiting: Set<Int32> = []
    /// Connections turned away (over the limit or not admitted), for tests and the daemon's log.
    public private(set) var refused = 0
    /// Whether `close` removes the socket file: not a socket systemd made, which outlives this process.
    private let ownsPath: Bool

    /// A build's control socket: mode 0600, its owner (or root) only.
    public convenience init(path: String) throws(SystemError) {
        let owner = UInt32(getuid())
        try self.init(path: path, mode: 0o600, limits: Limits()) { $0.uid == owner || $0.isRoot }
    }

    /// - Parameters:
    ///   - mode: the socket file's mode; `group`, when given, its group (chown), so that the group's members can
    ///     connect.
    ///   - admits: checked on every connection with the kernel's credentials of the peer.
    public init(path: String, mode: mode_t, group: gid_t? = nil, limits: Limits,
                admits: @escaping (PeerCredentials) -> Bool) throws(SystemError) {
        self.path = path
        self.limits = limits
        self.admits = admits
        ownsPath = true
        var address = try makeUnixAddress(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw SystemError("cannot create the socket", path: path) }
        // No umask juggling (it is process-wide): the directory is reachable only by those the socket is for, so
        // nobody else can reach the socket in the moment before chmod sets its mode.
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0, group.map({ chown(path, getuid(), $0) == 0 }) ?? true, chmod(path, mode) == 0,
              listen(fd, 64) == 0 else {
            let e = SystemError("cannot listen on the socket", path: path)
            Glibc.close(fd)
            throw e
        }
        listener = FileDescriptor(rawValue: fd)
    }

    /// A socket systemd already bound and listens on (socket activation): its file, mode and group are the socket
    /// unit's, and it stays when the server closes.
    public init(listening fd: Int32, path: String, limits: Limits,
                admits: @escaping (PeerCredentials) -> Bool) throws(SystemError) {
        var accepting: Int32 = 0
        var size = socklen_t(MemoryLayout<Int32>.size)
        let rc = getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &size)
        guard rc == 0, accepting == 1 else {
            throw SystemError("systemd handed over descriptor \(fd), which is not a listening socket, for", path: path,
                              errno: rc == 0 ? EINVAL : errno,
                              hint: "the socket unit needs ListenStream=\(path) (examples/systemd/jobgov.socket)")
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        self.path = path
        self.limits = limits
        self.admits = admits
        ownsPath = false
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
        handleReadableLine(fd) { connection, _, line in respond(connection, ControlRequest.parse(line)) }
    }

    /// Handles whatever is ready on `fd`, for any line protocol: `respond` gets the connection, the sender's
    /// credentials and the request line, and returns the reply line (nil: later, with `reply(_:to:)`).
    public func handleReadableLine(_ fd: Int32, now: Double = monotonicSeconds(),
                                   respond: (Int32, PeerCredentials, String) -> String?) {
        if fd == listener.rawValue {
            accept(now: now)
            return
        }
        guard var connection = connections[fd] else { return }
        var chunk = [UInt8](repeating: 0, count: 1024)
        let n = chunk.withUnsafeMutableBytes { raw in retryingInterrupts { read(fd, raw.baseAddress, raw.count) } }
        if n < 0 && errno == EAGAIN { return }
        if n <= 0 {
            finish(fd, connection, respond: respond)
            return
        }
        connection.buffer.append(contentsOf: chunk[0..<n])
        if connection.buffer.contains(UInt8(ascii: "\n")) {
            finish(fd, connection, respond: respond)
        } else if connection.buffer.count > limits.maximumRequestBytes {
            connections[fd] = nil
            send("error request longer than \(limits.maximumRequestBytes) bytes", on: fd)
            Glibc.close(fd)
        } else {
            connections[fd] = connection
        }
    }

    /// Takes every pending connection: admitted ones are read from, the rest closed at once (so that a flood
    /// empties the backlog instead of filling it). At the limit, the connection open longest without a whole
    /// request makes room: a client that holds connections open cannot lock out one that sends its request.
    private func accept(now: Double) {
        while true {
            let conn = jobgov_accept_nonblocking(listener.rawValue)
            if conn < 0 { break }
            guard let peer = peerCredentials(conn), admits(peer) else {
                refused += 1
                Glibc.close(conn)
                continue
            }
            if connections.count + waiting.count >= limits.maximumConnections {
                guard let oldest = connections.min(by: { ($0.value.openedAt, $0.key) < ($1.value.openedAt, $1.key) }) else {
                    refused += 1
                    Glibc.close(conn)
                    continue
                }
                connections[oldest.key] = nil
                Glibc.close(oldest.key)
                refused += 1
            }
            connections[conn] = Connection(peer: peer, openedAt: now)
        }
    }

    /// Closes connections that sent no whole request within `idleSeconds`; returns how many.
    @discardableResult
    public func dropIdle(now: Double = monotonicSeconds()) -> Int {
        let idle = connections.filter { now - $0.value.openedAt > limits.idleSeconds }.map(\.key)
        for fd in idle {
            connections[fd] = nil
            Glibc.close(fd)
        }
        return idle.count
    }

    private func finish(_ fd: Int32, _ connection: Connection, respond: (Int32, PeerCredentials, String) -> String?) {
        connections[fd] = nil
        let line = String(decoding: connection.buffer.prefix(while: { $0 != UInt8(ascii: "\n") }), as: UTF8.self)
        if !line.isEmpty {
            guard let text = respond(fd, connection.peer, line) else {
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

    /// Non-blocking (accepted sockets are): what does not fit the socket's buffer is lost with the connection.
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
        if ownsPath { unlink(path) }
    }
}

/// The client side, used by `jobgov ctl` and `jobgov daemon --status`.
public enum ControlClient {
    /// Sends one request and returns the reply line.
    public static func send(_ request: ControlRequest, to path: String, timeoutMilliseconds: Int32 = 5000) throws(SystemError) -> String {
        try sendLine(request.line, to: path, timeoutMilliseconds: timeoutMilliseconds,
                     unreachableHint: "is the build still running?")
    }

    /// Sends one line and returns the reply line, within `timeoutMilliseconds` for the reply. The connection itself
    /// never waits: a server whose backlog is full counts as unreachable.
    public static func sendLine(_ text: String, to path: String, timeoutMilliseconds: Int32 = 5000,
                                unreachableHint: String) throws(SystemError) -> String {
        guard let exchange = try LineExchange(path: path, line: text) else {
            throw SystemError("cannot reach jobgov at", path: path, hint: unreachableHint)
        }
        defer { exchange.close() }
        let deadline = monotonicSeconds() + Double(timeoutMilliseconds) / 1000
        while true {
            var pfd = pollfd(fd: exchange.fd, events: Int16(POLLIN), revents: 0)
            let left = Int32(max(0, (deadline - monotonicSeconds()) * 1000))
            let ready = retryingInterrupts { poll(&pfd, 1, left) }
            guard ready > 0 else { throw SystemError("no reply from jobgov at", path: path, errno: ETIMEDOUT) }
            switch exchange.receive() {
            case .waiting: continue
            case .reply(let line): return line
            case .closed: return ""
            }
        }
    }
}

/// One request line sent on a fresh non-blocking connection, and its reply read as it comes: what a build does
/// with `jobgov daemon` from inside its event loop, which must never wait for the daemon.
public final class LineExchange {
    public enum Progress: Equatable { case waiting, reply(String), closed }
    /// Raw: it goes into a pollfd array.
    public let fd: Int32
    private var received: [UInt8] = []
    private var open = true

    /// Connects and sends `line`; nil when nobody listens at `path` (no such file, refused, or a full backlog:
    /// all known at once, without waiting).
    public init?(path: String, line: String) throws(SystemError) {
        var address = try makeUnixAddress(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw SystemError("cannot create a socket") }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        let bytes = Array((line + "\n").utf8)
        // A request is far smaller than a fresh socket's buffer: it goes out whole or not at all.
        guard rc == 0, bytes.withUnsafeBytes({ raw in
            retryingInterrupts { Glibc.send(fd, raw.baseAddress, raw.count, Int32(MSG_NOSIGNAL)) }
        }) == bytes.count else {
            Glibc.close(fd)
            return nil
        }
        self.fd = fd
    }

    /// Reads what is there: the reply once its line is whole.
    public func receive() -> Progress {
        guard open else { return .closed }
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { raw in retryingInterrupts { read(fd, raw.baseAddress, raw.count) } }
            if n < 0 && errno == EAGAIN { return .waiting }
            if n <= 0 {
                let line = String(decoding: received, as: UTF8.self)
                return line.isEmpty ? .closed : .reply(line)
            }
            received.append(contentsOf: chunk[0..<n])
            if let end = received.firstIndex(of: UInt8(ascii: "\n")) {
                return .reply(String(decoding: received[..<end], as: UTF8.self))
            }
            if received.count > 1 << 20 { return .closed }
        }
    }

    public func close() {
        guard open else { return }
        open = false
        Glibc.close(fd)
    }

    deinit { close() }
}
