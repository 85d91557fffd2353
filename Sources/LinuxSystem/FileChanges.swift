#if canImport(Glibc)
import Glibc
#endif
import CJobgovShims
import JobgovCore

/// Watches whole filesystems with fanotify (`FAN_MARK_FILESYSTEM`, events that name the directory and the entry:
/// `FAN_REPORT_DFID_NAME`, Linux 5.9+) and feeds creates, writes, attribute changes, renames and deletions under the
/// roots into a `FileChangeSet`. Needs CAP_SYS_ADMIN (root) for a filesystem mark and CAP_DAC_READ_SEARCH to turn
/// the reported directory handles back into paths.
public final class FileChangeWatcher {
    public let fd: Int32
    /// Filesystem id (statfs f_fsid) → a descriptor on that filesystem, for open_by_handle_at.
    private var mountFDs: [UInt64: Int32] = [:]
    /// Directory handle (fsid + handle bytes) → its path when first seen.
    private var directories: [ByteKey: [UInt8]] = [:]
    public private(set) var changes: FileChangeSet
    /// The kernel's queue overflowed: events were lost and the list is incomplete.
    public private(set) var overflowed = false
    /// Events whose directory could no longer be found (it was deleted before the event was read).
    public private(set) var unresolved = 0
    public private(set) var events = 0
    private var buffer = [UInt8](repeating: 0, count: 256 * 1024)

    static let mask: UInt64 = UInt64(FAN_CREATE | FAN_DELETE | FAN_MODIFY | FAN_ATTRIB | FAN_MOVED_FROM | FAN_MOVED_TO)
        | UInt64(FAN_ONDIR)

    /// `roots` must be absolute paths of existing directories (resolve them first: see `canonicalRoot`).
    public init(roots: [String]) throws(SystemError) {
        let flags = UInt32(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE | FAN_REPORT_DFID_NAME)
        let fd = jobgov_fanotify_init(flags, UInt32(O_RDONLY | O_CLOEXEC))
        guard fd >= 0 else {
            let e = errno
            switch e {
            case EPERM: throw SystemError("cannot watch filesystems with fanotify", errno: e,
                                          hint: "run as root: a filesystem-wide mark needs CAP_SYS_ADMIN")
            case EINVAL, ENOSYS: throw SystemError("this kernel's fanotify cannot report file names", errno: e,
                                                   hint: "Linux 5.9 or later with CONFIG_FANOTIFY is needed")
            default: throw SystemError("cannot create an fanotify group", errno: e)
            }
        }
        self.fd = fd
        changes = FileChangeSet(roots: roots.map { Array($0.utf8) })
        for root in roots {
            guard jobgov_fanotify_mark(fd, UInt32(FAN_MARK_ADD | FAN_MARK_FILESYSTEM), Self.mask, root) == 0 else {
                let e = errno
                close(fd)
                for m in mountFDs.values { close(m) }
                switch e {
                case EXDEV, EOPNOTSUPP, ENODEV:
                    throw SystemError("cannot watch the filesystem of", path: root, errno: e,
                                      hint: "it does not give file handles (some FUSE and network filesystems); use a full scan there")
                default:
                    throw SystemError("cannot mark the filesystem of", path: root, errno: e)
                }
            }
            let m = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            var id: UInt64 = 0
            if m >= 0, jobgov_filesystem_id(m, &id) == 0 {
                if mountFDs[id] == nil { mountFDs[id] = m } else { close(m) }
            } else if m >= 0 {
                close(m)
            }
        }
    }

    deinit {
        close(fd)
        for m in mountFDs.values { close(m) }
    }

    /// Reads every event waiting (the descriptor is non-blocking) and records those under the roots.
    public func drain() {
        while true {
            let n = buffer.withUnsafeMutableBytes { raw in retryingInterrupts { read(fd, raw.baseAddress, raw.count) } }
            if n <= 0 { return }
            buffer.withUnsafeBytes { raw in parse(UnsafeRawBufferPointer(rebasing: raw[0..<n])) }
        }
    }

    private func parse(_ raw: UnsafeRawBufferPointer) {
        var offset = 0
        let metadataSize = 24
        while offset + metadataSize <= raw.count {
            let length = Int(raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
            let metadataLength = Int(raw.loadUnaligned(fromByteOffset: offset + 6, as: UInt16.self))
            let mask = raw.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self)
            let eventFD = raw.loadUnaligned(fromByteOffset: offset + 16, as: Int32.self)
            guard length >= metadataSize, offset + length <= raw.count else { return }
            if eventFD >= 0 { close(eventFD) }  // not with FID reporting, but never leak one
            events += 1
            if mask & UInt64(FAN_Q_OVERFLOW) != 0 { overflowed = true }
            var info = offset + metadataLength
            while info + 4 <= offset + length {
                let type = raw[info]
                let infoLength = Int(raw.loadUnaligned(fromByteOffset: info + 2, as: UInt16.self))
                guard infoLength > 4, info + infoLength <= offset + length else { break }
                if type == UInt8(FAN_EVENT_INFO_TYPE_DFID_NAME) {
                    record(mask: mask, info: UnsafeRawBufferPointer(rebasing: raw[(info + 4)..<(info + infoLength)]))
                }
                info += infoLength
            }
            offset += length
        }
    }

