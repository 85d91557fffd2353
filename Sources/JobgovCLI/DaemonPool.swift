#if canImport(Glibc)
import Glibc
#endif
import JobgovCore
import Jobserver
import LinuxSystem

/// `jobgov daemon`'s pool of tokens for plain clients: a build started without jobgov joins it with
/// `MAKEFLAGS=--jobserver-auth=fifo:PATH` (make 4.4+, ninja 1.13, cargo, GCC 13+), as with steve. It holds `size`
/// tokens; each client also runs one job on its own implicit slot. Tokens taken by a client that died without giving
/// them back are re-created: every half second every process's descriptors are compared with the tokens out
/// (`sharedPoolHoldingBound`), and a deficit seen three times running is written back.
final class DaemonPool {
    let pool: TokenPool
    let size: Int
    private var detector = LostTokenDetector()
    private let tree = ProcessTree()
    private(set) var recreated = 0

    init(path: String, size: Int, group: gid_t?) throws {
        if access(path, F_OK) == 0 { unlink(path) }
        pool = try TokenPool(fifoPath: path, mode: group == nil ? 0o600 : 0o660, group: group)
        self.size = size
        pool.add(size)
    }

    var path: String { pool.fifoPath }
    var free: Int { pool.tokensInPool() }

    /// One look for lost tokens; returns how many were re-created.
    func recoverLostTokens() -> Int {
        let outstanding = size - pool.tokensInPool()
        guard outstanding > 0 else {
            _ = detector.observe(outstanding: 0, bound: 0)
            return 0
        }
        let bound = sharedPoolHoldingBound(processes: tree.snapshot(below: 1, poolPath: pool.fifoPath))
        let lost = detector.observe(outstanding: outstanding, bound: bound)
        guard lost > 0 else { return 0 }
        let written = pool.add(lost)
        recreated += written
        return written
    }

    func close() { pool.close() }
}
