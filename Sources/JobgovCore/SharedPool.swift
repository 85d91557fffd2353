/// The most tokens the live clients of a machine-wide pool (`jobgov daemon --pool`) can hold, from a snapshot of
/// every process: as `tokenHoldingBound` for one build, except that there is no launched process. A client whose
/// parent is not a client is either a top-level one (a `make` a user started: its first job runs on its own
/// implicit slot, so it holds no token for it) or a nested one started by a recipe's shell (which runs on a token
/// of a client further up): only the latter adds one.
public func sharedPoolHoldingBound(processes: [BuildProcess]) -> Int {
    let byPID = Dictionary(processes.map { ($0.pid, $0) }, uniquingKeysWith: { a, _ in a })
    let clients = Set(processes.filter(\.holdsPool).map(\.pid))
    /// Some process above `pid` (beyond its parent) is a client.
    func underClient(_ pid: Int32) -> Bool {
        var seen: Set<Int32> = []
        var next = byPID[pid]?.parent
        while let p = next, p > 1, seen.insert(p).inserted {
            if clients.contains(p) { return true }
            next = byPID[p]?.parent
        }
        return false
    }
    var bound = 0
    for p in processes where p.holdsPool {
        bound += max(0, p.children - 1) + max(0, p.threads - 1)
        if !clients.contains(p.parent) && underClient(p.parent) { bound += 1 }
    }
    return bound
}
