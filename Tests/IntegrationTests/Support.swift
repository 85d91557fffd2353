import Foundation
import LinuxSystem
import Testing

/// Paths of the real clients the tests drive; `scripts/setup` installs them.
enum Clients {
    static let repo: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let make43 = "/usr/bin/make"
    static let make44 = repo.appendingPathComponent(".deps/make-4.4.1/bin/make").path
    static let ninja = repo.appendingPathComponent(".deps/bin/ninja").path
    static var cargo: String {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") + ["/root/.cargo/bin"] {
            let p = "\(dir)/cargo"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return "cargo"
    }
    static let jobScript = repo.appendingPathComponent("Tests/IntegrationTests/Fixtures/job.sh").path

    /// The jobgov binary built next to this test bundle (or JOBGOV_BIN).
    static var jobgov: String {
        if let bin = ProcessInfo.processInfo.environment["JOBGOV_BIN"] { return bin }
        let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for dir in [bundle, bundle.deletingLastPathComponent()] {
            let p = dir.appendingPathComponent("jobgov").path
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return repo.appendingPathComponent(".build/debug/jobgov").path
    }

    /// Fails the test (never skips) when a client is missing: the tests exist to run against real clients.
    static func require(_ path: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        try #require(FileManager.default.isExecutableFile(atPath: path),
                     "\(path) is missing; run scripts/setup", sourceLocation: sourceLocation)
    }
}

/// A scratch directory under /tmp, removed when the test ends.
final class Scratch {
    let url: URL
    var path: String { url.path }

    init() throws {
        var template = Array("/tmp/jobgov-test-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        guard let made else { throw POSIXError(.EIO) }
        url = URL(fileURLWithPath: String(cString: made))
    }

    func write(_ name: String, _ text: String) throws {
        let file = url.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        try text.write(to: file, atomically: true, encoding: .utf8)
    }

    func read(_ name: String) -> String {
        (try? String(contentsOf: url.appendingPathComponent(name), encoding: .utf8)) ?? ""
    }

    /// The private runtime directories jobgov left in this scratch TMPDIR.
    var runtimeLeftovers: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).filter { $0.hasPrefix("jobgov-") }
    }

    deinit { try? FileManager.default.removeItem(at: url) }
}

struct RunResult {
    var status: Int32
    var stdout: String
    var stderr: String
    /// Lines jobgov itself printed (prefixed "jobgov:").
    var jobgovLines: [String] { stderr.split(separator: "\n").map(String.init).filter { $0.hasPrefix("jobgov:") } }
}

/// A started jobgov (or other) process; output goes to files so pipes never fill up.
final class Running {
    let process = Process()
    let scratch: Scratch
    private let outName: String
    private let errName: String

    init(_ executable: String, _ arguments: [String], in scratch: Scratch, cwd: String? = nil,
         env extra: [String: String] = [:], tag: String = "run") throws {
        self.scratch = scratch
        outName = "\(tag).stdout"
        errName = "\(tag).stderr"
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: cwd ?? scratch.path)
        var env = ProcessInfo.processInfo.environment
        env["TMPDIR"] = scratch.path
        env["XDG_RUNTIME_DIR"] = nil
        env["MAKEFLAGS"] = nil
        env["MFLAGS"] = nil
        env["CARGO_MAKEFLAGS"] = nil
        env["JOBGOV_CONTROL"] = nil
        env["JOBLOG"] = scratch.url.appendingPathComponent("job.log").path
        env["JOB"] = Clients.jobScript
        env["JOBGOV"] = Clients.jobgov
        for (k, v) in extra { env[k] = v }
        process.environment = env
        FileManager.default.createFile(atPath: scratch.url.appendingPathComponent(outName).path, contents: nil)
        FileManager.default.createFile(atPath: scratch.url.appendingPathComponent(errName).path, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: scratch.url.appendingPathComponent(outName))
        process.standardError = try FileHandle(forWritingTo: scratch.url.appendingPathComponent(errName))
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }

    /// Waits at most `timeout` seconds; kills the process (by its pid) and fails if it takes longer.
    func finish(timeout: Double = 120, sourceLocation: SourceLocation = #_sourceLocation) -> RunResult {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            Issue.record("timed out after \(timeout) s", sourceLocation: sourceLocation)
            kill(pid, SIGKILL)
            process.waitUntilExit()
        }
        let status: Int32 = process.terminationReason == .uncaughtSignal
            ? 128 + process.terminationStatus : process.terminationStatus
        return RunResult(status: status, stdout: scratch.read(outName), stderr: scratch.read(errName))
    }
}

