import Testing
@testable import JobgovCore

/// Rewrites `argv` for `kind` on a machine with `cpus` CPUs.
private func rewrite(_ argv: [String], _ kind: ClientKind, cpus: Int = 4) throws(CommandLineError) -> JobsOptionRewriter.Result {
    try JobsOptionRewriter(cpus: cpus).rewrite(argv, kind: kind)
}

private let make = ClientKind.gnuMake(nil)

@Suite("JobsOptionRewriter: GNU make")
struct MakeRewriteTests {
    @Test("jobs option spellings are removed and read", arguments: [
        (["make", "-j8"], 8),
        (["make", "-j", "8"], 8),
        (["make", "--jobs=8"], 8),
        (["make", "--jobs", "8"], 8),
        (["make", "-j12", "all"], 12),
    ])
    func spellings(argv: [String], jobs: Int) throws {
        let r = try rewrite(argv, make)
        #expect(r.jobs == .count(jobs))
        #expect(!r.argv.contains { $0.hasPrefix("-j") || $0.hasPrefix("--jobs") || $0 == "8" })
        #expect(r.argv.first == "make")
    }

    @Test func exactArgvAfterStripping() throws {
        #expect(try rewrite(["make", "-j", "8", "all"], make) == .init(argv: ["make", "all"], jobs: .count(8)))
        #expect(try rewrite(["make", "--jobs", "8", "install"], make)
            == .init(argv: ["make", "install"], jobs: .count(8)))
    }

    @Test func bareJIsUnlimited() throws {
        #expect(try rewrite(["make", "-j"], make) == .init(argv: ["make"], jobs: .unlimited))
        // A following word that is not a number is a target, not the value.
        #expect(try rewrite(["make", "-j", "all"], make) == .init(argv: ["make", "all"], jobs: .unlimited))
        #expect(try rewrite(["make", "--jobs", "check"], make) == .init(argv: ["make", "check"], jobs: .unlimited))
    }

    @Test func noJobsOptionIsUnspecifiedAndUntouched() throws {
        let argv = ["make", "-k", "-s", "all", "install"]
        #expect(try rewrite(argv, make) == .init(argv: argv, jobs: .unspecified))
    }

    @Test func clusterKeepsOtherFlags() throws {
        #expect(try rewrite(["make", "-kj8"], make) == .init(argv: ["make", "-k"], jobs: .count(8)))
        #expect(try rewrite(["make", "-skj", "4"], make) == .init(argv: ["make", "-sk"], jobs: .count(4)))
        #expect(try rewrite(["make", "-kj"], make) == .init(argv: ["make", "-k"], jobs: .unlimited))
    }

    @Test func optionTakingAValueSwallowsTheRestOfTheCluster() throws {
        // -C takes a value: "j8" is the directory, not a jobs option.
        #expect(try rewrite(["make", "-Cj8"], make) == .init(argv: ["make", "-Cj8"], jobs: .unspecified))
        #expect(try rewrite(["make", "-kCj8"], make) == .init(argv: ["make", "-kCj8"], jobs: .unspecified))
        #expect(try rewrite(["make", "-fj.mk"], make) == .init(argv: ["make", "-fj.mk"], jobs: .unspecified))
    }

    @Test func valueInTheNextWordIsKept() throws {
        #expect(try rewrite(["make", "-C", "dir", "-j4"], make)
            == .init(argv: ["make", "-C", "dir"], jobs: .count(4)))
        // The next word of -C / -f is its value even when it looks like a jobs option.
        #expect(try rewrite(["make", "-C", "-j4"], make) == .init(argv: ["make", "-C", "-j4"], jobs: .unspecified))
        #expect(try rewrite(["make", "-f", "j8", "-j2"], make) == .init(argv: ["make", "-f", "j8"], jobs: .count(2)))
        #expect(try rewrite(["make", "-f", "file", "all"], make)
            == .init(argv: ["make", "-f", "file", "all"], jobs: .unspecified))
        #expect(try rewrite(["make", "--directory", "-j3", "-j5"], make)
            == .init(argv: ["make", "--directory", "-j3"], jobs: .count(5)))
        #expect(try rewrite(["make", "--directory=sub", "-j5"], make)
            == .init(argv: ["make", "--directory=sub"], jobs: .count(5)))
    }

    @Test func variablesAndTargetsAreKept() throws {
        #expect(try rewrite(["make", "CC=gcc -j3", "VAR=value", "-j2", "all"], make)
            == .init(argv: ["make", "CC=gcc -j3", "VAR=value", "all"], jobs: .count(2)))
    }

    @Test func otherLongOptionsAreKept() throws {
        #expect(try rewrite(["make", "--jobserver-style=fifo", "--keep-going", "-j2"], make)
            == .init(argv: ["make", "--jobserver-style=fifo", "--keep-going"], jobs: .count(2)))
    }

    @Test func wordsAfterDoubleDashAreUntouched() throws {
        #expect(try rewrite(["make", "-j2", "--", "-j8", "--jobs=3"], make)
            == .init(argv: ["make", "--", "-j8", "--jobs=3"], jobs: .count(2)))
    }

    @Test func lastJobsOptionWins() throws {
        #expect(try rewrite(["make", "-j2", "-j6"], make).jobs == .count(6))
        #expect(try rewrite(["make", "-j6", "--jobs=3"], make).jobs == .count(3))
        #expect(try rewrite(["make", "-j4", "-j"], make).jobs == .unlimited)
        #expect(try rewrite(["make", "-j", "-j4"], make) == .init(argv: ["make"], jobs: .count(4)))
    }

    @Test func versionedMakeIsRewrittenToo() throws {
        #expect(try rewrite(["gmake", "-j3"], .gnuMake(MakeVersion(4, 4, 1))) == .init(argv: ["gmake"], jobs: .count(3)))
    }

    @Test func zeroJobs() {
        #expect(throws: CommandLineError.invalidJobs(option: "-j", value: "0", reason: "it must be at least 1")) {
            try rewrite(["make", "-j0"], make)
        }
    }

    @Test func negativeNextWordIsAnErrorNotATarget() {
        #expect(throws: CommandLineError.invalidJobs(option: "-j", value: "-3", reason: "it must be at least 1")) {
            try rewrite(["make", "-j", "-3"], make)
        }
    }

    @Test func notANumber() {
        #expect(throws: CommandLineError.invalidJobs(option: "--jobs", value: "abc", reason: "not a number")) {
            try rewrite(["make", "--jobs=abc"], make)
        }
        #expect(throws: CommandLineError.invalidJobs(option: "-j", value: "8x", reason: "not a number")) {
            try rewrite(["make", "-j8x"], make)
        }
    }

    @Test func tooMany() throws {
        let expected = CommandLineError.invalidJobs(
            option: "-j", value: "99999", reason: "jobgov hands out at most 4096 jobs")
        #expect(throws: expected) { try rewrite(["make", "-j", "99999"], make) }
        #expect(throws: expected) { try rewrite(["make", "-j99999"], make) }
        #expect(try rewrite(["make", "-j4096"], make).jobs == .count(4096))
    }

    @Test func emptyCommand() {
        #expect(throws: CommandLineError.noCommand) { try rewrite([], make) }
    }
}

