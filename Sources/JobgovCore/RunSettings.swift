/// A share of something (the memory budget, all CPUs), as people write it: `85` or `85%`.
public struct Percent: Sendable, Equatable, CustomStringConvertible {
    /// 0.85 for 85%.
    public var share: Double
    public init(_ percent: Double) { share = percent / 100 }
    public var description: String { plainNumber(share * 100) + "%" }
}

/// A duration in milliseconds, as people write it: `100` or `100ms`.
public struct Milliseconds: Sendable, Equatable, CustomStringConvertible {
    public var value: Double
    public init(_ value: Double) { self.value = value }
    public var seconds: Double { value / 1000 }
    public var description: String { plainNumber(value) + " ms" }
}

/// How a setting's text becomes its typed value, and what to say when it does not.
public struct SettingParser<Value: Sendable>: Sendable {
    /// The value's name in `--help` (`percent`, `ms`, `file`); nil for a flag that takes none.
    public let valueName: String?
    /// What a valid value looks like, for messages: "expected a percentage above 0 and at most 100, such as 85".
    public let expected: String
    let read: @Sendable (String) -> Value?

    public func parse(_ text: String) -> Value? { read(text.trimmingWhitespace()) }
}

extension SettingParser where Value == Percent {
    /// Above 0, at most 100; a bare number is a percentage.
    public static let percent = SettingParser(valueName: "percent",
                                              expected: "expected a percentage above 0 and at most 100, such as 85") { s in
        guard let p = Double(s.hasSuffix("%") ? String(s.dropLast()) : s), p > 0, p <= 100 else { return nil }
        return Percent(p)
    }
}

extension SettingParser where Value == Milliseconds {
    /// Above 0, at most ten minutes; `ms` may follow the number.
    public static let milliseconds = SettingParser(valueName: "ms",
                                                   expected: "expected milliseconds above 0 (at most 600000), such as 100") { s in
        guard let ms = Double(s.hasSuffix("ms") ? String(s.dropLast(2)) : s), ms > 0, ms <= 600_000 else { return nil }
        return Milliseconds(ms)
    }
}

extension SettingParser where Value == Bool {
    /// A command-line flag (present or not); `true` or `false` in the config file.
    public static let switchedOn = SettingParser(valueName: nil, expected: "expected true or false") { s in
        s == "true" ? true : s == "false" ? false : nil
    }
}

extension SettingParser where Value == String {
    /// A file's path.
    public static let file = SettingParser(valueName: "file", expected: "expected a file's path") { s in
        s.isEmpty ? nil : s
    }
}

/// One setting of `jobgov run` that is both a long option and a config-file key: its key, its typed default, its
/// parser and its help. The `@Option`/`@Flag` declarations of `jobgov run` take their help from here, the config
/// file its keys and checks, the governor its defaults.
public struct RunSetting<Value: Sendable>: Sendable {
    /// The long option without its dashes, which is also the config-file key.
    public let key: String
    public let defaultValue: Value
    public let parser: SettingParser<Value>
    /// The help text; `{default}` in it is replaced by the default value.
    private let helpTemplate: String

    public init(_ key: String, default defaultValue: Value, _ parser: SettingParser<Value>, help: String) {
        self.key = key
        self.defaultValue = defaultValue
        self.parser = parser
        self.helpTemplate = help
    }

    public var flag: String { "--" + key }

    public var help: String { helpTemplate.replacing("{default}", with: "\(defaultValue)") }

    /// The value of `text`, given as `source` (`--cpu-threshold`, or `cpu-threshold in FILE`); a message naming both
    /// and what to give when it is not one.
    public func value(_ text: String, from source: String) throws(CommandLineError) -> Value {
        guard let value = parser.parse(text) else {
            throw .invalidValue(option: source, value: text, reason: parser.expected)
        }
        return value
    }

