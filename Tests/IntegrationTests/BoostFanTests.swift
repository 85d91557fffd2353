import Foundation
import Testing

/// The CPU boost and `jobgov fan` driven end to end on hand-written sysfs trees (JOBGOV_SYSFS_ROOT: this VM has
/// neither cpufreq nor hwmon), with the real watchdog, and what this kernel itself says.
@Suite("CPU boost and fan control", .serialized)
struct BoostFanTests {
    static let governor = "sys/devices/system/cpu/cpufreq/policy0/scaling_governor"
    static let boost = "sys/devices/system/cpu/cpufreq/boost"

    /// acpi-cpufreq with schedutil and boost off, in the scratch directory's `sys`.
    private func cpufreqTree(_ s: Scratch) throws {
        try s.write(Self.governor, "schedutil\n")
        try s.write("sys/devices/system/cpu/cpufreq/policy0/scaling_available_governors", "performance schedutil powersave\n")
        try s.write(Self.boost, "0\n")
    }

    /// Two jobs that keep a CPU each busy until `stop` exists (at most 60 s).
    private let spinning = """
        all: a b
        a b:
        \t@timeout 60 sh -c 'while [ ! -e stop ]; do :; done' || true
        .PHONY: all a b

        """

    private func value(_ s: Scratch, _ path: String) -> String { s.read(path).trimmingCharacters(in: .whitespacesAndNewlines) }

    /// jobgov running `spinning` with make 4.4.1 -j2 on the fake cpufreq tree.
    private func spinningBuild(_ s: Scratch, options: [String] = []) throws -> Running {
        try Clients.require(Clients.make44)
        try cpufreqTree(s)
        try s.write("Makefile", spinning)
        return try Running(Clients.jobgov, options + [Clients.make44, "-j2"], in: s, env: ["JOBGOV_SYSFS_ROOT": s.path + "/sys"])
    }

    private func waitForTheBoost(_ s: Scratch) {
        waitUntil("the boost to be raised", timeout: 40) { value(s, Self.governor) == "performance" && value(s, Self.boost) == "1" }
    }

