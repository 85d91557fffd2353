import CJobgovBPF
import CLibbpf

/// A map of bpf/jobgov.bpf.c, by its name there, with the Swift types of its key and value: the imports of the C
/// types it declares (`__type(key, ...)`, `__type(value, ...)`). `ProbeLayout.mismatches()` compares their sizes
/// with the compiled object's, and a test fails when they differ.
struct ProbeMap<Key, Value>: Sendable {
    let name: String

    var keySize: Int { MemoryLayout<Key>.size }
    var valueSize: Int { MemoryLayout<Value>.size }
}

/// The maps user space reads or writes.
enum ProbeMaps {
    static let config = ProbeMap<UInt32, jg_config>(name: "jg_config")
    /// A cgroup array: the value written is a descriptor of the build's cgroup directory.
    static let cgroup = ProbeMap<UInt32, UInt32>(name: "jg_cgroup")
    static let procs = ProbeMap<UInt32, jg_proc>(name: "jg_procs")
    /// Processes the exec gate stopped (pid → when, which job).
    static let gated = ProbeMap<UInt32, jg_gated>(name: "jg_gated")
    /// Jobs the exec gate admitted (their root's pid; the value is unused).
    static let admitted = ProbeMap<UInt32, UInt8>(name: "jg_admitted")
    /// `enum jg_histogram` × `JG_HIST_SLOTS` counts.
    static let histograms = ProbeMap<UInt32, UInt64>(name: "jg_hist")
    /// Indexed by `enum jg_counter`.
    static let counters = ProbeMap<UInt32, UInt64>(name: "jg_counters")

    /// Name, key size and value size of each, for the layout check.
    static var all: [(name: String, keySize: Int, valueSize: Int)] {
        func row<K, V>(_ m: ProbeMap<K, V>) -> (String, Int, Int) { (m.name, m.keySize, m.valueSize) }
        return [row(config), row(cgroup), row(procs), row(gated), row(admitted), row(histograms),
                row(counters)]
    }
}

/// A map of the loaded object, by its descriptor (owned by the object: closing the object closes it).
struct OpenMap<Key: FixedWidthInteger, Value> {
    let fd: Int32

    init?(_ map: ProbeMap<Key, Value>, in object: OpaquePointer) {
        guard let m = bpf_object__find_map_by_name(object, map.name) else { return nil }
        fd = bpf_map__fd(m)
        guard fd >= 0 else { return nil }
    }

    func lookup(_ key: Key) -> Value? {
        var k = key
        return withUnsafeTemporaryAllocation(
            byteCount: MemoryLayout<Value>.size, alignment: MemoryLayout<Value>.alignment
        ) { raw in
            bpf_map_lookup_elem(fd, &k, raw.baseAddress) == 0 ? raw.load(as: Value.self) : nil
        }
    }

    @discardableResult
    func update(_ key: Key, _ value: Value) -> Bool {
        var k = key
        var v = value
        return bpf_map_update_elem(fd, &k, &v, UInt64(BPF_ANY)) == 0
    }

    @discardableResult
    func delete(_ key: Key) -> Bool {
        var k = key
        return bpf_map_delete_elem(fd, &k) == 0
    }

    func keys() -> [Key] {
        var out: [Key] = []
        var next: Key = 0
        var ok = bpf_map_get_next_key(fd, nil, &next) == 0
        while ok {
            out.append(next)
            var current = next
            ok = bpf_map_get_next_key(fd, &current, &next) == 0
        }
        return out
    }
}

/// The maps of one loaded object (none before loading and after closing).
struct LoadedMaps {
    var config: OpenMap<UInt32, jg_config>?
    var cgroup: OpenMap<UInt32, UInt32>?
    var procs: OpenMap<UInt32, jg_proc>?
    var gated: OpenMap<UInt32, jg_gated>?
    var admitted: OpenMap<UInt32, UInt8>?
    var histograms: OpenMap<UInt32, UInt64>?
    var counters: OpenMap<UInt32, UInt64>?

    init() {}

    init(_ object: OpaquePointer) {
        config = OpenMap(ProbeMaps.config, in: object)
        cgroup = OpenMap(ProbeMaps.cgroup, in: object)
        procs = OpenMap(ProbeMaps.procs, in: object)
        gated = OpenMap(ProbeMaps.gated, in: object)
        admitted = OpenMap(ProbeMaps.admitted, in: object)
        histograms = OpenMap(ProbeMaps.histograms, in: object)
        counters = OpenMap(ProbeMaps.counters, in: object)
    }
}
