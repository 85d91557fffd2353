import CJobgovBPF
import JobgovCore
import CLibbpf
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Memory and reclaim of one process, from the BPF maps.
public struct ProcessRecord: Sendable, Equatable {
    /// Resident bytes now (file + anon + shmem) and the most seen since it executed its program.
    public var currentRSS: UInt64
    public var peakRSS: UInt64
    public var directReclaimNanoseconds: UInt64
    public var cgroupReclaimNanoseconds: UInt64
    public var exited: Bool
}

/// jobgov's BPF observers and in-kernel actuators for one build cgroup: load, attach, read, act, detach.
///
/// Not Sendable: one owner (the supervisor loop) polls `pollDescriptor`, calls `drain`, and acts. Everything that
/// could not be loaded or attached is listed in `unavailable`, one line each; the rest works regardless.
public final class BuildProbes {
    /// The epoll descriptor of the ring buffer (owned by it), nil without BPF. It becomes readable at once for
    /// `.gateStopped` and `.oomVictim`, an admitted job's end while the gate holds processes, and when 128 KB of records wait; routine records (fork,
    /// exec, exit, stall) do not wake it one by one (that cost a context switch per process), so also call `drain`
    /// on every tick.
    public private(set) var pollDescriptor: FileDescriptor?
    /// What is off and why, one line per observer.
    public private(set) var unavailable: [(observer: String, reason: String)] = []
    /// The build's cgroup v2 id (its inode number), as in `oomVictim(cgroupID:)`.
    public let cgroupID: UInt64
    /// Reclaim passes at least this long are reported one by one as `.stall` events (all are summed per process).
    public var minimumStall: UInt64 {
        get { config.min_stall_ns }
        set { config.min_stall_ns = newValue; writeConfig() }
    }

    private var object: OpaquePointer?
    private var links: [OpaquePointer] = []
    private var ringBuffer: OpaquePointer?
    private let sink = Sink()
    /// The build's cgroup directory, open while its descriptor sits in map jg_cgroup.
    private var cgroupDirectory: FileDescriptor?
    private var objectBytes: UnsafeMutableRawBufferPointer?
    /// The switches of map jg_config (the gate, the minimum stall), written whole whenever one changes.
    var config = jg_config()
    /// What the programs know from load on (`jg_load` in their read-only data).
    private var loadSettings = jg_load_settings()
    /// Why `openObject` last failed, when libbpf did not say.
    private var openFailure: String?
    private var attached: Set<String> = []
    var maps = LoadedMaps()
    private var closed = false
    private var leftOut: Set<ProbeObserver> = []

    /// Programs not to load: those only left-out observers need.
    private var skippedPrograms: Set<String> {
        let wanted = Set(ProbeObserver.allCases.filter { !leftOut.contains($0) }.flatMap(\.programs))
        return Set(ProbeObserver.allCases.flatMap(\.programs)).subtracting(wanted)
    }

    /// Whether an observer or actuator works.
    public func isAvailable(_ observer: ProbeObserver) -> Bool {
        observer.programs.allSatisfy(attached.contains)
    }

    /// Loads and attaches every program for the cgroup v2 directory `cgroupV2Path` (descendants included), e.g.
    /// `/sys/fs/cgroup/unified/jobgov-123` on a hybrid machine, `/sys/fs/cgroup/...` on pure v2.
    /// Throws only when the path is not a cgroup v2 directory; missing privilege, BTF or kernel features end up in
    /// `unavailable` instead.
    /// `leaveOut` observers are not loaded at all (and not listed in `unavailable`).
    public static func open(
        cgroupV2Path: String, leaveOut: Set<ProbeObserver> = [], verbose: Bool = false
    ) throws(ProbeError) -> BuildProbes {
        let (id, level) = try cgroupIdentity(cgroupV2Path)
        let probes = BuildProbes(cgroupID: id)
        probes.loadSettings = jg_load_settings(
            build_cgroup_id: id, build_level: level,
            page_shift: UInt32(Int(sysconf(Int32(_SC_PAGESIZE))).trailingZeroBitCount))
        probes.config.min_stall_ns = 1_000_000
        probes.leftOut = leaveOut
        probes.load(cgroupV2Path: cgroupV2Path, verbose: verbose)
        return probes
    }

    private init(cgroupID: UInt64) { self.cgroupID = cgroupID }

    deinit { close() }

    // MARK: loading

    private func markAllUnavailable(_ reason: String) {
        unavailable = ProbeObserver.allCases.map { ($0.rawValue, reason) }
    }

