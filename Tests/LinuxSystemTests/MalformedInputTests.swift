import JobgovCore
import LinuxSystem
import Testing

/// Malformed, truncated and empty files give a typed error naming the file (and line), never a crash or a zero.
@Suite("Parsers on bad input")
struct MalformedInputTests {
    private func expectError<T>(
        _ expected: SensorError, sourceLocation: SourceLocation = #_sourceLocation,
        _ body: () throws(SensorError) -> T
    ) {
        do throws(SensorError) {
            let value = try body()
            Issue.record("expected \(expected), got \(value)", sourceLocation: sourceLocation)
        } catch {
            #expect(error == expected, sourceLocation: sourceLocation)
        }
    }

    // MARK: pressure

    @Test func pressureEmpty() {
        expectError(.truncated(path: "p", expected: "a \"some\" line")) { () throws(SensorError) in
            try parsePressure("", path: "p")
        }
    }

    @Test func pressureLineCutMidway() {
        expectError(.truncated(path: "p", expected: "avg300= on the some line")) { () throws(SensorError) in
            try parsePressure("some avg10=0.00 avg60=0.00 avg3", path: "p")
        }
        expectError(.truncated(path: "p", expected: "total= on the full line")) { () throws(SensorError) in
            try parsePressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=5\nfull avg10=0.00 avg60=0.00 avg300=0.00 to", path: "p")
        }
        expectError(.truncated(path: "p", expected: "avg300= on the some line")) { () throws(SensorError) in
            try parsePressure("some avg10=0.00 avg60=0.00 avg300=\n", path: "p")
        }
    }

    @Test func pressureWithoutSomeLine() {
        expectError(.truncated(path: "p", expected: "a \"some\" line")) { () throws(SensorError) in
            try parsePressure("full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", path: "p")
        }
    }

    @Test func pressureMalformed() {
        expectError(.malformed(path: "p", line: 1, text: "some avg10=x avg60=0.00 avg300=0.00 total=1")) {
            () throws(SensorError) in try parsePressure("some avg10=x avg60=0.00 avg300=0.00 total=1\n", path: "p")
        }
        expectError(.malformed(path: "p", line: 2, text: "partial avg10=0.00")) { () throws(SensorError) in
            try parsePressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=1\npartial avg10=0.00\n", path: "p")
        }
        expectError(.malformed(path: "p", line: 1, text: "some avg10=0.00 avg60=0.00 avg300=0.00 total=-5")) {
            () throws(SensorError) in try parsePressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=-5\n", path: "p")
        }
        expectError(.malformed(path: "p", line: 1, text: "some avg10=0.00 junk avg60=0.00 avg300=0.00 total=1")) {
            () throws(SensorError) in
            try parsePressure("some avg10=0.00 junk avg60=0.00 avg300=0.00 total=1\n", path: "p")
        }
    }

    // MARK: meminfo

    @Test func meminfoWithoutMemAvailable() throws {
        let text = try fixture("hybrid/proc/meminfo").split(separator: "\n")
            .filter { !$0.hasPrefix("MemAvailable:") }.joined(separator: "\n") + "\n"
        expectError(.truncated(path: "m", expected: "MemAvailable")) { () throws(SensorError) in
            try parseMeminfo(text, path: "m")
        }
    }

    @Test func meminfoEmptyOrCut() throws {
        expectError(.truncated(path: "m", expected: "MemTotal")) { () throws(SensorError) in
            try parseMeminfo("", path: "m")
        }
        expectError(.truncated(path: "m", expected: "a number for MemAvailable")) { () throws(SensorError) in
            try parseMeminfo("MemTotal: 1 kB\nMemFree: 1 kB\nMemAvailable:   24x", path: "m")
        }
    }