    /// One DFID_NAME record: fsid (8 bytes), struct file_handle (handle_bytes, handle_type, bytes), NUL-ended name.
    private func record(mask: UInt64, info: UnsafeRawBufferPointer) {
        guard info.count >= 16 else { return }
        let fsid = info.loadUnaligned(fromByteOffset: 0, as: UInt64.self)
        let handleBytes = Int(info.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
        let handleEnd = 16 + handleBytes
        guard handleEnd <= info.count else { return }
        let name = Array(info[handleEnd...].prefix { $0 != 0 })
        let key = ByteKey(Array(info[0..<handleEnd]))
        guard let directory = resolve(key: key, fsid: fsid, handle: UnsafeRawBufferPointer(rebasing: info[8..<handleEnd])) else {
            unresolved += 1
            return
        }
        var path = directory
        if name.isEmpty || name == [UInt8(ascii: ".")] {
            // An event on the directory itself.
        } else {
            if path.last != UInt8(ascii: "/") { path.append(UInt8(ascii: "/")) }
            path += name
        }
        let event: FileChangeSet.Event
        if mask & UInt64(FAN_CREATE | FAN_MOVED_TO) != 0 { event = .appeared }
        else if mask & UInt64(FAN_DELETE | FAN_MOVED_FROM) != 0 { event = .disappeared }
        else { event = .modified }
        changes.record(event, path: path)
        // A directory renamed makes the paths remembered for it and its descendants wrong (one deleted is not: its
        // handle never opens again).
        if mask & UInt64(FAN_ONDIR) != 0 && mask & UInt64(FAN_MOVED_FROM | FAN_MOVED_TO) != 0 {
            directories.removeAll(keepingCapacity: true)
        }
    }

    private func resolve(key: ByteKey, fsid: UInt64, handle: UnsafeRawBufferPointer) -> [UInt8]? {
        if let known = directories[key] { return known }
        guard let mountFD = mountFDs[fsid] ?? mountFDs.values.first else { return nil }
        let dirFD = jobgov_open_path_by_handle(mountFD, handle.baseAddress)
        guard dirFD >= 0 else { return nil }
        defer { close(dirFD) }
        guard var path = readLink("/proc/self/fd/\(dirFD)") else { return nil }
        let deleted = Array(" (deleted)".utf8)
        if path.count > deleted.count && path.suffix(deleted.count).elementsEqual(deleted) {
            path.removeLast(deleted.count)
        }
        directories[key] = path
        return path
    }
}

/// The target of a symbolic link, as bytes.
func readLink(_ path: String) -> [UInt8]? {
    var target = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
    let n = target.withUnsafeMutableBytes { raw in
        readlink(path, raw.baseAddress!.assumingMemoryBound(to: CChar.self), raw.count)
    }
    guard n > 0 else { return nil }
    return Array(target[0..<n])
}

/// What is at a path now, without following a final symbolic link.
public func fileKind(_ path: [UInt8]) -> FileChangeSet.Kind? {
    var st = stat()
    let ok = (path + [0]).withUnsafeBufferPointer { p in
        p.withMemoryRebound(to: CChar.self) { lstat($0.baseAddress!, &st) == 0 }
    }
    guard ok else { return nil }
    return (st.st_mode & S_IFMT) == S_IFDIR ? .directory : .other
}

/// Everything below a directory, recursively, as full paths with their kinds; symbolic links are not followed.
public func directoryTree(_ path: [UInt8]) -> [([UInt8], FileChangeSet.Kind)] {
    var out: [([UInt8], FileChangeSet.Kind)] = []
    var pending = [path]
    while let dir = pending.popLast() {
        let handle = (dir + [0]).withUnsafeBufferPointer { p in
            p.withMemoryRebound(to: CChar.self) { opendir($0.baseAddress!) }
        }
        guard let handle else { continue }
        defer { closedir(handle) }
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { Array($0.prefix { $0 != 0 }) }
            if name == [UInt8(ascii: ".")] || name == [UInt8(ascii: "."), UInt8(ascii: ".")] { continue }
            let child = dir + (dir.last == UInt8(ascii: "/") ? [] : [UInt8(ascii: "/")]) + name
            var type = entry.pointee.d_type
            if type == UInt8(DT_UNKNOWN) { type = fileKind(child) == .directory ? UInt8(DT_DIR) : UInt8(DT_REG) }
            if type == UInt8(DT_DIR) {
                out.append((child, .directory))
                pending.append(child)
            } else {
                out.append((child, .other))
            }
        }
    }
    return out
}

/// A root for `FileChangeWatcher`: the absolute, symlink-free path of an existing directory.
public func canonicalRoot(_ path: String) throws(SystemError) -> String {
    guard let resolved = realpath(path, nil) else {
        throw SystemError("cannot watch", path: path, hint: "give an existing directory")
    }
    defer { free(resolved) }
    let text = String(cString: resolved)
    guard fileKind(Array(text.utf8)) == .directory else {
        throw SystemError("cannot watch", path: path, errno: ENOTDIR, hint: "give a directory")
    }
    return text
}
