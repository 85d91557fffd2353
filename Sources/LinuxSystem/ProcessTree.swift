#if canImport(Glibc)
import Glibc
#endif
import JobgovCore

/// Reads the process tree below a process from procfs (`/proc/PID/task/TID/children`), relative to an injectable
/// root so tests can point it at a recorded tree.
public struct ProcessTree: Sendable {
    public let procRoot: String

    public init(procRoot: String = "/proc") {
        self.procRoot = procRoot
    }

    /// Whether this kernel exposes per-task `children` files (CONFIG_PROC_CHILDREN); without them the tree
    /// cannot be walked cheaply.
    public func isSupported(selfPID: Int32 = getpid()) -> Bool {
        access("\(procRoot)/\(selfPID)/task/\(selfPID)/children", R_OK) == 0
    }

    /// Visits every process below `pid` (not `pid` itself) once, parents before their children, with its
    /// parent, its task (thread) ids and its children. A process whose files vanish while being read has
    /// exited and is skipped.
    private func walk(below pid: Int32, _ visit: (_ pid: Int32, _ parent: Int32, _ tasks: [Int32], _ kids: [Int32]) -> Void) {
        var queue = children(of: pid).map { ($0, pid) }
        var seen = Set<Int32>()
        var next = 0
        while next < queue.count {
            let (process, parent) = queue[next]
            next += 1
            guard seen.insert(process).inserted else { continue }
            let tasks = taskIDs(of: process)
            guard !tasks.isEmpty else { continue }
            let kids = tasks.flatMap { readChildren("\(procRoot)/\(process)/task/\($0)/children") }
            visit(process, parent, tasks, kids)
            queue.append(contentsOf: kids.map { ($0, process) })
        }
    }

    /// Counts the tasks (threads) of every process below `pid`, not counting `pid` itself.
    public func descendantTaskCount(of pid: Int32) -> Int {
        var count = 0
        walk(below: pid) { _, _, tasks, _ in count += tasks.count }
        return count
    }

    /// Every process below `pid` (not `pid` itself), with its parent, threads, children, and whether it has the
    /// file `poolPath` open. Descriptors are only read for processes that have children or several threads:
    /// a single-threaded leaf (a compiler, say) holds no tokens whether or not it has the pool open, and leaves
    /// are most of a build.
    public func snapshot(below pid: Int32, poolPath: String) -> [BuildProcess] {
        var out: [BuildProcess] = []
        walk(below: pid) { process, parent, tasks, kids in
            let holds = (kids.isEmpty && tasks.count == 1) ? false : hasOpen(process, path: poolPath)
            out.append(BuildProcess(pid: process, parent: parent, threads: tasks.count, children: kids.count,
                                    holdsPool: holds))
        }
        return out
    }

    /// Whether process `pid` has a descriptor open on `path`.
    public func hasOpen(_ pid: Int32, path: String) -> Bool {
        let fdDir = "\(procRoot)/\(pid)/fd"
        var buffer = [CChar](repeating: 0, count: 4096)
        for name in directoryEntries(fdDir) {
            guard name.first?.isNumber == true else { continue }
            let n = readlink("\(fdDir)/\(name)", &buffer, buffer.count - 1)
            guard n > 0 else { continue }
            let target = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if target == path { return true }
        }
        return false
    }

    /// Every process below `pid`, parents before their children.
    public func descendants(of pid: Int32) -> [Int32] {
        var out: [Int32] = []
        walk(below: pid) { process, _, _, _ in out.append(process) }
        return out
    }

    /// The direct children of `pid`, across all of its threads.
    public func children(of pid: Int32) -> [Int32] {
        taskIDs(of: pid).flatMap { readChildren("\(procRoot)/\(pid)/task/\($0)/children") }
    }

    public func taskIDs(of pid: Int32) -> [Int32] {
        directoryEntries("\(procRoot)/\(pid)/task").compactMap { Int32($0) }
    }

    private func readChildren(_ path: String) -> [Int32] {
        guard let text = readSmallFile(path) else { return [] }
        return text.split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { Int32($0) }
    }
}

/// Why a file could not be read whole.
public enum FileReadFailure: Error, Equatable, Sendable {
    case open(errno: Int32)
    case read(errno: Int32)
    /// Longer than the limit: an error, not a silently shortened text.
    case tooLarge(limit: Int)
}