    @Test func meminfoMalformed() {
        expectError(.malformed(path: "m", line: 1, text: "MemTotal 1024 kB")) { () throws(SensorError) in
            try parseMeminfo("MemTotal 1024 kB\n", path: "m")
        }
        expectError(.malformed(path: "m", line: 2, text: "MemFree: 12 MB")) { () throws(SensorError) in
            try parseMeminfo("MemTotal: 1024 kB\nMemFree: 12 MB\n", path: "m")
        }
        expectError(.malformed(path: "m", line: 1, text: "MemTotal: 18446744073709551615 kB")) {
            () throws(SensorError) in try parseMeminfo("MemTotal: 18446744073709551615 kB\n", path: "m")
        }
    }

    // MARK: zoneinfo

    @Test func zoneinfoZoneWithoutHighLine() throws {
        let text = try fixture("hybrid/proc/zoneinfo")
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let normal = try #require(lines.firstIndex { $0.hasSuffix("zone   Normal") })
        let high = try #require(lines[normal...].firstIndex { $0.split(separator: " ").first == "high" })
        lines.remove(at: high)
        expectError(.truncated(path: "z", expected: "\"high\" for node 0 zone Normal")) { () throws(SensorError) in
            try parseZoneinfo(lines.joined(separator: "\n"), path: "z")
        }
    }

    @Test func zoneinfoCutInLastZone() throws {
        let text = try fixture("hybrid/proc/zoneinfo")
        let cut = String(text[..<text.range(of: "zone   Device")!.upperBound]) + "\n  pages free     0\n        min"
        expectError(.truncated(path: "z", expected: "\"min\" for node 0 zone Device")) { () throws(SensorError) in
            try parseZoneinfo(cut, path: "z")
        }
    }

    @Test func zoneinfoEmptyAndMalformed() {
        expectError(.truncated(path: "z", expected: "a \"Node N, zone NAME\" line")) { () throws(SensorError) in
            try parseZoneinfo("", path: "z")
        }
        expectError(.malformed(path: "z", line: 1, text: "        min      46")) { () throws(SensorError) in
            try parseZoneinfo("        min      46\n", path: "z")
        }
        expectError(.malformed(path: "z", line: 1, text: "Node zero, zone DMA")) { () throws(SensorError) in
            try parseZoneinfo("Node zero, zone DMA\n", path: "z")
        }
        expectError(.malformed(path: "z", line: 3, text: "        min      4x")) { () throws(SensorError) in
            try parseZoneinfo("Node 0, zone DMA\n  pages free 3\n        min      4x\n", path: "z")
        }
    }

    // MARK: vmstat, stat, diskstats

    @Test func vmstatBad() {
        expectError(.truncated(path: "v", expected: "counters")) { () throws(SensorError) in
            try parseVmstat("", path: "v")
        }
        expectError(.malformed(path: "v", line: 2, text: "pgfault")) { () throws(SensorError) in
            try parseVmstat("nr_free_pages 1\npgfault\n", path: "v")
        }
        expectError(.malformed(path: "v", line: 1, text: "nr_free_pages -1")) { () throws(SensorError) in
            try parseVmstat("nr_free_pages -1\n", path: "v")
        }
        expectError(.truncated(path: "v", expected: "a value after pgmaj")) { () throws(SensorError) in
            try parseVmstat("nr_free_pages 1\npgmaj", path: "v")
        }
    }

    @Test func procStatBad() {
        expectError(.truncated(path: "s", expected: "the \"cpu\" line")) { () throws(SensorError) in
            try parseProcStat("", path: "s")
        }
        expectError(.truncated(path: "s", expected: "eight counters on the cpu line")) { () throws(SensorError) in
            try parseProcStat("cpu  1 2 3\n", path: "s")
        }
        expectError(.malformed(path: "s", line: 1, text: "cpu  1 2 x 4 5 6 7 8")) { () throws(SensorError) in
            try parseProcStat("cpu  1 2 x 4 5 6 7 8\n", path: "s")
        }
    }