@Suite("JobsOptionRewriter: ninja")
struct NinjaRewriteTests {
    @Test func attachedAndSeparate() throws {
        #expect(try rewrite(["ninja", "-j4"], .ninja) == .init(argv: ["ninja"], jobs: .count(4)))
        #expect(try rewrite(["ninja", "-j", "4", "all"], .ninja) == .init(argv: ["ninja", "all"], jobs: .count(4)))
    }

    @Test func zeroMeansUnlimited() throws {
        #expect(try rewrite(["ninja", "-j0"], .ninja) == .init(argv: ["ninja"], jobs: .unlimited))
        #expect(try rewrite(["ninja", "-j", "0"], .ninja) == .init(argv: ["ninja"], jobs: .unlimited))
    }

    @Test func optionValuesAreKept() throws {
        #expect(try rewrite(["ninja", "-C", "dir", "-j4"], .ninja) == .init(argv: ["ninja", "-C", "dir"], jobs: .count(4)))
        #expect(try rewrite(["ninja", "-C", "-j4"], .ninja) == .init(argv: ["ninja", "-C", "-j4"], jobs: .unspecified))
        #expect(try rewrite(["ninja", "-f", "j.ninja", "-k", "0"], .ninja)
            == .init(argv: ["ninja", "-f", "j.ninja", "-k", "0"], jobs: .unspecified))
        #expect(try rewrite(["ninja", "-vj2"], .ninja) == .init(argv: ["ninja", "-v"], jobs: .count(2)))
    }

    @Test func toolArgumentsAreUntouched() throws {
        #expect(try rewrite(["ninja", "-j2", "-t", "compdb", "-j8"], .ninja)
            == .init(argv: ["ninja", "-t", "compdb", "-j8"], jobs: .count(2)))
        #expect(try rewrite(["ninja", "-tclean", "-j8"], .ninja)
            == .init(argv: ["ninja", "-tclean", "-j8"], jobs: .unspecified))
        #expect(try rewrite(["ninja", "--", "-j8"], .ninja) == .init(argv: ["ninja", "--", "-j8"], jobs: .unspecified))
    }

    @Test func lastWins() throws {
        #expect(try rewrite(["ninja", "-j4", "-j0"], .ninja).jobs == .unlimited)
        #expect(try rewrite(["ninja", "-j0", "-j3"], .ninja).jobs == .count(3))
    }

    @Test func missingValue() {
        #expect(throws: CommandLineError.missingJobsValue(option: "-j")) { try rewrite(["ninja", "-j"], .ninja) }
        #expect(throws: CommandLineError.missingJobsValue(option: "-j")) { try rewrite(["ninja", "all", "-j"], .ninja) }
    }

    @Test func invalidValues() {
        #expect(throws: CommandLineError.invalidJobs(option: "-j", value: "x", reason: "not a number")) {
            try rewrite(["ninja", "-j", "x"], .ninja)
        }
        #expect(throws: CommandLineError.invalidJobs(option: "-j", value: "-2", reason: "it must be at least 1")) {
            try rewrite(["ninja", "-j", "-2"], .ninja)
        }
    }
}