    @Test("a CPU-bound build raises the boost and gives it back when it ends")
    func boostRaisedAndGivenBack() throws {
        let s = try Scratch()
        let run = try spinningBuild(s)
        waitForTheBoost(s)
        try s.write("stop", "")
        let r = run.finish()
        #expect(r.status == 0, "\(r.stderr)")
        #expect(value(s, Self.governor) == "schedutil")
        #expect(value(s, Self.boost) == "0")
        #expect(r.jobgovLines.contains("jobgov: CPU boost: scaling_governor performance (1 policy), turbo on while the build is CPU-bound, given back after (--no-boost: never)"),
                "\(r.jobgovLines)")
        #expect(r.jobgovLines.contains { $0.hasPrefix("jobgov: CPU-bound (") && $0.contains("CPUs busy for 2 jobs") && $0.hasSuffix("): CPU boost raised") }, "\(r.jobgovLines)")
    }

    @Test("jobgov killed with SIGKILL mid-build: the watchdog gives the boost back")
    func watchdogGivesTheBoostBack() throws {
        let s = try Scratch()
        let run = try spinningBuild(s)
        waitForTheBoost(s)
        let dirs = buildCgroupDirectories(jobgov: run.pid)
        kill(run.pid, SIGKILL)
        // The build goes on without jobgov: the watchdog gives cpufreq back while it still runs.
        waitUntil("the watchdog to give the governor and the turbo back", timeout: 5) {
            value(s, Self.governor) == "schedutil" && value(s, Self.boost) == "0"
        }
        try s.write("stop", "")
        _ = run.finish()
        waitUntil("the build's cgroups to go", timeout: 20) { dirs.allSatisfy { !FileManager.default.fileExists(atPath: $0) } }
    }

    @Test("--no-boost leaves cpufreq alone")
    func noBoost() throws {
        let s = try Scratch()
        let run = try spinningBuild(s, options: ["--no-boost"])
        // Twice as long as a boost takes to be raised on the same build above.
        var seen: Set<String> = []
        let end = Date().addingTimeInterval(6)
        while Date() < end { seen.insert(value(s, Self.governor)); usleep(50_000) }
        try s.write("stop", "")
        let r = run.finish()
        #expect(r.status == 0)
        #expect(seen == ["schedutil"])
        #expect(r.jobgovLines.contains("jobgov: CPU boost: off (--no-boost)"))
    }

    @Test("a build that waits (sleeps) is not CPU-bound: no boost")
    func waitingBuildIsNotBoosted() throws {
        try Clients.require(Clients.make44)
        let s = try Scratch()
        try cpufreqTree(s)
        try s.write("Makefile", "all: a b\na b:\n\t@sleep 6\n.PHONY: all a b\n")
        let run = try Running(Clients.jobgov, [Clients.make44, "-j2"], in: s, env: ["JOBGOV_SYSFS_ROOT": s.path + "/sys"])
        var seen: Set<String> = []
        while run.process.isRunning { seen.insert(value(s, Self.governor)); usleep(50_000) }
        let r = run.finish()
        #expect(r.status == 0)
        #expect(seen == ["schedutil"])
        #expect(!r.jobgovLines.contains { $0.contains("CPU boost raised") })
    }

    @Test("this kernel: a machine without cpufreq is said to have none, once")
    func thisKernelSaysSoOnce() throws {
        let s = try Scratch()
        let r = try jobgov(["--", "/bin/sh", "-c", "true"], in: s)
        #expect(r.status == 0)
        let lines = r.jobgovLines.filter { $0.contains("CPU boost") }
        let policies = ((try? FileManager.default.contentsOfDirectory(atPath: "/sys/devices/system/cpu/cpufreq")) ?? [])
            .filter { $0.hasPrefix("policy") }
        #expect(lines.count == 1, "\(r.jobgovLines)")
        if policies.isEmpty {
            #expect(lines == ["jobgov: CPU boost: off: this machine has no CPU frequency scaling (/sys/devices/system/cpu/cpufreq lists no policy; usual in a virtual machine)"])
        }
    }

    // MARK: jobgov fan

    static let enable = "sys/class/hwmon/hwmon1/pwm1_enable"
    static let pwm = "sys/class/hwmon/hwmon1/pwm1"
    static let temp = "sys/class/hwmon/hwmon0/temp1_input"

    private func hwmonTree(_ s: Scratch, mode: String = "5") throws {
        try s.write("sys/class/hwmon/hwmon0/name", "k10temp\n")
        try s.write(Self.temp, "30000\n")
        try s.write("sys/class/hwmon/hwmon1/name", "nct6798\n")
        try s.write(Self.pwm, "77\n")
        try s.write(Self.enable, mode + "\n")
    }

    private let fanArguments = ["fan", "--fan", "nct6798/pwm1", "--sensor", "hwmon0", "--curve", "40:20%,80:100%",
                                "--max-temp", "85", "--interval", "0.2"]

    @Test("jobgov fan follows the temperature and gives the fan back at SIGTERM")
    func fanFollowsAndGivesBack() throws {
        let s = try Scratch()
        try hwmonTree(s)
        let run = try Running(Clients.jobgov, fanArguments, in: s, env: ["JOBGOV_SYSFS_ROOT": s.path + "/sys"])
        waitUntil("the fan to be taken", timeout: 10) { value(s, Self.enable) == "1" && value(s, Self.pwm) == "51" }
        try s.write(Self.temp, "60000\n")
        waitUntil("60 °C to give 60%", timeout: 5) { value(s, Self.pwm) == "153" }
        try s.write(Self.temp, "90000\n")
        waitUntil("90 °C to give full", timeout: 5) { value(s, Self.pwm) == "255" }
        try FileManager.default.removeItem(atPath: s.path + "/" + Self.temp)
        usleep(600_000)
        #expect(value(s, Self.pwm) == "255", "no reading: full")
        kill(run.pid, SIGTERM)
        let r = run.finish(timeout: 10)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(value(s, Self.enable) == "5", "the firmware's mode again")
        #expect(r.stderr.contains("jobgov: fan class/hwmon/hwmon1/pwm1 (mode 5 before) from class/hwmon/hwmon0/temp1_input: 40 °C 20%, 80 °C 100%, full at 85 °C; every 0.2 s"), "\(r.stderr)")
        #expect(r.stderr.contains("jobgov: 60 °C: fan 60% (pwm 153)"))
        #expect(r.stderr.contains("jobgov: error: cannot read class/hwmon/hwmon0/temp1_input: the fan runs at full until a sensor reads again"))
        #expect(r.stderr.contains("jobgov: SIGTERM: fan given back (class/hwmon/hwmon1/pwm1_enable 5)"))
    }

    @Test("jobgov fan killed with SIGKILL: the watchdog gives the fan back")
    func watchdogGivesTheFanBack() throws {
        for mode in ["2", "1"] {
            let s = try Scratch()
            try hwmonTree(s, mode: mode)
            let run = try Running(Clients.jobgov, fanArguments, in: s, env: ["JOBGOV_SYSFS_ROOT": s.path + "/sys"])
            waitUntil("the fan to be taken", timeout: 10) { value(s, Self.enable) == "1" && value(s, Self.pwm) == "51" }
            kill(run.pid, SIGKILL)
            _ = run.finish()
            if mode == "1" {
                waitUntil("the watchdog to give the manual duty back", timeout: 5) { value(s, Self.pwm) == "77" }
            } else {
                waitUntil("the watchdog to give the fan back to the firmware", timeout: 5) { value(s, Self.enable) == "2" }
            }
            #expect(value(s, Self.enable) == mode)
        }
    }

    @Test("jobgov fan: clear errors for a missing device, a missing sensor and no permission")
    func fanErrors() throws {
        let s = try Scratch()
        try hwmonTree(s)
        let env = ["JOBGOV_SYSFS_ROOT": s.path + "/sys"]
        let missing = try jobgov(["fan", "--fan", "hwmon4/pwm1", "--sensor", "hwmon0"], in: s, env: env)
        #expect(missing.status == 1)
        #expect(missing.stderr == "jobgov: error: no hwmon device hwmon4: this machine's hwmon devices: hwmon0 (k10temp), hwmon1 (nct6798)\n")
        let sensor = try jobgov(["fan", "--fan", "hwmon1/pwm1", "--sensor", "net:eth0"], in: s, env: env)
        #expect(sensor.status == 1)
        #expect(sensor.stderr == "jobgov: error: no network interface eth0 (\(s.path)/sys/class/net/eth0 does not exist)\n")
        let curve = try jobgov(["fan", "--fan", "hwmon1/pwm1", "--sensor", "hwmon0", "--curve", "50:80%,60:20%"], in: s, env: env)
        #expect(curve.status == 2)
        #expect(curve.stderr.hasPrefix("jobgov: error: invalid value '50:80%,60:20%' for --curve: the fan curve's duty must not fall"))
        // Not root: the tree is readable but its files are root's.
        chmod(s.path, 0o755)
        let user = try Running("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "--",
                                                    Clients.jobgov] + fanArguments, in: s, env: env).finish()
        #expect(user.status == 1)
        #expect(user.stderr.hasPrefix("jobgov: error: cannot take the fan \(s.path)/sys/class/hwmon/hwmon1/pwm1: cannot open \(s.path)/sys/class/hwmon/hwmon1/pwm1_enable: Permission denied; driving a fan needs root"), "\(user.stderr)")
        #expect(value(s, Self.enable) == "5")
    }
}
