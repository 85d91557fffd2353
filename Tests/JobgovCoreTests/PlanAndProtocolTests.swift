import Testing
import JobgovCore

@Suite("MakeVersion")
struct MakeVersionTests {
    @Test func parsesGNUMakeFirstLine() throws {
        let v441 = try #require(MakeVersion(versionOutput: "GNU Make 4.4.1\nBuilt for x86_64-pc-linux-gnu\nCopyright (C) 1988-2023"))
        #expect(v441 == MakeVersion(4, 4, 1))
        #expect(v441.description == "4.4.1")
        #expect(v441.understandsFifo)

        let v43 = try #require(MakeVersion(versionOutput: "GNU Make 4.3\nBuilt for x86_64-pc-linux-gnu\n"))
        #expect(v43 == MakeVersion(4, 3, 0))
        #expect(!v43.understandsFifo)

        let v4290 = try #require(MakeVersion(versionOutput: "GNU Make 4.2.90"))
        #expect(v4290 == MakeVersion(4, 2, 90))
        #expect(!v4290.understandsFifo)

        let v44 = try #require(MakeVersion(versionOutput: "GNU Make 4.4"))
        #expect(v44 == MakeVersion(4, 4))
        #expect(v44.understandsFifo)
    }

    @Test("non-GNU or garbage output is nil", arguments: [
        "", "garbage", "make: unknown option -- -", "bmake 20200710", "GNU Make", "GNU Make x.y",
        "GNU Make 4", "Built for x86_64\nGNU Make 4.4.1",
    ])
    func rejects(output: String) {
        #expect(MakeVersion(versionOutput: output) == nil)
    }

    @Test func ordering() {
        #expect(MakeVersion(4, 3) < MakeVersion(4, 4))
        #expect(MakeVersion(4, 4) < MakeVersion(4, 4, 1))
        #expect(MakeVersion(3, 99, 99) < MakeVersion(4, 0))
        #expect(!(MakeVersion(4, 4) < MakeVersion(4, 4)))
        #expect(MakeVersion(5, 0).understandsFifo)
        #expect(!MakeVersion(4, 3, 99).understandsFifo)
    }
}

@Suite("ClientKind.detect")
struct ClientKindTests {
    @Test func detectsByBaseName() {
        #expect(ClientKind.detect(argv: ["make", "-j8"]) == .gnuMake(nil))
        #expect(ClientKind.detect(argv: ["/usr/bin/gmake"]) == .gnuMake(nil))
        #expect(ClientKind.detect(argv: ["gnumake"]) == .gnuMake(nil))
        #expect(ClientKind.detect(argv: ["ninja"]) == .ninja)
        #expect(ClientKind.detect(argv: ["/opt/bin/ninja-build", "-C", "b"]) == .ninja)
        #expect(ClientKind.detect(argv: ["cargo", "build"]) == .cargo)
        #expect(ClientKind.detect(argv: ["cmake", "--build", "b"]) == .cmakeBuild)
        #expect(ClientKind.detect(argv: ["/usr/bin/cmake", "--build=b"]) == .cmakeBuild)
    }

    @Test func everythingElseIsOther() {
        #expect(ClientKind.detect(argv: ["cmake", "-S", ".", "-B", "b"]) == .other)
        #expect(ClientKind.detect(argv: ["cmake"]) == .other)
        #expect(ClientKind.detect(argv: ["./build.sh", "make"]) == .other)
        #expect(ClientKind.detect(argv: ["makepkg"]) == .other)
        #expect(ClientKind.detect(argv: []) == .other)
    }

    @Test func needsMakeVersion() {
        #expect(ClientKind.gnuMake(nil).needsMakeVersion)
        #expect(!ClientKind.gnuMake(MakeVersion(4, 3)).needsMakeVersion)
        #expect(!ClientKind.ninja.needsMakeVersion)
        #expect(!ClientKind.other.needsMakeVersion)
    }
}

@Suite("RunPlan")
struct RunPlanTests {
    private static let make43 = MakeVersion(4, 3)
    private static let make44 = MakeVersion(4, 4)