    private func load(cgroupV2Path: String, verbose: Bool) {
        jg_capture_libbpf_log(verbose ? 1 : 0, verbose ? 1 : 0)
        if access("/sys/kernel/btf/vmlinux", R_OK) != 0 {
            markAllUnavailable("the kernel has no BTF (/sys/kernel/btf/vmlinux; CONFIG_DEBUG_INFO_BTF), which CO-RE needs")
            return
        }
        let bytes = decodeObject()
        objectBytes = bytes

        // First try everything at once; when that fails for a reason other than privilege, find the programs that
        // do not load one by one and leave them out.
        var skip: [String: String] = [:]
        let allPrograms = Set(programNames(bytes)).subtracting(skippedPrograms)
        var obj = openObject(bytes, autoload: allPrograms)
        guard let first = obj else {
            markAllUnavailable("cannot open the BPF object: "
                               + (openFailure ?? lastLogLine() ?? String(cString: strerror(errno))))
            return
        }
        jg_clear_libbpf_log()
        if bpf_object__load(first) != 0 {
            let err = errno
            let log = lastLogLine()
            bpf_object__close(first)
            obj = nil
            if err == EPERM || err == EACCES {
                markAllUnavailable("needs root or CAP_BPF+CAP_PERFMON (loading BPF: \(String(cString: strerror(err))))")
                return
            }
            for name in allPrograms {
                guard let single = openObject(bytes, autoload: [name]) else { continue }
                jg_clear_libbpf_log()
                if bpf_object__load(single) != 0 {
                    skip[name] = "does not load: " + (lastLogLine() ?? log ?? String(cString: strerror(errno)))
                }
                bpf_object__close(single)
            }
            let keep = allPrograms.subtracting(skip.keys)
            if keep.isEmpty {
                markAllUnavailable("no BPF program loads: \(log ?? String(cString: strerror(err)))")
                return
            }
            guard let retry = openObject(bytes, autoload: keep) else { return }
            if bpf_object__load(retry) != 0 {
                bpf_object__close(retry)
                markAllUnavailable("cannot load the BPF programs: \(lastLogLine() ?? String(cString: strerror(errno)))")
                return
            }
            obj = retry
        }
        object = obj
        if let obj { maps = LoadedMaps(obj) }
        writeConfig()
        cgroupDirectory = try? FileDescriptor.open(cgroupV2Path, .readOnly, options: [.directory, .closeOnExec])
        if maps.cgroup?.update(0, UInt32(bitPattern: cgroupDirectory?.rawValue ?? -1)) != true {
            markAllUnavailable("cannot hand the cgroup \(cgroupV2Path) to BPF: \(String(cString: strerror(errno)))")
            closeObject()
            return
        }

        // Attach one by one: one that fails leaves the others working.
        var program = bpf_object__next_program(obj, nil)
        while let p = program {
            let name = String(cString: bpf_program__name(p))
            if bpf_program__autoload(p) {
                jg_clear_libbpf_log()
                if let link = bpf_program__attach(p) {
                    links.append(link)
                    attached.insert(name)
                } else {
                    skip[name] = "does not attach: " + (lastLogLine() ?? String(cString: strerror(errno)))
                }
            }
            program = bpf_object__next_program(obj, p)
        }

        if let events = bpf_object__find_map_by_name(obj, "jg_events") {
            let context = Unmanaged.passUnretained(sink).toOpaque()
            ringBuffer = ring_buffer__new(bpf_map__fd(events), sinkCallback, context, nil)
            if let ringBuffer { pollDescriptor = FileDescriptor(rawValue: ring_buffer__epoll_fd(ringBuffer)) }
        }

        for observer in ProbeObserver.allCases where !isAvailable(observer) && !leftOut.contains(observer) {
            let failed = observer.programs.filter { !attached.contains($0) }
            let why = failed.map { "\(ProbeObserver.tracepoint(of: $0)) \(skip[$0] ?? "not loaded")" }
            unavailable.append((observer.rawValue, why.joined(separator: "; ")))
        }
        if ringBuffer == nil {
            unavailable.append(("events", "no ring buffer: \(String(cString: strerror(errno)))"))
        }
    }

    /// Opens the object, with the load-time settings in place; with `autoload`, only those programs will load.
    private func openObject(_ bytes: UnsafeMutableRawBufferPointer, autoload: Set<String>?) -> OpaquePointer? {
        guard let obj = jg_open_object(bytes.baseAddress, bytes.count, "jobgov") else { return nil }
        guard ProbeLayout.setReadOnly("jg_load", to: loadSettings, in: obj) else {
            bpf_object__close(obj)
            openFailure = "its read-only jg_load cannot be set (a BPF object and a loader from different builds?)"
            return nil
        }
        if let autoload {
            var program = bpf_object__next_program(obj, nil)
            while let p = program {
                bpf_program__set_autoload(p, autoload.contains(String(cString: bpf_program__name(p))))
                program = bpf_object__next_program(obj, p)
            }
        }
        return obj
    }

