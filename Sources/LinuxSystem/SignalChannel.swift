#if canImport(Glibc)
import Glibc
#endif
import CJobgovShims
import SystemPackage

/// Delivers signals as readable events on a descriptor (signalfd), so the supervisor's single poll loop sees
/// SIGCHLD, SIGINT and friends in order, with the sender's details, and no handler runs at an awkward moment.
public final class SignalChannel {
    public let fd: FileDescriptor
    public let signals: [Int32]
    private var previousMask = sigset_t()

    public struct Delivery: Sendable {
        public var signal: Int32
        /// The kernel sent it (for instance the terminal's Ctrl-C to the whole foreground group), not a process.
        public var fromKernel: Bool
        public var senderPID: Int32
    }

    public init(signals: [Int32]) throws(SystemError) {
        self.signals = signals
        var mask = sigset_t()
        sigemptyset(&mask)
        for sig in signals { sigaddset(&mask, sig) }
        guard pthread_sigmask(SIG_BLOCK, &mask, &previousMask) == 0 else { throw SystemError("cannot block signals") }
        let fd = signalfd(-1, &mask, Int32(SFD_NONBLOCK | SFD_CLOEXEC))
        guard fd >= 0 else { throw SystemError("cannot create a signalfd") }
        self.fd = FileDescriptor(rawValue: fd)
    }

    /// Reads every pending signal.
    public func drain() -> [Delivery] {
        var out: [Delivery] = []
        var info = signalfd_siginfo()
        while true {
            // Non-blocking: EAGAIN (thrown) ends the loop once nothing is pending.
            let n = withUnsafeMutableBytes(of: &info) { raw in try? fd.read(into: raw) }
            guard n == MemoryLayout<signalfd_siginfo>.size else { break }
            out.append(Delivery(signal: Int32(info.ssi_signo), fromKernel: info.ssi_code == jobgov_si_kernel,
                                senderPID: Int32(bitPattern: info.ssi_pid)))
        }
        return out
    }

    deinit {
        try? fd.close()
        pthread_sigmask(SIG_SETMASK, &previousMask, nil)
    }
}

/// Reaps every exited child without blocking. jobgov is a child subreaper, so orphans of a build tool that died
/// are re-parented to it and must be reaped here too.
public func reapExitedChildren() -> [(pid: pid_t, status: Int32)] {
    var reaped: [(pid_t, Int32)] = []
    while true {
        var status: Int32 = 0
        let pid = retryingInterrupts { waitpid(-1, &status, WNOHANG) }
        if pid <= 0 { break }
        reaped.append((pid, status))
    }
    return reaped
}

/// Marks this process as a child subreaper (see `reapExitedChildren`).
public func becomeChildSubreaper() throws(SystemError) {
    guard jobgov_set_child_subreaper() == 0 else { throw SystemError("cannot become a child subreaper") }
}