    /// Without its type, for the config file and the checks that flags, keys and this table agree.
    public var entry: RunSettingEntry {
        let parser = self.parser
        return RunSettingEntry(key: key, valueName: parser.valueName, help: help, expected: parser.expected) {
            parser.parse($0) != nil
        }
    }
}

/// A setting of the table without its value type.
public struct RunSettingEntry: Sendable {
    public let key: String
    public let valueName: String?
    public let help: String
    public let expected: String
    public let accepts: @Sendable (String) -> Bool
}

/// The settings of `jobgov run` that the config file can hold too. One table: the flags' help and defaults, the
/// config-file keys, their checks and messages, and the governor's defaults all come from here.
public enum RunSettings {
    public static let memoryThreshold = RunSetting("memory-threshold", default: Percent(85), .percent, help: """
        Start no job while memory in use is above this share of the budget (default {default}); new jobs are also \
        admitted only while the running ones at their predicted peaks and the new ones fit in the budget.
        """)
    public static let freezeThreshold = RunSetting("freeze-threshold", default: Percent(95), .percent, help:
        "Freeze the newest job when memory in use passes this share of the budget (default {default}).")
    public static let cpuThreshold = RunSetting("cpu-threshold", default: Percent(90), .percent, help:
        "Start no more jobs than run (and at least one per CPU) while the build keeps this share of all CPUs busy (default {default}).")
    public static let ioLatency = RunSetting("io-latency", default: Milliseconds(100), .milliseconds, help:
        "Start no more jobs while block I/O takes longer than this per request (default {default}).")
    public static let fixedJobs = RunSetting("fixed-jobs", default: false, .switchedOn, help:
        "Keep the job count at -j (and `jobgov ctl jobs`): no governor, nothing withheld or frozen for memory.")
    public static let noHistory = RunSetting("no-history", default: false, .switchedOn, help:
        "Neither read nor write the memory history of this build (kept in ~/.local/state/jobgov).")
    public static let noRerun = RunSetting("no-rerun", default: false, .switchedOn, help: """
        Do not run make's recipes through jobgov-shell (make's SHELL, which runs the makefile's own shell): a recipe \
        the OOM killer ended is then not run again.
        """)
    public static let noSwap = RunSetting("no-swap", default: false, .switchedOn, help: """
        Do not page frozen jobs out. As root on a machine without swap, jobgov otherwise adds a compressed-RAM swap \
        (zram) for the build's frozen jobs and removes it at exit; existing swap is used as it is.
        """)
    public static let noBoost = RunSetting("no-boost", default: false, .switchedOn, help: """
        Never raise the CPU's performance. As root with cpufreq, jobgov otherwise sets the performance governor (or \
        energy preference) and turbo while the build is CPU-bound, and gives every value back after.
        """)
    public static let noGate = RunSetting("no-gate", default: false, .switchedOn, help: """
        Do not hold the jobs of a command that takes no jobserver tokens (xargs -P, parallel, a script that starts \
        workers with &) at their start until the governor's target allows them (the eBPF exec gate, as root); they \
        are then held back only by freezing. For a script whose background processes never end (a server beside \
        the build), each of which would otherwise keep a job's place.
        """)
    public static let traceEvents = RunSetting("trace-events", default: "", .file, help: """
        Write the build's timeline to this file when it ends, as Chrome trace-event JSON (open it in ui.perfetto.dev \
        or chrome://tracing): every job on a track per slot, its freezes, memory against the budget, the target.
        """)

    /// Every setting, in the order `--help` lists them.
    public static let all: [RunSettingEntry] = [
        memoryThreshold.entry, freezeThreshold.entry, cpuThreshold.entry, ioLatency.entry, fixedJobs.entry,
        traceEvents.entry, noHistory.entry, noRerun.entry, noSwap.entry, noBoost.entry, noGate.entry,
    ]
}

/// `85`, `0.5`: a number as people write it.
func plainNumber(_ value: Double) -> String {
    value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
}
