import CLibbpf
#if canImport(Glibc)
import Glibc
#endif

/// The BPF programs and maps loaded in the kernel (all users), by id, as `bpftool prog` / `bpftool map` list them.
public enum BPFInventory {
    /// Every loaded program's id and name. Needs root (CAP_SYS_ADMIN); empty otherwise.
    public static func programs() -> [(id: UInt32, name: String)] {
        list(next: bpf_prog_get_next_id, open: bpf_prog_get_fd_by_id) { fd in
            var info = bpf_prog_info()
            var length = UInt32(MemoryLayout<bpf_prog_info>.size)
            guard bpf_obj_get_info_by_fd(fd, &info, &length) == 0 else { return nil }
            return cString(info.name)
        }
    }

    /// Every loaded map's id and name.
    public static func maps() -> [(id: UInt32, name: String)] {
        list(next: bpf_map_get_next_id, open: bpf_map_get_fd_by_id) { fd in
            var info = bpf_map_info()
            var length = UInt32(MemoryLayout<bpf_map_info>.size)
            guard bpf_obj_get_info_by_fd(fd, &info, &length) == 0 else { return nil }
            return cString(info.name)
        }
    }

    private static func list(
        next: (UInt32, UnsafeMutablePointer<UInt32>?) -> Int32, open: (UInt32) -> Int32, name: (Int32) -> String?
    ) -> [(id: UInt32, name: String)] {
        var out: [(id: UInt32, name: String)] = []
        var id: UInt32 = 0
        var following: UInt32 = 0
        while next(id, &following) == 0 {
            id = following
            let fd = open(id)
            guard fd >= 0 else { continue } // gone meanwhile
            if let n = name(fd) { out.append((id, n)) }
            close(fd)
        }
        return out
    }
}
