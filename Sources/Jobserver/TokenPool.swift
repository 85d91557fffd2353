#if canImport(Glibc)
import Glibc
#endif
import CJobgovShims
import JobgovCore
import LinuxSystem

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
    /// jobgov's own ends, close-on-exec.
    public let readFD: Int32
    public let writeFD: Int32
    /// The pair handed to pipe-style clients, inherited across exec; nil until `openClientPipeEnds()`.
    public private(set) var clientFDs: (read: Int32, write: Int32)?
    private var closed = false

    public init(fifoPath: String) throws(SystemError) {
        self.fifoPath = fifoPath
        guard mkfifo(fifoPath, 0o600) == 0 else {
            throw SystemError("cannot create the jobserver FIFO", path: fifoPath)
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
        readFD = r
        writeFD = w
    }

    /// Opens blocking, inheritable `R,W` descriptors on the FIFO for pipe-style clients.
    public func openClientPipeEnds() throws(SystemError) -> (read: Int32, write: Int32) {
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
        clientFDs = (r, w)
        return (r, w)
    }

    /// Bytes (tokens) waiting in the FIFO now.
    public func tokensInPool() -> Int {
        let n = jobgov_bytes_readable(readFD)
        return n < 0 ? 0 : Int(n)
    }

    /// Writes `count` tokens; returns how many went in (fewer only if the FIFO is full).
    @discardableResult
    public func add(_ count: Int) -> Int {
        guard count > 0 else { return 0 }
        let bytes = [UInt8](repeating: UInt8(ascii: "+"), count: count)
        var written = 0
        while written < count {
            let n = bytes.withUnsafeBytes { raw in
                retryingInterrupts { write(writeFD, raw.baseAddress! + written, count - written) }
            }
            if n <= 0 { break }  // EAGAIN: full
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
            let n = buffer.withUnsafeMutableBytes { raw in retryingInterrupts { read(readFD, raw.baseAddress, want) } }
            if n <= 0 { break }
            taken += n
        }
        return taken
    }

    /// Closes jobgov's ends (and the client pair) and removes the FIFO.
    public func close() {
        guard !closed else { return }
        closed = true
        if let clientFDs {
            Glibc.close(clientFDs.read)
            Glibc.close(clientFDs.write)
        }
        Glibc.close(writeFD)
        Glibc.close(readFD)
        unlink(fifoPath)
    }

    /// The pipe-style pair is only needed by the build; once it is started jobgov closes its copies.
    public func closeClientPipeEndsInParent() {
        if let clientFDs {
            Glibc.close(clientFDs.read)
            Glibc.close(clientFDs.write)
            self.clientFDs = nil
        }
    }

    deinit { close() }
}
