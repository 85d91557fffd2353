/// One cgroup, as its directory in each hierarchy this machine has (absolute paths such as `/sys/fs/cgroup/...`):
/// the v2 one (PSI, freeze, kill, `cgroup.events`, and on pure v2 every controller) and, on hybrid and v1 machines,
/// the v1 controllers' ones for what v2 lacks there. The build's cgroup, a job's leaf, what the sensors read and
/// what the watchdog restores are all this one type, with these names.
public struct CgroupDirectories: Sendable, Equatable {
    /// The directory in the v2 (unified) hierarchy.
    public var unified: String?
    /// The v1 memory controller's directory; preferred over v2 for memory where both are set (hybrid).
    public var memory: String?
    /// The v1 cpu controller's directory (CPU limits).
    public var cpu: String?
    /// The v1 cpuacct controller's directory (CPU use); preferred over v2 for CPU use where both are set.
    public var cpuacct: String?
    /// The v1 freezer controller's directory (v1 only: hybrid machines freeze through v2).
    public var freezer: String?

    public init(unified: String? = nil, memory: String? = nil, cpu: String? = nil, cpuacct: String? = nil,
                freezer: String? = nil) {
        self.unified = unified
        self.memory = memory
        self.cpu = cpu
        self.cpuacct = cpuacct
        self.freezer = freezer
    }

    /// Every directory, v2 first, each once (cpu and cpuacct are often one co-mounted hierarchy).
    public var all: [String] {
        var out: [String] = []
        for dir in [unified, memory, cpu, cpuacct, freezer].compactMap({ $0 }) where !out.contains(dir) {
            out.append(dir)
        }
        return out
    }

    public var isEmpty: Bool { all.isEmpty }

    /// The cgroup named `name` below this one, in every hierarchy this one is in.
    public func child(_ name: String) -> CgroupDirectories {
        func below(_ dir: String?) -> String? { dir.map { joinPath($0, name) } }
        return CgroupDirectories(unified: below(unified), memory: below(memory), cpu: below(cpu),
                                 cpuacct: below(cpuacct), freezer: below(freezer))
    }

    /// Only the hierarchy that freezes: v2's `cgroup.freeze` where there is a v2 directory, else the v1 freezer.
    public var freezing: CgroupDirectories {
        unified != nil ? CgroupDirectories(unified: unified) : CgroupDirectories(freezer: freezer)
    }
}