    @Test func diskstatsBad() {
        expectError(.truncated(path: "d", expected: "a device line")) { () throws(SensorError) in
            try parseDiskstats("", path: "d")
        }
        expectError(.malformed(path: "d", line: 1, text: "   8 0 sda 1 2 3 4 5")) { () throws(SensorError) in
            try parseDiskstats("   8 0 sda 1 2 3 4 5\n   8 1 sda1 0 0 0 0 0 0 0 0 0 0 0\n", path: "d")
        }
        expectError(.truncated(path: "d", expected: "14 fields for each device")) { () throws(SensorError) in
            try parseDiskstats("   8 0 sda 0 0 0 0 0 0 0 0 0 0 0\n   8 1 sda1 0 0 0 0", path: "d")
        }
        expectError(.malformed(path: "d", line: 1, text: "   8 0 sda 0 0 0 0 0 0 0 0 0 0 zz")) {
            () throws(SensorError) in try parseDiskstats("   8 0 sda 0 0 0 0 0 0 0 0 0 0 zz\n", path: "d")
        }
    }

    // MARK: cgroups

    @Test func cgroupSingleValueFilesBad() {
        expectError(.truncated(path: "g/memory.current", expected: "a number")) { () throws(SensorError) in
            try parseCgroupV2Memory(current: "", max: nil, high: nil, peak: nil, stat: nil, events: nil, directory: "g")
        }
        expectError(.malformed(path: "g/memory.current", line: 1, text: "lots")) { () throws(SensorError) in
            try parseCgroupV2Memory(current: "lots\n", max: nil, high: nil, peak: nil, stat: nil, events: nil,
                                    directory: "g")
        }
        expectError(.malformed(path: "g/memory.max", line: 1, text: "12")) { () throws(SensorError) in
            try parseCgroupV2Memory(current: "1\n", max: "12\n13\n", high: nil, peak: nil, stat: nil, events: nil,
                                    directory: "g")
        }
        expectError(.truncated(path: "g/memory.high", expected: "a number or max")) { () throws(SensorError) in
            try parseCgroupV2Memory(current: "1\n", max: nil, high: "ma", peak: nil, stat: nil, events: nil,
                                    directory: "g")
        }
        expectError(.truncated(path: "c", expected: "a number")) { () throws(SensorError) in
            try parseCgroupV1CPUAcct(usage: "\n", path: "c")
        }
    }

    @Test func cgroupKeyedFilesBad() {
        expectError(.malformed(path: "g/memory.events", line: 2, text: "oom_kill two")) { () throws(SensorError) in
            try parseCgroupV2Memory(current: "1\n", max: nil, high: nil, peak: nil, stat: nil,
                                    events: "oom 2\noom_kill two\n", directory: "g")
        }
        expectError(.truncated(path: "g/memory.stat", expected: "counters")) { () throws(SensorError) in
            try parseCgroupV1Memory(usage: "1\n", limit: nil, maxUsage: nil, stat: "", oomControl: nil,
                                    directory: "g")
        }
        expectError(.truncated(path: "g/memory.oom_control", expected: "under_oom")) { () throws(SensorError) in
            try parseCgroupV1Memory(usage: "1\n", limit: nil, maxUsage: nil, stat: nil,
                                    oomControl: "oom_kill_disable 1\n", directory: "g")
        }
        expectError(.truncated(path: "c", expected: "usage_usec")) { () throws(SensorError) in
            try parseCgroupV2CPUStat("user_usec 5\nsystem_usec 6\n", path: "c")
        }
    }

    @Test func messagesNameTheFileAndWhatToDo() {
        #expect(SensorError.missing(path: "/proc/pressure/memory").description.contains("psi=1"))
        let unreadable = SensorError.unreadable(path: "/x", errno: 13).description
        #expect(unreadable.contains("/x") && unreadable.contains("Permission denied"))
        #expect(SensorError.malformed(path: "/y", line: 3, text: "abc").description.contains("/y line 3"))
        #expect(SensorError.truncated(path: "/z", expected: "MemAvailable").description.contains("no MemAvailable"))
    }
}
