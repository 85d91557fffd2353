import Foundation
@testable import JobgovCLI
import JobgovCore
import Testing

/// The settings table (`RunSettings`) against what uses it: `jobgov run`'s flags and help, the config file's keys,
/// the choices handed to the supervisor and the governor's defaults.
@Suite("One settings table")
struct RunSettingsTests {
    /// `jobgov run --help` with its lines joined, so that wrapped help text compares as one line.
    private static let help = Jobgov.helpMessage(for: Run.self, columns: 2000)
        .split(whereSeparator: \.isWhitespace).joined(separator: " ")

    @Test("every setting is a flag of jobgov run, with the table's help and default")
    func flagsAgree() {
        for setting in RunSettings.all {
            #expect(Run.longOptions.contains("--" + setting.key), "--\(setting.key) is not an option of jobgov run")
            let text = setting.help.split(whereSeparator: \.isWhitespace).joined(separator: " ")
            #expect(Self.help.contains(text), "--\(setting.key)'s help is not the table's: \(text)")
            if let name = setting.valueName {
                #expect(Self.help.contains("--\(setting.key) <\(name)>"), "--\(setting.key) takes <\(name)>")
            }
        }
        #expect(Self.help.contains("(default 85%)") && Self.help.contains("(default 100 ms)"))
    }

    @Test("the config file takes exactly the table's keys, and the fan's (`jobgov fan`'s, checked by FanSettings)")
    func configKeysAgree() {
        #expect(ConfigFile.keys == Set(RunSettings.all.map(\.key)).union(FanSettings.configKeys))
        #expect(Set(RunSettings.all.map(\.key)).isDisjoint(with: FanSettings.configKeys))
        #expect(Set(RunSettings.all.map(\.key)).count == RunSettings.all.count, "a key twice")
    }

    @Test("the defaults are the table's, typed, in the choices and in the governor")
    func defaultsAgree() throws {
        let run = try Run.parse(["make"])
        let choices = try #require(try run.governorChoices(env: [:]))
        #expect(choices.memoryThreshold == Percent(85) && choices.freezeThreshold == Percent(95))
        #expect(choices.cpuThreshold == Percent(90) && choices.ioLatency == Milliseconds(100))
        #expect(choices.history && choices.rerun && choices.swap && choices.traceEventsFile == nil)
        let governor = GovernorSettings(maxJobs: 4, budget: 1 << 30, cpus: 2)
        #expect(governor.memoryThreshold == RunSettings.memoryThreshold.defaultValue.share)
        #expect(governor.freezeThreshold == RunSettings.freezeThreshold.defaultValue.share)
        #expect(governor.cpuThreshold == RunSettings.cpuThreshold.defaultValue.share)
        #expect(governor.ioLatencyThreshold == RunSettings.ioLatency.defaultValue.seconds)
    }

    @Test("a flag and the same key in the config file give the same typed value; the flag wins")
    func flagAndFileAgree() throws {
        let dir = NSTemporaryDirectory() + "jobgov-settings-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = dir + "/config"
        try """
            memory-threshold = 70
            freeze-threshold = 80%
            cpu-threshold = 50
            io-latency = 250ms
            no-history = true
            no-rerun = false
            no-swap = true
            trace-events = /tmp/t.json
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let fromFile = try #require(try Run.parse(["--config", config, "make"]).governorChoices(env: [:]))
        let fromFlags = try #require(try Run.parse([
            "--memory-threshold", "70%", "--freeze-threshold", "80", "--cpu-threshold", "50", "--io-latency", "250",
            "--no-history", "--no-swap", "--trace-events", "/tmp/t.json", "make",
        ]).governorChoices(env: [:]))
        for c in [fromFile, fromFlags] {
            #expect(c.memoryThreshold == Percent(70) && c.freezeThreshold == Percent(80) && c.cpuThreshold == Percent(50))
            #expect(c.ioLatency.seconds == 0.25)
            #expect(!c.history && c.rerun && !c.swap && c.traceEventsFile == "/tmp/t.json")
        }
        let both = try #require(try Run.parse(["--config", config, "--cpu-threshold", "60", "make"]).governorChoices(env: [:]))
        #expect(both.cpuThreshold == Percent(60) && both.memoryThreshold == Percent(70))
    }

    @Test("a bad value names where it came from and what to give, from the table's message")
    func messagesAgree() throws {
        #expect(throws: CommandLineError.invalidValue(option: "--cpu-threshold", value: "0",
                                                      reason: RunSettings.cpuThreshold.parser.expected)) {
            try Run.parse(["--cpu-threshold", "0", "make"]).governorChoices(env: [:])
        }
        #expect(throws: CommandLineError.invalidValue(option: "--io-latency", value: "soon",
                                                      reason: RunSettings.ioLatency.parser.expected)) {
            try Run.parse(["--io-latency", "soon", "make"]).governorChoices(env: [:])
        }
        for setting in RunSettings.all where !setting.accepts("lots") {
            do {
                _ = try ConfigFile.parse("\(setting.key) = lots\n", path: "c")
                Issue.record("\(setting.key) = lots accepted")
            } catch {
                #expect(error.description == "c:1: \(setting.key) = lots: \(setting.expected)")
            }
        }
    }
}