    private func programNames(_ bytes: UnsafeMutableRawBufferPointer) -> [String] {
        guard let obj = openObject(bytes, autoload: nil) else { return [] }
        defer { bpf_object__close(obj) }
        var names: [String] = []
        var program = bpf_object__next_program(obj, nil)
        while let p = program {
            names.append(String(cString: bpf_program__name(p)))
            program = bpf_object__next_program(obj, p)
        }
        return names
    }

    private func lastLogLine() -> String? {
        let lines = String(cString: jg_libbpf_log()).split(separator: "\n").map { $0.trimmingSpaces }
            .filter { !$0.isEmpty }
        // The verifier's last word or libbpf's own error, whichever comes last.
        return lines.last { $0.contains("libbpf:") && !$0.contains("-- BEGIN") && !$0.contains("-- END") }
            ?? lines.last
    }

    private func decodeObject() -> UnsafeMutableRawBufferPointer {
        let buffer = UnsafeMutableRawBufferPointer.allocate(
            byteCount: EmbeddedHex.byteCount(jobgovBPFObjectHex), alignment: 16)
        EmbeddedHex.decode(jobgovBPFObjectHex, into: buffer)
        return buffer
    }

    // MARK: events

    /// Hands every waiting event to `body`, without blocking.
    public func drain(_ body: (ProbeEvent) -> Void) {
        drainTimed { event, _ in body(event) }
    }

    /// Like `drain`, with each event's kernel time (CLOCK_MONOTONIC nanoseconds).
    public func drainTimed(_ body: (ProbeEvent, UInt64) -> Void) {
        guard let ringBuffer else { return }
        withoutActuallyEscaping(body) { body in
            sink.handler = { record, size in
                guard let event = ProbeEvent(record: record, size: size) else { return }
                body(event, record.load(fromByteOffset: eventTimeOffset, as: UInt64.self))
            }
            _ = ring_buffer__consume(ringBuffer)
            sink.handler = nil
        }
    }

    /// Waits up to `milliseconds` for an urgent event, then hands every waiting event to `body` (for tools without
    /// their own poll loop).
    public func poll(milliseconds: Int32, _ body: (ProbeEvent) -> Void) {
        guard let ringBuffer else {
            usleep(UInt32(max(0, milliseconds)) * 1000) // nothing can arrive; still wait as asked
            return
        }
        withoutActuallyEscaping(body) { body in
            sink.handler = { record, size in
                if let event = ProbeEvent(record: record, size: size) { body(event) }
            }
            _ = ring_buffer__poll(ringBuffer, milliseconds)
            _ = ring_buffer__consume(ringBuffer) // routine records do not wake the poll
            sink.handler = nil
        }
    }

    // MARK: maps

    /// Memory of a process of the build: resident bytes now and at most. While it runs the values lag the kernel's by
    /// less than 1 MiB (per-CPU caching keeps kmem:rss_stat cheap); once it ended the peak is the kernel's exact
    /// high-water mark. An ended process's entry is removed once read (its peak is also in its `.exit` event).
    /// nil when BPF saw no memory change of it.
    public func memory(of pid: Int32) -> (current: UInt64, peak: UInt64)? {
        record(of: pid).map { ($0.currentRSS, $0.peakRSS) }
    }

    /// Everything the maps know of a process. An ended process's entry is removed once read.
    public func record(of pid: Int32) -> ProcessRecord? {
        let key = UInt32(bitPattern: pid)
        guard let procs = maps.procs, let value = procs.lookup(key) else { return nil }
        if value.exited != 0 { procs.delete(key) }
        return ProcessRecord(value)
    }

    /// Every process the maps know, without removing any.
    public func records() -> [Int32: ProcessRecord] {
        guard let procs = maps.procs else { return [:] }
        var out: [Int32: ProcessRecord] = [:]
        for key in procs.keys() {
            if let value = procs.lookup(key) { out[Int32(bitPattern: key)] = ProcessRecord(value) }
        }
        return out
    }

    /// A latency histogram (counts since load; take differences with `LatencyHistogram.subtracting`).
    public func histogram(_ which: ProbeHistogram) -> LatencyHistogram {
        guard let histograms = maps.histograms else { return LatencyHistogram(buckets: []) }
        let slots = UInt32(JG_HIST_SLOTS.rawValue)
        return LatencyHistogram(buckets: (0..<slots).map { histograms.lookup(which.index * slots + $0) ?? 0 })
    }

