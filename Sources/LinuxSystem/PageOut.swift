#if canImport(Glibc)
import Glibc
#endif
import CJobgovShims

/// Pages a (frozen) process's private memory out to swap with process_madvise(MADV_PAGEOUT), so the RAM it held
/// goes back to the jobs still running; thawed, the process takes its pages back on demand, one fault at a time.
///
/// The kernel does the reclaim synchronously, in the caller's thread: the compression's CPU time is jobgov's, and
/// with zram the RSS has dropped when the call returns. MADV_PAGEOUT ignores vm.swappiness and the cgroup's
/// memory.swappiness (it reclaims exactly the pages named), so both can be 0 to keep ordinary reclaim away from
/// swap while this still works. Pages shared with another process (mapped by more than one) are left alone.
///
/// Needs CAP_SYS_NICE to advise another process, and ptrace-read access to it (PTRACE_MODE_READ: same user, or
/// CAP_SYS_PTRACE): in practice root. Without swap the call is harmless: anonymous pages have nowhere to go and
/// stay; only clean private file pages are dropped (and read again from the file when needed).
public enum PageOut {
    /// One mapping asked to be paged out.
    public struct Range: Equatable, Sendable {
        public var start: UInt64
        public var length: UInt64
        public init(start: UInt64, length: UInt64) {
            self.start = start
            self.length = length
        }
    }

    /// A mapping the kernel refused, with why (EINVAL: locked with mlock, a huge-page or PFN mapping).
    public struct Refusal: Equatable, Sendable {
        public var range: Range
        public var errno: Int32
    }

    /// What a page-out did.
    public struct Result: Sendable {
        public var pid: Int32
        /// The private writable mappings asked for, and their total size.
        public var ranges: Int = 0
        public var requestedBytes: UInt64 = 0
        /// What the kernel says it went over (the whole of every range it accepted, resident or not).
        public var advisedBytes: UInt64 = 0
        /// Ranges the kernel refused; the others were still paged out.
        public var refused: [Refusal] = []
        /// From /proc/PID/status before and after (VmRSS, VmSwap), nil when the process is gone.
        public var residentBefore: UInt64?
        public var residentAfter: UInt64?
        public var swapBefore: UInt64?
        public var swapAfter: UInt64?
        /// Seconds spent in process_madvise.
        public var seconds: Double = 0
        /// Whether any swap area had room when the page-out started.
        public var swapAvailable = false
        /// It was asked to stop (the job was thawed) before it was done.
        public var stopped = false
        /// The failure that stopped the whole page-out (ESRCH: the process is gone; EPERM: no CAP_SYS_NICE or no
        /// ptrace access), nil when it ran.
        public var error: SystemError?

        public init(pid: Int32) { self.pid = pid }

        /// RAM given back (the fall of VmRSS), 0 when unknown.
        public var freedBytes: UInt64 {
            guard let b = residentBefore, let a = residentAfter, b > a else { return 0 }
            return b - a
        }

        /// One line for a person: what happened, and why nothing did when nothing did.
        public var summary: String {
            if let error { return "page-out of \(pid): \(error)" }
            var s = "page-out of \(pid): \(freedBytes >> 20) MiB of \((residentBefore ?? 0) >> 20) MiB resident freed in \(Int(seconds * 1000)) ms"
            if !swapAvailable { s += " (no swap with room: anonymous memory cannot be paged out, only clean file pages dropped)" }
            if !refused.isEmpty { s += "; \(refused.count) mappings refused" }
            return s
        }
    }

    /// Pages out every private writable mapping (heap, stack, anonymous mappings, written pages of private file
    /// mappings) of `pid`. Read-only and shared mappings are left alone: their pages are file cache that another
    /// process may be using, or that would only be read back. Meant for a stopped process (frozen or SIGSTOPped):
    /// a running one changes its mappings while they are read, and faults its pages straight back in.
    /// At most this much is advised in one call, so that a page-out asked to stop (`shouldStop`) stops soon: a
    /// compiler's heap is often a single mapping of hundreds of MiB, which one call would take seconds over.
    public static let batchBytes: UInt64 = 32 << 20