@Suite("JobsOptionRewriter: cargo")
struct CargoRewriteTests {
    @Test func spellings() throws {
        #expect(try rewrite(["cargo", "build", "-j", "4"], .cargo) == .init(argv: ["cargo", "build"], jobs: .count(4)))
        #expect(try rewrite(["cargo", "build", "--jobs=4"], .cargo) == .init(argv: ["cargo", "build"], jobs: .count(4)))
        #expect(try rewrite(["cargo", "build", "--jobs", "5", "--release"], .cargo)
            == .init(argv: ["cargo", "build", "--release"], jobs: .count(5)))
        #expect(try rewrite(["cargo", "build", "-j6"], .cargo) == .init(argv: ["cargo", "build"], jobs: .count(6)))
    }

    @Test func negativeCountsBackFromCPUs() throws {
        #expect(try rewrite(["cargo", "build", "-j", "-1"], .cargo, cpus: 4)
            == .init(argv: ["cargo", "build"], jobs: .count(3)))
        #expect(try rewrite(["cargo", "build", "--jobs=-3"], .cargo, cpus: 4).jobs == .count(1))
    }

    @Test func negativeBeyondCPUsIsAnError() {
        #expect(throws: CommandLineError.invalidJobs(option: "-j", value: "-9", reason: "this machine has only 4 CPUs")) {
            try rewrite(["cargo", "build", "-j", "-9"], .cargo, cpus: 4)
        }
        #expect(throws: CommandLineError.invalidJobs(option: "--jobs", value: "-4", reason: "this machine has only 4 CPUs")) {
            try rewrite(["cargo", "build", "--jobs=-4"], .cargo, cpus: 4)
        }
    }

    @Test func defaultResetsToUnspecified() throws {
        #expect(try rewrite(["cargo", "build", "-j", "default"], .cargo) == .init(argv: ["cargo", "build"], jobs: .unspecified))
        #expect(try rewrite(["cargo", "build", "-j8", "--jobs=default"], .cargo).jobs == .unspecified)
    }

    @Test func wordsAfterDoubleDashAreUntouched() throws {
        #expect(try rewrite(["cargo", "test", "-j2", "--", "-j", "9", "--jobs=3"], .cargo)
            == .init(argv: ["cargo", "test", "--", "-j", "9", "--jobs=3"], jobs: .count(2)))
    }

    @Test func errors() {
        #expect(throws: CommandLineError.missingJobsValue(option: "--jobs")) { try rewrite(["cargo", "build", "--jobs"], .cargo) }
        #expect(throws: CommandLineError.invalidJobs(option: "-j", value: "0", reason: "it must be at least 1")) {
            try rewrite(["cargo", "build", "-j0"], .cargo)
        }
        #expect(throws: CommandLineError.invalidJobs(option: "-j", value: "lots", reason: "not a number")) {
            try rewrite(["cargo", "build", "-j", "lots"], .cargo)
        }
    }
}

