import CJobgovBPF
import CLibbpf
import JobgovCore

/// Checks the Swift side of bpf/jobgov_probes.h against the BPF object compiled from it. Both include the same
/// header, but clang compiles it for the BPF target and Swift's C importer for the host: a type whose size or
/// alignment differs between the two (a `long`, a packed field) would make them read each other's records and
/// map values wrongly. The object's BTF says how the BPF side laid out each struct and map.
public enum ProbeLayout {
    /// Each struct shared through the header: its name, Swift's size and Swift's offset of every field.
    static var structs: [(name: String, size: Int, fields: [(String, Int?)])] {
        func offsets<T>(_ type: T.Type, _ fields: [(String, PartialKeyPath<T>)]) -> [(String, Int?)] {
            fields.map { ($0.0, MemoryLayout<T>.offset(of: $0.1)) }
        }
        return [
            ("jg_event", MemoryLayout<jg_event>.size, offsets(jg_event.self, [
                ("kind", \.kind), ("pid", \.pid), ("ppid", \.ppid), ("aux", \.aux), ("time_ns", \.time_ns),
                ("value", \.value), ("comm", \.comm), ("args_len", \.args_len), ("reserved", \.reserved),
                ("args", \.args),
            ])),
            ("jg_load_settings", MemoryLayout<jg_load_settings>.size, offsets(jg_load_settings.self, [
                ("build_cgroup_id", \.build_cgroup_id), ("build_level", \.build_level), ("page_shift", \.page_shift),
            ])),
            ("jg_config", MemoryLayout<jg_config>.size, offsets(jg_config.self, [
                ("min_stall_ns", \.min_stall_ns), ("gate_on", \.gate_on), ("gate_supervisor", \.gate_supervisor),
                ("gate_tool", \.gate_tool), ("reserved", \.reserved), ("gate_credit", \.gate_credit),
                ("gate_resumed", \.gate_resumed),
            ])),
            ("jg_gated", MemoryLayout<jg_gated>.size, offsets(jg_gated.self, [
                ("since", \.since), ("job", \.job), ("reserved", \.reserved),
            ])),
            ("jg_proc", MemoryLayout<jg_proc>.size, offsets(jg_proc.self, [
                ("rss_file", \.rss_file), ("rss_anon", \.rss_anon), ("rss_shmem", \.rss_shmem),
                ("rss_peak", \.rss_peak), ("stall_ns", \.stall_ns), ("exited", \.exited), ("epoch", \.epoch),
                ("mm", \.mm), ("owner", \.owner),
            ])),
        ]
    }

    /// Where the two sides differ, one line each; empty when they agree. Opens the embedded object without
    /// loading it (no privilege needed).
    public static func mismatches() -> [String] {
        let bytes = UnsafeMutableRawBufferPointer.allocate(
            byteCount: EmbeddedHex.byteCount(jobgovBPFObjectHex), alignment: 16)
        defer { bytes.deallocate() }
        EmbeddedHex.decode(jobgovBPFObjectHex, into: bytes)
        guard let object = jg_open_object(bytes.baseAddress, bytes.count, "jobgov") else {
            return ["the embedded BPF object does not open"]
        }
        defer { bpf_object__close(object) }
        var out: [String] = []
        for map in ProbeMaps.all {
            guard let m = bpf_object__find_map_by_name(object, map.name) else {
                out.append("map \(map.name): not in the BPF object")
                continue
            }
            if Int(bpf_map__key_size(m)) != map.keySize || Int(bpf_map__value_size(m)) != map.valueSize {
                out.append("map \(map.name): BPF key/value \(bpf_map__key_size(m))/\(bpf_map__value_size(m)) bytes, "
                           + "Swift \(map.keySize)/\(map.valueSize)")
            }
        }
        guard let btf = bpf_object__btf(object) else { return out + ["the BPF object has no BTF"] }
        for s in structs {
            let id = btf__find_by_name_kind(btf, s.name, UInt32(BTF_KIND_STRUCT))
            guard id > 0, let type = btf__type_by_id(btf, UInt32(id)) else {
                out.append("struct \(s.name): not in the BPF object's BTF")
                continue
            }
            if Int(type.pointee.size) != s.size {
                out.append("struct \(s.name): \(type.pointee.size) bytes in BPF, \(s.size) in Swift")
            }
            var bpfOffsets: [String: Int] = [:]
            let members = btf_members(type)
            for i in 0..<Int(btf_vlen(type)) {
                let name = String(cString: btf__name_by_offset(btf, members![i].name_off))
                bpfOffsets[name] = Int(btf_member_bit_offset(type, UInt32(i))) / 8
            }
            for (field, offset) in s.fields where bpfOffsets[field] != offset {
                out.append("struct \(s.name).\(field): offset \(bpfOffsets[field].map(String.init) ?? "none") in BPF, "
                           + "\(offset.map(String.init) ?? "none") in Swift")
            }
            let unchecked = Set(bpfOffsets.keys).subtracting(s.fields.map(\.0))
            if !unchecked.isEmpty {
                out.append("struct \(s.name): fields \(unchecked.sorted().joined(separator: ", ")) not checked here")
            }
        }
        var settings = jg_load_settings()
        settings.build_cgroup_id = 0x1122_3344_5566_7788
        if !setReadOnly("jg_load", to: settings, in: object) {
            out.append("jg_load: no read-only global of \(MemoryLayout<jg_load_settings>.size) bytes to set")
        }
        return out
    }

    /// Writes `value` into the read-only global `name` (`const volatile` in bpf/jobgov.bpf.c) of an object that is
    /// opened and not yet loaded: at load libbpf freezes the section, and the verifier reads its values as
    /// constants. False when the object has no such variable of `T`'s size.
    static func setReadOnly<T>(_ name: String, to value: T, in object: OpaquePointer) -> Bool {
        guard let btf = bpf_object__btf(object) else { return false }
        let sectionID = btf__find_by_name_kind(btf, ".rodata", UInt32(BTF_KIND_DATASEC as Int))
        guard sectionID > 0, let section = btf__type_by_id(btf, UInt32(sectionID)),
              let infos = btf_var_secinfos(section) else { return false }
        var place: btf_var_secinfo?
        for i in 0..<Int(btf_vlen(section)) {
            if let variable = btf__type_by_id(btf, infos[i].type),
               String(cString: btf__name_by_offset(btf, variable.pointee.name_off)) == name {
                place = infos[i]
            }
        }
        guard let place, Int(place.size) == MemoryLayout<T>.size else { return false }
        var map = bpf_object__next_map(object, nil)
        while let m = map, !String(cString: bpf_map__name(m)).hasSuffix(".rodata") {
            map = bpf_object__next_map(object, m)
        }
        var size = 0
        guard let map, let current = bpf_map__initial_value(map, &size),
              Int(place.offset) + MemoryLayout<T>.size <= size else { return false }
        // libbpf takes a new initial value only whole, so the section is copied, patched and handed back.
        var data = [UInt8](UnsafeRawBufferPointer(start: current, count: size))
        data.withUnsafeMutableBytes { $0.storeBytes(of: value, toByteOffset: Int(place.offset), as: T.self) }
        return bpf_map__set_initial_value(map, data, size) == 0
    }
}