/// Reads a procfs, sysfs or cgroupfs file whole (these report their size as 0, so it reads until EOF).
public func readFile(_ path: String, limit: Int = 4 << 20) throws(FileReadFailure) -> String {
    let fd = retryingInterrupts { open(path, O_RDONLY | O_CLOEXEC) }
    guard fd >= 0 else { throw .open(errno: errno) }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 16 << 10)
    while true {
        let n = chunk.withUnsafeMutableBytes { raw in retryingInterrupts { read(fd, raw.baseAddress, raw.count) } }
        if n < 0 { throw .read(errno: errno) }
        if n == 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
        if bytes.count > limit { throw .tooLarge(limit: limit) }
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// `readFile` for callers to whom any failure means "not there" (the process is gone, say).
public func readSmallFile(_ path: String, limit: Int = 1 << 20) -> String? {
    try? readFile(path, limit: limit)
}

/// The names in a directory (without `.` and `..`); `directoriesOnly` keeps subdirectories. Empty when the
/// directory cannot be opened (a process that just exited, a removed cgroup).
public func directoryEntries(_ path: String, directoriesOnly: Bool = false) -> [String] {
    guard let dir = opendir(path) else { return [] }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
        if directoriesOnly && entry.pointee.d_type != UInt8(DT_DIR) { continue }
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return names
}

extension ProcessTree {
    /// Every process below `pid` with its parent, name, start time and memory, for the job table. Reads
    /// `/proc/PID/stat` for each, and `/proc/PID/status` (for the high-water mark) only for processes above
    /// `peakReadThreshold` resident bytes: small processes cannot matter to memory, and they are most of a build.
    public func observe(below pid: Int32, peakReadThreshold: UInt64 = 8 << 20) -> [ProcessObservation] {
        var out: [ProcessObservation] = []
        walk(below: pid) { process, parent, _, _ in
            guard let stat = readSmallFile("\(procRoot)/\(process)/stat"),
                  var o = Self.parseStat(stat, pid: process, parent: parent) else { return }
            if o.rssBytes >= peakReadThreshold, let status = readSmallFile("\(procRoot)/\(process)/status"),
               let hwm = Self.statusKilobytes(status, field: "VmHWM:") {
                o.peakRSSBytes = max(o.rssBytes, hwm * 1024)
            }
            out.append(o)
        }
        return out
    }

    /// One process read on its own (its parent from its stat line), for callers that list processes another way
    /// (a cgroup's `cgroup.procs`).
    public func observation(of pid: Int32) -> ProcessObservation? {
        guard let stat = readSmallFile("\(procRoot)/\(pid)/stat") else { return nil }
        return Self.parseStat(stat, pid: pid, parent: nil)
    }

    /// The argument vector of `pid` (`/proc/PID/cmdline`), nil once it has exited or for a kernel thread.
    public func arguments(of pid: Int32) -> [String]? {
        guard let text = readSmallFile("\(procRoot)/\(pid)/cmdline", limit: 64 << 10), !text.isEmpty else { return nil }
        return text.split(separator: "\u{0}", omittingEmptySubsequences: false).dropLast(text.hasSuffix("\u{0}") ? 1 : 0)
            .map(String.init)
    }

    static let pageSize = UInt64(sysconf(Int32(_SC_PAGESIZE)))

    /// `/proc/PID/stat`: the name sits in parentheses and may itself hold spaces and parentheses, so fields are
    /// counted from the last `)`. Field 22 is the start time, 24 the resident pages.
    /// `parent` nil: taken from the line (field 4).
    static func parseStat(_ text: String, pid: Int32, parent: Int32?) -> ProcessObservation? {
        guard let open = text.firstIndex(of: "("), let close = text.lastIndex(of: ")") else { return nil }
        let name = String(text[text.index(after: open)..<close])
        let fields = text[text.index(after: close)...].split(separator: " ")
        // fields[0] is the state (field 3), so field N is fields[N - 3].
        guard fields.count > 21, let start = UInt64(fields[19]), let rss = UInt64(fields[21]),
              let ppid = parent ?? Int32(fields[1]) else { return nil }
        return ProcessObservation(pid: pid, parent: ppid, name: name, startTicks: start, rssBytes: rss * pageSize)
    }

    static func statusKilobytes(_ text: String, field: String) -> UInt64? {
        for line in text.split(separator: "\n") where line.hasPrefix(field) {
            return UInt64(line.dropFirst(field.count).split(separator: " ").first ?? "")
        }
        return nil
    }
}
