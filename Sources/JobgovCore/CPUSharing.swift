/// How `jobgov daemon` divides the machine's CPUs between the builds that joined it, for each build's CPU rule
/// (see `GovernorSettings.cpuShare`). Pure: the daemon calls `divide` with every division of the memory budget.
///
/// Alone, a build's CPU rule holds its job count while the build keeps `--cpu-threshold` of all CPUs busy. Two
/// builds each using half the CPUs never reach that, so each would start jobs up to its ceiling on a machine whose
/// CPUs are already full, each job only taking memory. Under the daemon each build measures its CPU use against its
/// share instead.
///
/// The rule: the CPUs are shared in proportion to weight, no build getting more than it uses now plus one CPU
/// (room to grow into) while another build still has less than its part; what that leaves is shared by weight again,
/// up to all CPUs. So a build in a serial phase (a link, a configure step) leaves its CPUs to the others, and gets
/// them back as soon as it uses what it has. The shares add up to the CPUs.
public enum CPUSharing {
    public struct Claim: Sendable, Equatable {
        public var id: String
        public var weight: Int
        /// The CPUs the build used over its last interval; nil when it cannot tell (no cgroup of its own).
        public var used: Double?
        public init(id: String, weight: Int = 1, used: Double?) {
            self.id = id
            self.weight = max(1, weight)
            self.used = used.map { max(0, $0) }
        }
    }

    public static func divide(cpus: Double, claims: [Claim]) -> [String: Double] {
        var share: [String: Double] = [:]
        var left = max(0, cpus)
        // Water-filling by weight: each round gives every open build its weighted part of what is left, capped at
        // its limit; a build that reaches its limit frees the rest for the others.
        func waterFill(upTo limit: (Claim) -> Double) {
            var open = claims.filter { share[$0.id, default: 0] < limit($0) }
            while left > 1e-9, !open.isEmpty {
                let weights = Double(open.reduce(0) { $0 + $1.weight })
                let round = left
                for c in open {
                    let given = min(round * Double(c.weight) / weights, limit(c) - share[c.id, default: 0])
                    share[c.id, default: 0] += given
                    left -= given
                }
                open = open.filter { share[$0.id, default: 0] < limit($0) - 1e-9 }
            }
        }
        waterFill { min(cpus, ($0.used ?? cpus) + 1) }
        waterFill { _ in cpus }
        for c in claims where share[c.id] == nil { share[c.id] = 0 }
        return share
    }
}
