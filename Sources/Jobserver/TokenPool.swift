#if canImport(Glibc)
import Glibc
#endif
import CJobgovShims
import JobgovCore
import LinuxSystem
import SystemPackage

/// The jobserver's token pool: a named FIFO that jobgov keeps open for the whole build.
///
/// - jobgov's own ends are opened separately (read end first, non-blocking, then the write end) so that the
///   buffered tokens never vanish and no client's O_NONBLOCK can change them: each open() of a FIFO is its own
///   file description.
/// - Clients that need `R,W` (make 4.3, GCC 12 LTO) get a second pair opened on the same FIFO, so old and new
///   clients draw from one pool.
/// - Any byte is a token: make writes back `+` whatever it read, ninja echoes the byte.
public final class TokenPool {
    public let fifoPath: String
    /// jobgov's own ends, close-on-exec, non-blocking.
    public let reader: FileDescriptor
    public let writer: FileDescriptor
    /// The pair handed to pipe-style clients, inherited across exec; nil until `openClientPipeEnds()`.
    public private(set) var clientFDs: (read: FileDescriptor, write: FileDescriptor)?
    private var closed = false

    /// - Parameters:
    ///   - mode, group: who may use the pool: its owner by default; `jobgov daemon`'s pool is for a group too.
    public init(fifoPath: String, mode: mode_t = 0o600, group: gid_t? = nil) throws(SystemError) {
        self.fifoPath = fifoPath
        guard mkfifo(fifoPath, 0o600) == 0 else {
            throw SystemError("cannot create the jobserver FIFO", path: fifoPath)
        }
        guard group.map({ chown(fifoPath, getuid(), $0) == 0 }) ?? true, chmod(fifoPath, mode) == 0 else {
            let e = SystemError("cannot set who may use the jobserver FIFO", path: fifoPath)
            unlink(fifoPath)
            throw e
        }
        let r = retryingInterrupts { open(fifoPath, O_RDONLY | O_NONBLOCK | O_CLOEXEC) }
        guard r >= 0 else {
            let e = SystemError("cannot open the jobserver FIFO", path: fifoPath)
            unlink(fifoPath)
            throw e
        }
        let w = retryingInterrupts { open(fifoPath, O_WRONLY | O_NONBLOCK | O_CLOEXEC) }
        guard w >= 0 else {
            let e = SystemError("cannot open the jobserver FIFO for writing", path: fifoPath)
            Glibc.close(r)
            unlink(fifoPath)
            throw e
        }
        reader = FileDescriptor(rawValue: r)
        writer = FileDescriptor(rawValue: w)
    }

    /// Opens blocking, inheritable `R,W` descriptors on the FIFO for pipe-style clients.
    public func openClientPipeEnds() throws(SystemError) -> (read: FileDescriptor, write: FileDescriptor) {
        if let clientFDs { return clientFDs }
        // Open non-blocking (a FIFO open for reading must not wait), then make it blocking as make 4.3 expects.
        let r = retryingInterrupts { open(fifoPath, O_RDONLY | O_NONBLOCK) }
        guard r >= 0 else { throw SystemError("cannot open the jobserver FIFO", path: fifoPath) }
        let flags = fcntl(r, F_GETFL)
        _ = fcntl(r, F_SETFL, flags & ~O_NONBLOCK)
        let w = retryingInterrupts { open(fifoPath, O_WRONLY) }
        guard w >= 0 else {
            Glibc.close(r)
            throw SystemError("cannot open the jobserver FIFO for writing", path: fifoPath)
        }
        let ends = (read: FileDescriptor(rawValue: r), write: FileDescriptor(rawValue: w))
        clientFDs = ends
        return ends
    }

    /// Bytes (tokens) waiting in the FIFO now.
    public func tokensInPool() -> Int {
        let n = jobgov_bytes_readable(reader.rawValue)
        return n < 0 ? 0 : Int(n)
    }

    /// Writes `count` tokens; returns how many went in (fewer only if the FIFO is full).
    @discardableResult
    public func add(_ count: Int) -> Int {
        guard count > 0 else { return 0 }
        let bytes = [UInt8](repeating: UInt8(ascii: "+"), count: count)
        var written = 0
        while written < count {
            // EAGAIN (thrown) means the FIFO is full.
            let n = bytes.withUnsafeBytes { raw in
                try? writer.write(UnsafeRawBufferPointer(rebasing: raw[written...]))
            }
            guard let n, n > 0 else { break }
            written += n
        }
        return written
    }

    /// Reads up to `count` tokens without waiting; returns how many it got. EAGAIN means a client got there
    /// first, which is fine: it will give the token back later.
    public func take(upTo count: Int) -> Int {
        guard count > 0 else { return 0 }
        var buffer = [UInt8](repeating: 0, count: min(count, 4096))
        var taken = 0
        while taken < count {
            let want = min(count - taken, buffer.count)
            // EAGAIN (thrown): the pool is empty.
            let n = buffer.withUnsafeMutableBytes { raw in
                try? reader.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[..<want]))
            }
            guard let n, n > 0 else { break }
            taken += n
        }
        return taken
    }

    /// Closes jobgov's ends (and the client pair) and removes the FIFO.
    public func close() {
        guard !closed else { return }
        closed = true
        if let clientFDs {
            try? clientFDs.read.close()
            try? clientFDs.write.close()
        }
        try? writer.close()
        try? reader.close()
        unlink(fifoPath)
    }

    /// The pipe-style pair is only needed by the build; once it is started jobgov closes its copies.
    public func closeClientPipeEndsInParent() {
        if let clientFDs {
            try? clientFDs.read.close()
            try? clientFDs.write.close()
            self.clientFDs = nil
        }
    }

    deinit { close() }
}