/// Runs jobgov with `arguments` in `scratch` and waits for it.
func jobgov(_ arguments: [String], in scratch: Scratch, cwd: String? = nil, env: [String: String] = [:],
            timeout: Double = 120) throws -> RunResult {
    try Running(Clients.jobgov, arguments, in: scratch, cwd: cwd, env: env).finish(timeout: timeout)
}

/// Waits until `condition` holds, polling; fails the test after `timeout` seconds.
func waitUntil(_ what: String, timeout: Double = 30, sourceLocation: SourceLocation = #_sourceLocation,
               _ condition: () -> Bool) {
    let deadline = Date().addingTimeInterval(timeout)
    while !condition() {
        if Date() > deadline {
            Issue.record("gave up waiting for \(what)", sourceLocation: sourceLocation)
            return
        }
        usleep(20_000)
    }
}

/// The fields of a `jobgov ctl status --json` object.
func PoolStatusFields(_ json: String) -> [String: String] {
    guard let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any] else { return [:] }
    return object.mapValues { "\($0)" }
}

func realtimeNanoseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

/// The jobs recorded in a job.sh log.
struct JobLog {
    struct Interval { var name: String; var start: Int64; var end: Int64 }
    var intervals: [Interval]

    init(_ text: String) {
        var starts: [String: Int64] = [:]
        var out: [Interval] = []
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            guard parts.count >= 3, let t = Int64(parts[1]) else { continue }
            let name = parts[2...].joined(separator: " ")
            if parts[0] == "S" { starts[name] = t }
            else if parts[0] == "E", let s = starts.removeValue(forKey: name) { out.append(Interval(name: name, start: s, end: t)) }
        }
        intervals = out
    }

    /// The most jobs running at once within [from, to).
    func peak(from: Int64 = .min, to: Int64 = .max) -> Int {
        var events: [(Int64, Int)] = []
        for i in intervals where i.end > from && i.start < to {
            events.append((max(i.start, from), 1))
            events.append((min(i.end, to), -1))
        }
        events.sort { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }  // an end before a start at the same instant
        var running = 0
        var best = 0
        for (_, d) in events {
            running += d
            best = max(best, running)
        }
        return best
    }

    /// Starts (+1) and ends (-1) in time order, an end before a start at the same instant.
    private var events: [(Int64, Int)] {
        var events: [(Int64, Int)] = []
        for i in intervals {
            events.append((i.start, 1))
            events.append((i.end, -1))
        }
        return events.sorted { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
    }

    /// The first instant at or after `from` when more than `level` jobs ran at once.
    func firstTimeAbove(_ level: Int, from: Int64) -> Int64? {
        var running = 0
        for (t, d) in events {
            running += d
            if t >= from && running > level { return t }
        }
        return nil
    }

    /// The last instant when more than `level` jobs ran at once.
    func lastTimeAbove(_ level: Int) -> Int64? {
        var running = 0
        var last: Int64?
        for (t, d) in events {
            running += d
            if running > level { last = t }
        }
        return last
    }

    /// The last instant when concurrency came down from above `level` to `level` or fewer.
    func lastTimeBackTo(_ level: Int) -> Int64? {
        var running = 0
        var last: Int64?
        for (t, d) in events {
            let before = running
            running += d
            if before > level && running <= level { last = t }
        }
        return last
    }

    var count: Int { intervals.count }
}

/// A Makefile with `count` independent jobs named PREFIX1..PREFIXn of `seconds` each, run through job.sh.
func flatMakefile(count: Int, seconds: Double, prefix: String = "j") -> String {
    let names = (1...count).map { "\(prefix)\($0)" }
    return """
    all: \(names.joined(separator: " "))
    \(names.joined(separator: " ")):
    \t@$(JOB) $@ \(seconds)
    .PHONY: all \(names.joined(separator: " "))

    """
}

/// The same as a build.ninja.
func flatNinja(count: Int, seconds: Double, prefix: String = "n") -> String {
    var text = "rule job\n  command = $JOB $out \(seconds) && : > $out\n\n"
    text = text.replacingOccurrences(of: "$JOB", with: Clients.jobScript)
    let names = (1...count).map { "\(prefix)\($0)" }
    for name in names { text += "build \(name): job\n" }
    text += "build all: phony \(names.joined(separator: " "))\ndefault all\n"
    return text
}

/// The cgroups (v2 and the v1 memory and cpu ones) of the build of the jobgov with this pid, where they exist.
func buildCgroupDirectories(jobgov pid: Int32) -> [String] {
    let layout = CgroupLayout.detect()
    let bases = [layout.ownUnifiedDirectory, layout.ownV1Directory("memory"), layout.ownV1Directory("cpu")]
    return bases.compactMap { $0 }.map { "\($0)/jobgov-\(pid)" }.filter { FileManager.default.fileExists(atPath: $0) }
}