    private func plan(
        _ command: [String], jobs: Int? = nil, style: JobserverStyle? = nil,
        commandMake: MakeVersion? = nil, pathMake: MakeVersion? = nil, cmakeNinja: Bool = false, cpus: Int = 4
    ) throws(CommandLineError) -> RunPlan {
        try RunPlan.make(
            command: command, jobsOverride: jobs, styleOverride: style,
            facts: .init(commandMakeVersion: commandMake, pathMakeVersion: pathMake, cmakeUsesNinja: cmakeNinja, cpus: cpus))
    }

    @Test func make43GetsPipes() throws {
        let p = try plan(["make", "-j8", "all"], commandMake: Self.make43)
        #expect(p.style == .pipe)
        #expect(p.kind == .gnuMake(Self.make43))
        #expect(p.argv == ["make", "all"])
        #expect(p.jobsRequest == .count(8))
        #expect(p.ceiling == 8)
    }

    @Test func make44GetsFifo() throws {
        #expect(try plan(["make"], commandMake: Self.make44).style == .fifo)
        #expect(try plan(["make"], commandMake: MakeVersion(4, 4, 1), pathMake: Self.make43).style == .fifo)
    }

    @Test func unknownMakeVersionGetsPipes() throws {
        #expect(try plan(["make"]).style == .pipe)
        // The PATH make's version says nothing about the command's own make.
        #expect(try plan(["/opt/make/bin/make"], pathMake: Self.make44).style == .pipe)
    }

    @Test func ninjaAndCargoGetFifo() throws {
        #expect(try plan(["ninja"], pathMake: Self.make43).style == .fifo)
        #expect(try plan(["cargo", "build"], pathMake: Self.make43).style == .fifo)
    }

    @Test func cmakeFollowsItsGenerator() throws {
        #expect(try plan(["cmake", "--build", "b"], pathMake: Self.make43, cmakeNinja: true).style == .fifo)
        #expect(try plan(["cmake", "--build", "b"], pathMake: Self.make43).style == .pipe)
        #expect(try plan(["cmake", "--build", "b"], pathMake: Self.make44).style == .fifo)
        #expect(try plan(["cmake", "--build", "b"]).style == .pipe)
    }

    @Test func otherFollowsThePathMake() throws {
        #expect(try plan(["./build.sh"], pathMake: Self.make43).style == .pipe)
        #expect(try plan(["./build.sh"], pathMake: Self.make44).style == .fifo)
        #expect(try plan(["./build.sh"]).style == .pipe)
    }

    @Test func styleOverrideWins() throws {
        #expect(try plan(["make"], style: .fifo, commandMake: Self.make43).style == .fifo)
        #expect(try plan(["ninja"], style: .pipe).style == .pipe)
    }

    @Test func ceilingRules() throws {
        #expect(try plan(["make"], cpus: 6).ceiling == 6)
        #expect(try plan(["make"], cpus: 6).jobsRequest == .unspecified)
        #expect(try plan(["make", "-j"], cpus: 6).ceiling == 24)
        #expect(try plan(["make", "-j"], cpus: 6).jobsRequest == .unlimited)
        #expect(try plan(["ninja", "-j0"], cpus: 3).ceiling == 12)
        #expect(try plan(["make", "-j"], cpus: 2000).ceiling == JobsRequest.maximumJobs)
        #expect(try plan(["make", "-j5"], cpus: 64).ceiling == 5)
    }

    @Test func overrideWinsOverTheToolsJobs() throws {
        let p = try plan(["make", "-j8"], jobs: 3)
        #expect(p.ceiling == 3)
        #expect(p.jobsRequest == .count(3))
        #expect(p.argv == ["make"])  // the tool's -j is still removed
        #expect(try plan(["make", "-j"], jobs: 2, cpus: 8).ceiling == 2)
    }

    @Test func requestCeilingClampsCPUs() {
        #expect(JobsRequest.unspecified.ceiling(cpus: 0) == 1)
        #expect(JobsRequest.unlimited.ceiling(cpus: -1) == 4)
        #expect(JobsRequest.count(7).ceiling(cpus: 1) == 7)
    }