    /// Reclaim stall of the whole build since load, in nanoseconds.
    public var totalStall: (direct: UInt64, cgroup: UInt64) {
        (counter(UInt32(JG_CNT_STALL_DIRECT_NS.rawValue)), counter(UInt32(JG_CNT_STALL_MEMCG_NS.rawValue)))
    }

    /// Records lost because the ring buffer was full.
    public var droppedEvents: UInt64 { counter(UInt32(JG_CNT_DROPPED.rawValue)) }

    func counter(_ index: UInt32) -> UInt64 {
        maps.counters?.lookup(index) ?? 0
    }

    // MARK: closing

    /// Detaches every program and frees every map. Processes the gate stopped are resumed first:
    /// after this nothing would. Idempotent; deinit calls it.
    public func close() {
        if closed { return }
        closed = true
        if object != nil {
            stopGate()
        }
        for link in links { bpf_link__destroy(link) }
        links.removeAll()
        if let ringBuffer { ring_buffer__free(ringBuffer) }
        ringBuffer = nil
        pollDescriptor = nil
        closeObject()
        if let objectBytes { objectBytes.deallocate() }
        objectBytes = nil
    }

    private func closeObject() {
        if let object { bpf_object__close(object) }
        object = nil
        maps = LoadedMaps()
        attached.removeAll()
        try? cgroupDirectory?.close()
        cgroupDirectory = nil
    }

    /// Ids of the BPF programs and maps this instance holds (for checking that they are gone after `close`).
    public var kernelObjectIDs: (programs: [UInt32], maps: [UInt32]) {
        guard let object else { return ([], []) }
        var programs: [UInt32] = []
        var program = bpf_object__next_program(object, nil)
        while let p = program {
            let fd = bpf_program__fd(p)
            if fd >= 0, let id = objectID(fd) { programs.append(id) }
            program = bpf_object__next_program(object, p)
        }
        var mapIDs: [UInt32] = []
        var map = bpf_object__next_map(object, nil)
        while let m = map {
            let fd = bpf_map__fd(m)
            if fd >= 0, let id = objectID(fd) { mapIDs.append(id) }
            map = bpf_object__next_map(object, m)
        }
        return (programs, mapIDs)
    }
}

extension BuildProbes {
    /// Turns on the kernel's per-program run-time accounting (BPF_ENABLE_STATS) for as long as the returned
    /// descriptor stays open; -1 if the kernel refuses. For measuring what each program costs.
    public static func enableRunTimeStatistics() -> Int32 {
        bpf_enable_stats(BPF_STATS_RUN_TIME)
    }

    /// How often each attached program ran and how long it took in total (nanoseconds), while statistics are on.
    public func programStatistics() -> [(program: String, runs: UInt64, nanoseconds: UInt64)] {
        guard let object else { return [] }
        var out: [(program: String, runs: UInt64, nanoseconds: UInt64)] = []
        var program = bpf_object__next_program(object, nil)
        while let p = program {
            let fd = bpf_program__fd(p)
            var info = bpf_prog_info()
            var length = UInt32(MemoryLayout<bpf_prog_info>.size)
            if fd >= 0, bpf_obj_get_info_by_fd(fd, &info, &length) == 0 {
                out.append((String(cString: bpf_program__name(p)), info.run_cnt, info.run_time_ns))
            }
            program = bpf_object__next_program(object, p)
        }
        return out
    }
}

/// The id of a BPF program or map behind `fd` (bpf_prog_info and bpf_map_info both start with type, id).
private func objectID(_ fd: Int32) -> UInt32? {
    var info = bpf_prog_info()
    var length = UInt32(MemoryLayout<bpf_prog_info>.size)
    guard bpf_obj_get_info_by_fd(fd, &info, &length) == 0 else { return nil }
    return info.id
}

/// Where a record's kernel time sits (every record starts with the fields of `struct jg_event` up to `args`).
private let eventTimeOffset = MemoryLayout<jg_event>.offset(of: \jg_event.time_ns)!

/// The ring buffer callback's target: the closure of the `drain` in progress.
private final class Sink {
    var handler: ((UnsafeRawPointer, Int) -> Void)?
}

private let sinkCallback: ring_buffer_sample_fn = { context, data, size in
    guard let context, let data else { return 0 }
    Unmanaged<Sink>.fromOpaque(context).takeUnretainedValue().handler?(UnsafeRawPointer(data), Int(size))
    return 0
}

extension ProcessRecord {
    init(_ p: jg_proc) {
        currentRSS = p.rss_file + p.rss_anon + p.rss_shmem
        peakRSS = p.rss_peak
        directReclaimNanoseconds = p.stall_ns.0
        cgroupReclaimNanoseconds = p.stall_ns.1
        exited = p.exited != 0
    }
}

extension Substring {
    fileprivate var trimmingSpaces: String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}
