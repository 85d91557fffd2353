/// How a process ended, decoded from a wait status (what waitpid(2) fills in, the kernel's `task->exit_code`, and
/// what jobgov-shell passes on in `rerun PID STATUS`): the exit code in bits 8-15, or the signal in bits 0-6 with
/// bit 7 set when it dumped core. 0x7f in the low bits marks a stopped or continued process, which has not ended.
public enum ExitStatus: Equatable, Sendable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)

    /// nil for a status that is not an end (stopped or continued).
    public init?(waitStatus: Int32) {
        let low = waitStatus & 0x7f
        if low == 0 {
            self = .exited((waitStatus >> 8) & 0xff)
        } else if low != 0x7f {
            self = .signaled(low)
        } else {
            return nil
        }
    }

    public init?(waitStatus: UInt32) { self.init(waitStatus: Int32(bitPattern: waitStatus)) }

    /// The wait status that decodes to this one (without the core-dump bit).
    public var waitStatus: Int32 {
        switch self {
        case .exited(let code): return (code & 0xff) << 8
        case .signaled(let signal): return signal & 0x7f
        }
    }

    /// The status a shell reports: the exit code, or 128+N when signal N ended the process.
    public var shellStatus: Int32 {
        switch self {
        case .exited(let code): return code
        case .signaled(let signal): return 128 + signal
        }
    }

    /// Ended by SIGKILL, as the OOM killer ends a process (signal 9 on every Linux architecture).
    public var wasKilled: Bool { self == .signaled(9) }

    public var description: String {
        switch self {
        case .exited(let code): "exit \(code)"
        case .signaled(let signal): "signal \(signal)"
        }
    }
}