    @Test func errors() {
        #expect(throws: CommandLineError.noCommand) { try plan([]) }
        #expect(throws: CommandLineError.noCommand) { try plan([""]) }
        #expect(throws: CommandLineError.invalidJobs(option: "-j", value: "0", reason: "it must be at least 1")) {
            try plan(["make", "-j0"])
        }
    }

    @Test func environment() throws {
        let p = try plan(["make", "-j8"], commandMake: Self.make44)
        let base = [
            "PATH": "/usr/bin:/bin",
            "MAKEFLAGS": "k -j2 --jobserver-auth=3,4",
            "MFLAGS": "-k -j2",
            "CMAKE_BUILD_PARALLEL_LEVEL": "16",
        ]
        let env = p.environment(base: base, auth: "fifo:/run/j/fifo", controlPath: "/run/j/control", fifoPath: "/run/j/fifo")
        #expect(env["MAKEFLAGS"] == "k -j8 --jobserver-auth=fifo:/run/j/fifo")
        #expect(env["CARGO_MAKEFLAGS"] == " -j8 --jobserver-auth=fifo:/run/j/fifo")
        #expect(env["MFLAGS"] == nil)
        #expect(env["CMAKE_BUILD_PARALLEL_LEVEL"] == nil)
        #expect(env.keys.contains("MFLAGS") == false)
        #expect(env["JOBGOV_CONTROL"] == "/run/j/control")
        #expect(env["JOBGOV_FIFO"] == "/run/j/fifo")
        #expect(env["JOBGOV_JOBSERVER_AUTH"] == "fifo:/run/j/fifo")
        #expect(env["PATH"] == "/usr/bin:/bin")
        #expect(env.count == 6)
    }

    @Test func environmentMergesExistingCargoMakeflags() throws {
        let p = try plan(["cargo", "build", "-j", "3"])
        let env = p.environment(
            base: ["CARGO_MAKEFLAGS": " -j9 --jobserver-fds=7,8 --jobserver-auth=7,8"],
            auth: "5,6", controlPath: "/c", fifoPath: "/f")
        #expect(env["CARGO_MAKEFLAGS"] == " -j3 --jobserver-auth=5,6")
        #expect(env["MAKEFLAGS"] == " -j3 --jobserver-auth=5,6")
    }

    @Test func cmakeBuildDirectory() {
        #expect(RunPlan.cmakeBuildDirectory(["cmake", "--build", "out", "-j4"]) == "out")
        #expect(RunPlan.cmakeBuildDirectory(["cmake", "--build=out2"]) == "out2")
        #expect(RunPlan.cmakeBuildDirectory(["cmake", "--build"]) == nil)
        #expect(RunPlan.cmakeBuildDirectory(["cmake", "-S", "."]) == nil)
    }
}

@Suite("Control protocol")
struct ControlProtocolTests {
    @Test func parsesRequests() {
        #expect(ControlRequest.parse("jobs 4") == .success(.setJobs(4)))
        #expect(ControlRequest.parse("  jobs   12 ") == .success(.setJobs(12)))
        #expect(ControlRequest.parse("status") == .success(.status))
    }

    @Test("bad requests fail", arguments: ["jobs 0", "jobs -1", "jobs x", "jobs", "jobs 4 5", "jobs 5000", "bogus", "", "status now", "STATUS"])
    func rejects(line: String) {
        guard case .failure(let error) = ControlRequest.parse(line) else {
            Issue.record("'\(line)' was accepted")
            return
        }
        #expect(!error.message.isEmpty)
    }

    @Test func errorMessages() {
        #expect(ControlRequest.parse("jobs 0") == .failure(ControlProtocolError(
            message: CommandLineError.invalidJobs(option: "jobs", value: "0", reason: "it must be at least 1").description)))
        guard case .failure(let error) = ControlRequest.parse("bogus") else {
            Issue.record("bogus was accepted")
            return
        }
        #expect(error.message.contains("'bogus'"))
    }

    @Test func lineRoundTrips() {
        for request in [ControlRequest.setJobs(7), .status] {
            #expect(ControlRequest.parse(request.line) == .success(request))
        }
        #expect(ControlRequest.setJobs(7).line == "jobs 7")
    }
}