    /// - Parameter shouldStop: asked before each batch of `batchBytes`; true ends the page-out there (the job was
    ///   thawed: paging out a running job only makes it fault its pages back in).
    public static func process(pid: Int32, procRoot: String = "/proc",
                               shouldStop: () -> Bool = { false }) -> Result {
        var result = Result(pid: pid)
        result.swapAvailable = swapHasRoom(procRoot: procRoot)
        // The pidfd pins the process: if the pid is reused after the maps are read, the advice fails with ESRCH
        // instead of landing on a stranger.
        let pidfd = jobgov_pidfd_open(pid)
        guard pidfd >= 0 else {
            let e = errno
            result.error = SystemError("cannot open a pidfd for", path: String(pid), errno: e,
                                       hint: e == ESRCH ? "the process is gone" : e == ENOSYS ? "needs Linux 5.3" : nil)
            return result
        }
        defer { close(pidfd) }
        (result.residentBefore, result.swapBefore) = memory(pid: pid, procRoot: procRoot)
        guard let maps = readSmallFile("\(procRoot)/\(pid)/maps", limit: 64 << 20) else {
            result.error = SystemError("cannot read", path: "\(procRoot)/\(pid)/maps", errno: ESRCH, hint: "the process is gone")
            return result
        }
        let mappings = privateWritableRanges(maps: maps)
        result.ranges = mappings.count
        result.requestedBytes = mappings.reduce(0) { $0 + $1.length }
        let ranges = split(mappings, atMost: batchBytes)
        let started = monotonicSeconds()
        var next = 0
        while next < ranges.count {
            if shouldStop() {
                result.stopped = true
                break
            }
            var end = next
            var bytes: UInt64 = 0
            while end < ranges.count && end - next < Int(jobgov_iov_max)
                    && (end == next || bytes + ranges[end].length <= batchBytes) {
                bytes += ranges[end].length
                end += 1
            }
            let batch = Array(ranges[next..<end])
            let asked = batch.reduce(0) { $0 + $1.length }
            let n = advise(pidfd, batch)
            if n < 0 {
                let e = errno
                if e == ESRCH || e == EPERM || e == EACCES || e == ENOSYS {
                    result.error = SystemError("cannot page out the memory of", path: String(pid), errno: e, hint: hint(e))
                    break
                }
                // -1 means nothing was advised: the batch's first range was refused. Note it, go on after it.
                result.refused.append(Refusal(range: batch[0], errno: e))
                next += 1
                continue
            }
            result.advisedBytes += UInt64(n)
            if UInt64(n) == asked {
                next += batch.count
                continue
            }
            // The kernel stops at the first range it refuses and reports the bytes before it: find that range,
            // learn its error alone, and go on after it.
            var covered: UInt64 = 0
            var failed = 0
            while failed < batch.count && covered + batch[failed].length <= UInt64(n) {
                covered += batch[failed].length
                failed += 1
            }
            guard failed < batch.count else { next += batch.count; continue }
            let alone = advise(pidfd, [batch[failed]])
            if alone < 0 {
                result.refused.append(Refusal(range: batch[failed], errno: errno))
            } else {
                result.advisedBytes += UInt64(alone)
            }
            next += failed + 1
        }
        result.seconds = monotonicSeconds() - started
        (result.residentAfter, result.swapAfter) = memory(pid: pid, procRoot: procRoot)
        return result
    }

    /// The ranges cut into pieces of at most `limit` bytes, in order.
    public static func split(_ ranges: [Range], atMost limit: UInt64) -> [Range] {
        var out: [Range] = []
        for r in ranges {
            var start = r.start
            let end = r.start + r.length
            while start < end {
                let length = min(limit, end - start)
                out.append(Range(start: start, length: length))
                start += length
            }
        }
        return out
    }

    static func hint(_ e: Int32) -> String? {
        switch e {
        case ESRCH: return "the process is gone"
        case EPERM, EACCES: return "needs CAP_SYS_NICE and ptrace access to the process (root)"
        case ENOSYS: return "process_madvise needs Linux 5.10"
        case EINVAL: return "MADV_PAGEOUT needs Linux 5.4 and process_madvise accepting it (5.10)"
        default: return nil
        }
    }

    private static func advise(_ pidfd: Int32, _ ranges: [Range]) -> Int {
        var iov = ranges.map { iovec(iov_base: UnsafeMutableRawPointer(bitPattern: UInt($0.start)), iov_len: Int($0.length)) }
        return iov.withUnsafeMutableBufferPointer { buffer in
            retryingInterrupts {
                jobgov_process_madvise(pidfd, buffer.baseAddress, UInt(buffer.count), jobgov_madv_pageout)
            }
        }
    }

    /// The private writable mappings in /proc/PID/maps (`start-end perms offset dev inode [path]`): perms
    /// `rw?p`. The kernel's special mappings ([vvar], [vdso], [vsyscall]) are not writable and drop out.
    public static func privateWritableRanges(maps: String) -> [Range] {
        var out: [Range] = []
        for line in maps.split(separator: "\n") {
            let fields = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true)
            guard fields.count >= 2 else { continue }
            let perms = Array(fields[1].utf8)
            guard perms.count >= 4, perms[1] == UInt8(ascii: "w"), perms[3] == UInt8(ascii: "p") else { continue }
            let bounds = fields[0].split(separator: "-")
            guard bounds.count == 2, let start = UInt64(bounds[0], radix: 16), let end = UInt64(bounds[1], radix: 16),
                  end > start else { continue }
            out.append(Range(start: start, length: end - start))
        }
        return out
    }

    /// VmRSS and VmSwap in bytes, nil when the process is gone (or a kernel thread).
    public static func memory(pid: Int32, procRoot: String = "/proc") -> (resident: UInt64?, swap: UInt64?) {
        guard let status = readSmallFile("\(procRoot)/\(pid)/status") else { return (nil, nil) }
        func field(_ name: String) -> UInt64? {
            for line in status.split(separator: "\n") where line.hasPrefix(name + ":") {
                let digits = line.dropFirst(name.count + 1).split(whereSeparator: \.isWhitespace).first
                return digits.flatMap { UInt64($0) }.map { $0 << 10 }
            }
            return nil
        }
        return (field("VmRSS"), field("VmSwap"))
    }

    /// Whether any active swap area has a free page.
    public static func swapHasRoom(procRoot: String = "/proc") -> Bool {
        SwapState.parse(procSwaps: readSmallFile(procRoot + "/swaps") ?? "", zswapEnabled: nil).devices
            .contains { $0.usedBytes < $0.sizeBytes }
    }
}
