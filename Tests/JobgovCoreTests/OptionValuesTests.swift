import Testing
@testable import JobgovCore

/// Option values parsed from what the user typed, each mistake with a message that says what to give.
@Suite("Option values")
struct OptionValuesTests {
    @Test func processIDs() throws {
        #expect(try OptionValues.processID("4242", option: "--pid") == 4242)
        #expect(try OptionValues.processID(" 1 ", option: "--pid") == 1)
        for bad in ["0", "-5", "abc", "12x", "", "99999999999"] {
            #expect(throws: CommandLineError.self, "\(bad)") { try OptionValues.processID(bad, option: "--pid") }
        }
        #expect(throws: CommandLineError.invalidValue(
            option: "--pid", value: "-5",
            reason: "give the process id of a running jobgov, a whole number above 0 (`pgrep -a jobgov` lists them)")) {
            try OptionValues.processID("-5", option: "--pid")
        }
    }

    @Test func seconds() throws {
        #expect(try OptionValues.seconds("0.5", option: "--interval", range: 0.05...3600) == 0.5)
        #expect(try OptionValues.seconds("2s", option: "--interval", range: 0.05...3600) == 2)
        #expect(try OptionValues.seconds("3600", option: "--interval", range: 0.05...3600) == 3600)
        for bad in ["0", "-1", "0.01", "3601", "soon", "nan", "inf", ""] {
            #expect(throws: CommandLineError.self, "\(bad)") {
                try OptionValues.seconds(bad, option: "--interval", range: 0.05...3600)
            }
        }
        do {
            _ = try OptionValues.seconds("0", option: "--interval", range: 0.05...3600)
        } catch {
            #expect(error.description == "invalid value '0' for --interval: give seconds from 0.05 to 3600, e.g. 0.5")
        }
    }

    @Test func counts() throws {
        #expect(try OptionValues.positiveCount("10", option: "--count", what: "updates") == 10)
        #expect(throws: CommandLineError.invalidValue(option: "--count", value: "-1", reason: "the count must be at least 1")) {
            try OptionValues.positiveCount("-1", option: "--count", what: "updates")
        }
        #expect(throws: CommandLineError.invalidValue(option: "--count", value: "0", reason: "the count must be at least 1")) {
            try OptionValues.positiveCount("0", option: "--count", what: "updates")
        }
        #expect(throws: CommandLineError.invalidValue(option: "--count", value: "x",
                                                      reason: "give a whole number of updates, e.g. 10")) {
            try OptionValues.positiveCount("x", option: "--count", what: "updates")
        }
    }

    @Test func cpus() throws {
        #expect(try OptionValues.cpus("1.5", option: "--cpu-max", maximum: 4096) == 1.5)
        #expect(try OptionValues.cpus("0.01", option: "--cpu-max", maximum: 4096) == 0.01)
        for bad in ["0", "0.001", "-2", "5000", "abc", "inf"] {
            #expect(throws: CommandLineError.self, "\(bad)") { try OptionValues.cpus(bad, option: "--cpu-max", maximum: 4096) }
        }
    }

    @Test("did you mean", arguments: [
        ("--memory-budge", "--memory-budget"),
        ("--memory-budgte", "--memory-budget"),
        ("--no-swp", "--no-swap"),
        ("--summary", "--summary-json"),     // the only option it begins
        ("--trace=x.json", "--trace"),       // a joined value is ignored
        ("--tarce", "--trace"),
        ("--fixed-job", "--fixed-jobs"),
    ])
    func suggestions(typed: String, expected: String) {
        let known = ["--jobs", "--jobserver-style", "--quiet", "--cgroup", "--no-cgroup", "--cpu-max", "--memory-budget",
                     "--fixed-jobs", "--memory-threshold", "--freeze-threshold", "--cpu-threshold", "--io-latency",
                     "--trace", "--summary-json", "--no-history", "--no-rerun", "--no-swap", "--config", "--help"]
        #expect(OptionValues.suggestion(for: typed, among: known) == expected)
    }

    @Test func noSuggestionForSomethingElse() {
        let known = ["--memory-budget", "--memory-threshold", "--no-swap", "--jobs"]
        #expect(OptionValues.suggestion(for: "--frobnicate", among: known) == nil)
        #expect(OptionValues.suggestion(for: "--memory", among: known) == nil, "two options begin with it")
        #expect(OptionValues.suggestion(for: "-x", among: known) == nil)
        #expect(OptionValues.suggestion(for: "make", among: known) == nil)
    }

    @Test func editDistance() {
        #expect(OptionValues.editDistance("", "abc") == 3)
        #expect(OptionValues.editDistance("kitten", "sitting") == 3)
        #expect(OptionValues.editDistance("--no-swp", "--no-swap") == 1)
        #expect(OptionValues.editDistance("same", "same") == 0)
    }

    @Test("messages say what to give")
    func messages() {
        #expect(CommandLineError.unknownOption("--frob", suggestion: nil).description
            == "unknown jobgov option '--frob': jobgov's own options come before the command (`jobgov --help` lists "
            + "them); to run a command whose name starts with '-', put `--` before it: `jobgov -- --frob ...`")
        #expect(CommandLineError.unknownOption("--memory-budge=1G", suggestion: "--memory-budget").description
            .hasPrefix("unknown jobgov option '--memory-budge' (did you mean '--memory-budget'?): "))
        #expect(CommandLineError.invalidJobs(option: "ctl jobs", value: "-1", reason: "it must be at least 1").description
            == "invalid job count '-1' for ctl jobs: it must be at least 1; give a whole number from 1 to 4096, e.g. `jobgov ctl jobs 8`")
        #expect(CommandLineError.invalidJobs(option: "-j", value: "0", reason: "it must be at least 1").description
            .hasSuffix("e.g. -j8"))
        #expect(CommandLineError.invalidJobs(option: "--parallel", value: "0", reason: "it must be at least 1").description
            .hasSuffix("e.g. --parallel 8"))
    }

    @Test("config values are checked where the line is known")
    func configLines() {
        do {
            _ = try ConfigFile.parse("# thresholds\nmemory-threshold = 80\nfreeze-threshold = lots\n", path: "/etc/j")
            Issue.record("accepted")
        } catch {
            #expect(error.description
                == "/etc/j:3: freeze-threshold = lots: expected a percentage above 0 and at most 100, such as 85")
        }
        do {
            _ = try ConfigFile.parse("io-latency = 0\n", path: "c")
            Issue.record("accepted")
        } catch {
            #expect(error.description.hasPrefix("c:1: io-latency = 0: expected milliseconds above 0"))
        }
        #expect((try? ConfigFile.parse("io-latency = 100ms\ncpu-threshold = 90%\n", path: "c")) == [
            "io-latency": "100ms", "cpu-threshold": "90%",
        ])
    }
}