@Suite("PoolStatus and JSON")
struct PoolStatusTests {
    private func status(command: String) -> PoolStatus {
        PoolStatus(
            pid: 4242, command: command, style: "fifo", auth: "fifo:/run/jobgov-4242-abcdef/fifo", jobs: 6, ceiling: 8,
            tokensCreated: 5, tokensInPool: 2, tokensOutstanding: 3, peakOutstanding: 5, tokensRecreated: 1,
            tokensAbsorbed: 4, elapsedSeconds: 12.3456)
    }

    @Test func jsonRoundTrip() throws {
        let command = #"make "CFLAGS=-DX=\"1\"" C:\dir, {a:b}"#
        var s = status(command: command)
        s.cgroup = "/sys/fs/cgroup/unified/jobgov-4242"
        s.frozen = true
        s.memoryBudget = 3 << 30
        s.memoryBudgetSource = "cgroup limit"
        s.pressureEvents = 7
        let read = try PoolStatus.decode(json: s.json)
        var expected = s
        expected.elapsedSeconds = 12.346  // rounded to milliseconds on the wire
        #expect(read == expected)
    }

    /// The keys, their values' forms and one line are what scripts (and older `jobgov ctl`) read.
    @Test func jsonIsOneLineWithStableKeys() {
        var s = status(command: "make -j8")
        s.cgroup = "/sys/fs/cgroup/jobgov-4242"
        #expect(s.json == #"{"auth":"fifo:/run/jobgov-4242-abcdef/fifo","ceiling":8,"cgroup":"/sys/fs/cgroup/jobgov-4242","cgroup_v1_memory":"","command":"make -j8","elapsed_seconds":12.346,"frozen":false,"jobs":6,"memory_budget":0,"memory_budget_source":"","peak_outstanding":5,"pid":4242,"pressure_events":0,"style":"fifo","tokens_absorbed":4,"tokens_created":5,"tokens_in_pool":2,"tokens_outstanding":3,"tokens_recreated":1}"#)
    }

    /// A command can contain a newline or a tab (`jobgov -- sh -c 'a<newline>b'`) or a terminal escape.
    @Test func jsonRoundTripWithControlCharacters() throws {
        let command = "sh -c 'make\n\tall' \u{1b}[0m"
        let json = status(command: command).json
        #expect(!json.contains("\n") && !json.contains("\u{1b}"))
        #expect(try PoolStatus.decode(json: json).command == command)
    }

    /// A reply without the later fields (cgroup and on) reads with their defaults.
    @Test func decodeFillsLaterFields() throws {
        let old = #"{"pid":1,"command":"make","style":"pipe","auth":"3,4","jobs":2,"ceiling":4,"tokens_created":1,"tokens_in_pool":1,"tokens_outstanding":0,"peak_outstanding":1,"tokens_recreated":0,"tokens_absorbed":0,"elapsed_seconds":1.5}"#
        let s = try PoolStatus.decode(json: old)
        #expect(s.jobs == 2 && s.auth == "3,4" && s.elapsedSeconds == 1.5 && s.cgroup == "" && !s.frozen)
    }

    @Test func decodeRejectsNonStatus() {
        for reply in ["", "error unknown request", #"{"a":1}"#, #"{"pid":"x"}"#] {
            #expect(throws: ControlProtocolError.self) { try PoolStatus.decode(json: reply) }
        }
    }

    @Test func quoteEscapes() {
        #expect(JSONObjectWriter.quote("plain") == #""plain""#)
        #expect(JSONObjectWriter.quote("a\"b\\c") == #""a\"b\\c""#)
        #expect(JSONObjectWriter.quote("l1\nl2\tx\r") == #""l1\nl2\tx\r""#)
        #expect(JSONObjectWriter.quote("\u{01}") == #""\u0001""#)
        #expect(JSONObjectWriter.quote("\u{1b}[0m") == #""\u001b[0m""#)
        #expect(JSONObjectWriter.quote("\u{1f}\u{00}") == #""\u001f\u0000""#)
        // DEL and non-ASCII need no escape in JSON.
        #expect(JSONObjectWriter.quote("\u{7f}é") == "\"\u{7f}é\"")
    }