@Suite("JobsOptionRewriter: cmake --build")
struct CMakeRewriteTests {
    @Test func spellings() throws {
        #expect(try rewrite(["cmake", "--build", "b", "-j", "4"], .cmakeBuild)
            == .init(argv: ["cmake", "--build", "b"], jobs: .count(4)))
        #expect(try rewrite(["cmake", "--build", "b", "--parallel=3"], .cmakeBuild)
            == .init(argv: ["cmake", "--build", "b"], jobs: .count(3)))
        #expect(try rewrite(["cmake", "--build", "b", "--parallel", "5", "--target", "all"], .cmakeBuild)
            == .init(argv: ["cmake", "--build", "b", "--target", "all"], jobs: .count(5)))
        #expect(try rewrite(["cmake", "--build", "b", "-j7"], .cmakeBuild)
            == .init(argv: ["cmake", "--build", "b"], jobs: .count(7)))
    }

    @Test func bareParallelIsTheNativeDefault() throws {
        #expect(try rewrite(["cmake", "--build", "b", "--parallel"], .cmakeBuild)
            == .init(argv: ["cmake", "--build", "b"], jobs: .unspecified))
        #expect(try rewrite(["cmake", "--build", "b", "-j4", "-j", "--target", "x"], .cmakeBuild)
            == .init(argv: ["cmake", "--build", "b", "--target", "x"], jobs: .unspecified))
    }

    @Test func nativeJobsOptionIsStripped() throws {
        #expect(try rewrite(["cmake", "--build", "b", "--", "-j8"], .cmakeBuild)
            == .init(argv: ["cmake", "--build", "b", "--"], jobs: .count(8)))
        #expect(try rewrite(["cmake", "--build", "b", "-j2", "--", "-kj8", "V=1"], .cmakeBuild)
            == .init(argv: ["cmake", "--build", "b", "--", "-k", "V=1"], jobs: .count(8)))
    }

    @Test func errors() {
        #expect(throws: CommandLineError.invalidJobs(option: "--parallel", value: "0", reason: "it must be at least 1")) {
            try rewrite(["cmake", "--build", "b", "--parallel=0"], .cmakeBuild)
        }
        #expect(throws: CommandLineError.invalidJobs(option: "-j", value: "0", reason: "it must be at least 1")) {
            try rewrite(["cmake", "--build", "b", "-j", "0"], .cmakeBuild)
        }
    }
}

@Suite("JobsOptionRewriter: other commands")
struct OtherRewriteTests {
    @Test func untouched() throws {
        let argv = ["./build.sh", "-j8", "--jobs=3", "-j", "2"]
        #expect(try rewrite(argv, .other) == .init(argv: argv, jobs: .unspecified))
        #expect(try rewrite(["cmake", "-S", ".", "-B", "b", "-j4"], .other).argv == ["cmake", "-S", ".", "-B", "b", "-j4"])
    }

    @Test func xargsMaxProcsIsTheCeilingAndStays() throws {
        let argv = ["xargs", "-0", "-P", "12", "-n", "1", "-a", "list", "./job.sh", "-P", "3"]
        #expect(try rewrite(argv, .other) == .init(argv: argv, jobs: .count(12)), "the command's own -P is its own")
        #expect(try rewrite(["/usr/bin/xargs", "-rP8", "cmd"], .other).jobs == .count(8))
        #expect(try rewrite(["xargs", "--max-procs=6", "cmd"], .other).jobs == .count(6))
        #expect(try rewrite(["xargs", "--max-procs", "5", "cmd"], .other).jobs == .count(5))
        #expect(try rewrite(["xargs", "-P", "0", "cmd"], .other).jobs == .unlimited)
        #expect(try rewrite(["xargs", "-I", "-P4", "echo"], .other).jobs == .unspecified, "-P4 is -I's value")
        #expect(try rewrite(["xargs", "-i-P4", "echo"], .other).jobs == .unspecified, "attached to -i")
        #expect(try rewrite(["xargs", "-n", "2", "echo", "-P", "9"], .other).jobs == .unspecified)
        #expect(throws: CommandLineError.invalidJobs(option: "-P", value: "x", reason: "not a number")) {
            try rewrite(["xargs", "-P", "x", "cmd"], .other)
        }
    }

    @Test func cpusBelowOneAreClamped() {
        #expect(JobsOptionRewriter(cpus: 0).cpus == 1)
        #expect(JobsOptionRewriter(cpus: -5).cpus == 1)
    }
}