    @Test func writerValues() {
        var w = JSONObjectWriter()
        #expect(w.text == "{}")
        w.add("s", "x")
        w.add("i", -3)
        w.add("d", 2.0)
        w.add("r", 0.0004)
        w.add("b", true)
        w.add("k\"ey", false)
        #expect(w.text == #"{"s":"x","i":-3,"d":2.0,"r":0.0,"b":true,"k\"ey":false}"#)
    }
}

@Suite("ExitStatus")
struct ExitStatusTests {
    @Test func shellStatus() {
        #expect(ExitStatus.exited(0).shellStatus == 0)
        #expect(ExitStatus.exited(2).shellStatus == 2)
        #expect(ExitStatus.signaled(9).shellStatus == 137)
        #expect(ExitStatus.signaled(2).shellStatus == 130)
        #expect(ExitStatus.signaled(15).shellStatus == 143)
    }

    @Test func decodesWaitStatuses() {
        #expect(ExitStatus(waitStatus: Int32(0)) == .exited(0))
        #expect(ExitStatus(waitStatus: Int32(2 << 8)) == .exited(2))
        #expect(ExitStatus(waitStatus: Int32(9)) == .signaled(9))
        #expect(ExitStatus(waitStatus: Int32(11 | 0x80)) == .signaled(11))  // SIGSEGV with a core dump
        #expect(ExitStatus(waitStatus: Int32(0x137f)) == nil)  // stopped by SIGSTOP
        #expect(ExitStatus(waitStatus: Int32(0xffff)) == nil)  // continued
        #expect(ExitStatus(waitStatus: UInt32(3 << 8)) == .exited(3))
        #expect(ExitStatus.signaled(9).wasKilled && !ExitStatus.signaled(15).wasKilled && !ExitStatus.exited(9).wasKilled)
        for status in [ExitStatus.exited(0), .exited(255), .signaled(9), .signaled(64)] {
            #expect(ExitStatus(waitStatus: status.waitStatus) == status)
        }
    }

    @Test func rerunRequestCarriesADecodedStatus() {
        #expect(ControlRequest.parse("rerun 42 256") == .success(.rerun(42, status: .exited(1))))
        #expect(ControlRequest.parse("rerun 42 137") == .success(.rerun(42, status: .signaled(9))))
        #expect(ControlRequest.parse("rerun 42") == .success(.rerun(42)))
        #expect(ControlRequest.rerun(42, status: .exited(1)).line == "rerun 42 256")
        guard case .failure(let e) = ControlRequest.parse("rerun 42 4991") else {  // 0x137f: stopped, not ended
            Issue.record("a stopped status was taken")
            return
        }
        #expect(e.message.contains("ended process"))
    }
}

@Suite("Memory sizes and budgets")
struct MemorySizeTests {
    @Test func parsesSizes() throws {
        #expect(try MemorySize.parse("8G", option: "-m", percentOf: nil) == 8 << 30)
        #expect(try MemorySize.parse("512M", option: "-m", percentOf: nil) == 512 << 20)
        #expect(try MemorySize.parse("1.5GiB", option: "-m", percentOf: nil) == 3 << 29)
        #expect(try MemorySize.parse("50%", option: "-m", percentOf: 16 << 30) == 8 << 30)
        #expect(try MemorySize.parse("33554432", option: "-m", percentOf: nil) == 32 << 20)
    }

    @Test func rejectsMistakes() {
        for bad in ["", "lots", "0", "-1G", "1K", "150%", "0%", "8X"] {
            #expect(throws: CommandLineError.self, "\(bad)") { try MemorySize.parse(bad, option: "-m", percentOf: 16 << 30) }
        }
        #expect(throws: CommandLineError.self) { try MemorySize.parse("50%", option: "-m", percentOf: nil) }
    }

    @Test func reserveIsATenthWithinBounds() {
        #expect(MemorySize.reserve(forBudget: 100 << 20) == 64 << 20)
        #expect(MemorySize.reserve(forBudget: 4 << 30) == (4 << 30) / 10)
        #expect(MemorySize.reserve(forBudget: 64 << 30) == 1 << 30)
    }

    @Test func derivedBudget() {
        let sixteen: UInt64 = 16 << 30
        #expect(MemoryBudget.derive(totalMemory: sixteen, cgroupLimit: nil) == MemoryBudget(bytes: (15 << 30) - (32 << 20), source: "total memory"))
        #expect(MemoryBudget.derive(totalMemory: sixteen, cgroupLimit: 4 << 30).source == "cgroup limit")
        let four = MemoryBudget.derive(totalMemory: sixteen, cgroupLimit: 4 << 30).bytes
        #expect(four == (4 << 30) - (4 << 30) / 10 - (32 << 20))
        // The hard limit (budget + reserve) leaves room below the cgroup's own limit for jobgov and the build tool.
        #expect(four + MemorySize.reserve(forBudget: four) <= (4 << 30) - (32 << 20))
        let small = MemoryBudget.derive(totalMemory: sixteen, cgroupLimit: 256 << 20).bytes
        #expect(small + MemorySize.reserve(forBudget: small) <= (256 << 20) - (32 << 20))
        #expect(MemoryBudget.derive(totalMemory: sixteen, cgroupLimit: 32 << 30).source == "total memory")
    }

    @Test func formats() {
        #expect(MemorySize.format(512) == "512 B")
        #expect(MemorySize.format(8 << 30) == "8 GiB")
        #expect(MemorySize.format(3 << 29) == "1.5 GiB")
    }
}

@Suite("Monitor frame")
struct MonitorFrameTests {
    private func sample(time: Double, memStall: UInt64, cpuBusy: UInt64, ioRead: UInt64) -> Sample {
        let line = { (t: UInt64) in PressureLine(avg10: 0, avg60: 0, avg300: 0, totalMicroseconds: t) }
        var s = Sample(
            time: time,
            systemPressure: [.memory: Pressure(some: line(memStall), full: line(memStall / 2))],
            cgroupPressure: [.memory: Pressure(some: line(memStall * 2))],
            cpu: CPUTimes(user: cpuBusy, nice: 0, system: 0, idle: 1000 + cpuBusy, iowait: 0, irq: 0, softirq: 0, steal: 0))
        s.cgroupIO = ["8:0": CgroupIO(device: "8:0", readBytes: ioRead, writeBytes: 0, readOperations: 0, writeOperations: 0)]
        return s
    }

    @Test func ratesComeFromTotals() {
        let frame = MonitorFrame(previous: sample(time: 10, memStall: 0, cpuBusy: 0, ioRead: 0),
                                 current: sample(time: 12, memStall: 500_000, cpuBusy: 1000, ioRead: 4 << 20))
        #expect(frame.systemStall[.memory]?.some == 0.25, "0.5 s of stall in 2 s")
        #expect(frame.systemStall[.memory]?.full == 0.125)
        #expect(frame.cgroupStall[.memory]?.some == 0.5)
        #expect(frame.cpuBusy == 0.5)
        #expect(frame.cgroupReadBytesPerSecond == Double(2 << 20))
        #expect(frame.jsonLine.contains("\"psi_memory_some\":0.25"))
        #expect(frame.plainLine.contains("memory 25.0%/12.5%"))
        #expect(frame.screen.contains("cgroup io"))
    }

    @Test func aZeroIntervalGivesNoRates() {
        let s = sample(time: 5, memStall: 100, cpuBusy: 10, ioRead: 10)
        let frame = MonitorFrame(previous: s, current: s)
        #expect(frame.systemStall[.memory]?.some == nil)
        #expect(frame.cgroupReadBytesPerSecond == nil)
        #expect(frame.plainLine.contains("memory -/-"))
    }
}
