import Foundation
import JobgovCore
import LinuxSystem
import Testing

/// A hand-written sysfs tree in a temporary directory: files with their contents, removed at the end.
final class FakeSysfs {
    let root: String

    init(_ files: [String: String]) throws {
        root = NSTemporaryDirectory() + "jobgov-sysfs-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        for (path, text) in files { try write(path, text) }
    }

    func write(_ path: String, _ text: String) throws {
        let url = URL(fileURLWithPath: root + "/" + path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try (text + "\n").write(to: url, atomically: false, encoding: .utf8)
    }

    func directory(_ path: String) throws {
        try FileManager.default.createDirectory(atPath: root + "/" + path, withIntermediateDirectories: true)
    }

    func read(_ path: String) -> String {
        ((try? String(contentsOfFile: root + "/" + path, encoding: .utf8)) ?? "").trimmingWhitespace()
    }

    deinit { try? FileManager.default.removeItem(atPath: root) }
}

@Suite("CPU boost on sysfs")
struct CPUBoostTests {
    static let freq = "devices/system/cpu/cpufreq"

    /// acpi-cpufreq: schedutil with performance available, global boost off.
    static func acpiCpufreq() throws -> FakeSysfs {
        var files: [String: String] = ["\(freq)/boost": "0"]
        for n in 0..<2 {
            files["\(freq)/policy\(n)/scaling_governor"] = "schedutil"
            files["\(freq)/policy\(n)/scaling_available_governors"] = "conservative ondemand userspace powersave performance schedutil"
        }
        return try FakeSysfs(files)
    }

    @Test func raisesGovernorAndBoostAndGivesThemBack() throws {
        let sys = try Self.acpiCpufreq()
        let boost = try CPUBoost.detect(root: sys.root).get()
        #expect(boost.knobs.map(\.path) == ["\(Self.freq)/policy0/scaling_governor", "\(Self.freq)/policy1/scaling_governor",
                                            "\(Self.freq)/boost"])
        #expect(boost.summary == "scaling_governor performance (2 policies), turbo on")
        #expect(boost.originals.map(SystemTuning.encode) == ["\(Self.freq)/policy0/scaling_governor=schedutil",
                                                            "\(Self.freq)/policy1/scaling_governor=schedutil", "\(Self.freq)/boost=0"])
        #expect(boost.raise().isEmpty)
        #expect(sys.read("\(Self.freq)/policy0/scaling_governor") == "performance")
        #expect(sys.read("\(Self.freq)/policy1/scaling_governor") == "performance")
        #expect(sys.read("\(Self.freq)/boost") == "1")
        boost.lower()
        #expect(sys.read("\(Self.freq)/policy0/scaling_governor") == "schedutil")
        #expect(sys.read("\(Self.freq)/boost") == "0")
        #expect(!boost.isRaised)
    }

    @Test func intelPstateActiveSetsThePreferenceAndTurbo() throws {
        let sys = try FakeSysfs([
            "\(Self.freq)/policy0/scaling_governor": "powersave",
            "\(Self.freq)/policy0/scaling_available_governors": "performance powersave",
            "\(Self.freq)/policy0/energy_performance_preference": "balance_power",
            "\(Self.freq)/policy0/energy_performance_available_preferences": "default performance balance_performance balance_power power",
            "devices/system/cpu/intel_pstate/no_turbo": "1",
        ])
        let boost = try CPUBoost.detect(root: sys.root).get()
        #expect(boost.knobs.map(\.path) == ["\(Self.freq)/policy0/energy_performance_preference", "devices/system/cpu/intel_pstate/no_turbo"])
        boost.raise()
        #expect(sys.read("\(Self.freq)/policy0/energy_performance_preference") == "performance")
        #expect(sys.read("\(Self.freq)/policy0/scaling_governor") == "powersave", "the governor stays")
        #expect(sys.read("devices/system/cpu/intel_pstate/no_turbo") == "0")
        boost.lower()
        #expect(sys.read("\(Self.freq)/policy0/energy_performance_preference") == "balance_power")
        #expect(sys.read("devices/system/cpu/intel_pstate/no_turbo") == "1")
    }

    @Test func othersValuesAreTheirs() throws {
        let sys = try Self.acpiCpufreq()
        let boost = try CPUBoost.detect(root: sys.root).get()
        // Changed by someone else after jobgov read it: not raised over.
        try sys.write("\(Self.freq)/policy1/scaling_governor", "ondemand")
        boost.raise()
        #expect(sys.read("\(Self.freq)/policy1/scaling_governor") == "ondemand")
        #expect(sys.read("\(Self.freq)/policy0/scaling_governor") == "performance")
        // Changed by someone else while raised: not given back over.
        try sys.write("\(Self.freq)/policy0/scaling_governor", "powersave")
        boost.lower()
        #expect(sys.read("\(Self.freq)/policy0/scaling_governor") == "powersave")
        #expect(sys.read("\(Self.freq)/boost") == "0", "the rest is given back")
    }

    @Test func saysWhyThereIsNoBoost() throws {
        let empty = try FakeSysfs([:])
        try empty.directory(Self.freq)
        #expect(CPUBoost.detect(root: empty.root).failure == .noCpufreq(empty.root + "/" + Self.freq))
        #expect(BoostUnavailable.noCpufreq("/sys/devices/system/cpu/cpufreq").description
                == "this machine has no CPU frequency scaling (/sys/devices/system/cpu/cpufreq lists no policy; usual in a virtual machine)")
        let full = try FakeSysfs(["\(Self.freq)/policy0/scaling_governor": "performance",
                                  "\(Self.freq)/policy0/scaling_available_governors": "performance powersave",
                                  "\(Self.freq)/boost": "1"])
        #expect(CPUBoost.detect(root: full.root).failure == .nothingToRaise)
        // A governor list without performance (some ARM boards), no preference: nothing to raise either.
        let none = try FakeSysfs(["\(Self.freq)/policy0/scaling_governor": "ondemand",
                                  "\(Self.freq)/policy0/scaling_available_governors": "ondemand userspace"])
        #expect(CPUBoost.detect(root: none.root).failure == .nothingToRaise)
    }

    /// This kernel: where it has no cpufreq policy (a VM), the absence is found and named; where it has, a boost or a
    /// reason other than "no cpufreq" must come back.
    @Test func thisKernel() {
        let policies = ((try? FileManager.default.contentsOfDirectory(atPath: "/sys/devices/system/cpu/cpufreq")) ?? [])
            .filter { $0.hasPrefix("policy") }
        let result = CPUBoost.detect()
        if policies.isEmpty {
            #expect(result.failure == .noCpufreq("/sys/devices/system/cpu/cpufreq"))
        } else {
            #expect(result.failure != .noCpufreq("/sys/devices/system/cpu/cpufreq"))
        }
    }

    @Test func onlyKnownFilesAreEverWrittenBack() {
        #expect(SysfsTuning.ownership(of: "devices/system/cpu/cpufreq/policy12/scaling_governor") == .holds("performance"))
        #expect(SysfsTuning.ownership(of: "devices/system/cpu/cpufreq/policy0/energy_performance_preference") == .holds("performance"))
        #expect(SysfsTuning.ownership(of: "devices/system/cpu/cpufreq/policy0/boost") == .holds("1"))
        #expect(SysfsTuning.ownership(of: "devices/system/cpu/cpufreq/boost") == .holds("1"))
        #expect(SysfsTuning.ownership(of: "devices/system/cpu/intel_pstate/no_turbo") == .holds("0"))
        #expect(SysfsTuning.ownership(of: "class/hwmon/hwmon3/pwm2_enable") == .holds("1"))
        #expect(SysfsTuning.ownership(of: "class/hwmon/hwmon3/pwm2") == .whileManual(enablePath: "class/hwmon/hwmon3/pwm2_enable"))
        for other in ["devices/system/cpu/cpufreq/policy0/scaling_max_freq", "devices/system/cpu/cpufreq/policyX/boost",
                      "class/hwmon/hwmon3/temp1_input", "class/hwmon/hwmon3/fan1_target", "power/state",
                      "class/hwmon/../../power/state", "kernel/mm/transparent_hugepage/enabled"] {
            #expect(SysfsTuning.ownership(of: other) == nil, "\(other)")
        }
    }

    /// The watchdog's side: told the originals on its command line, it gives back what still holds jobgov's value.
    @Test func watchdogGivesBoostAndFanBack() throws {
        let sys = try Self.acpiCpufreq()
        try sys.write("class/hwmon/hwmon0/pwm1_enable", "1")
        try sys.write("class/hwmon/hwmon0/pwm1", "255")
        try sys.write("class/hwmon/hwmon0/temp1_input", "45000")
        try sys.write("devices/system/cpu/cpufreq/policy0/scaling_governor", "performance")
        try sys.write("devices/system/cpu/cpufreq/policy1/scaling_governor", "ondemand")  // someone else's
        var plan = WatchdogPlan(runtimeDirectory: nil, removeWhenEmpty: [])
        plan.sysfs = [.init(path: "devices/system/cpu/cpufreq/policy0/scaling_governor", original: "schedutil"),
                      .init(path: "devices/system/cpu/cpufreq/policy1/scaling_governor", original: "schedutil"),
                      .init(path: "class/hwmon/hwmon0/pwm1", original: "90"),
                      .init(path: "class/hwmon/hwmon0/pwm1_enable", original: "2"),
                      .init(path: "class/hwmon/hwmon0/temp1_input", original: "0")]
        plan.sysfsRoot = sys.root
        #expect(plan.arguments == ["--sysfs", "devices/system/cpu/cpufreq/policy0/scaling_governor=schedutil",
                                   "--sysfs", "devices/system/cpu/cpufreq/policy1/scaling_governor=schedutil",
                                   "--sysfs", "class/hwmon/hwmon0/pwm1=90", "--sysfs", "class/hwmon/hwmon0/pwm1_enable=2",
                                   "--sysfs", "class/hwmon/hwmon0/temp1_input=0", "--sysfs-root", sys.root])
        WatchdogRunner.recover(plan)
        #expect(sys.read("devices/system/cpu/cpufreq/policy0/scaling_governor") == "schedutil")
        #expect(sys.read("devices/system/cpu/cpufreq/policy1/scaling_governor") == "ondemand")
        #expect(sys.read("class/hwmon/hwmon0/pwm1") == "90", "the duty first, while the fan is still manual")
        #expect(sys.read("class/hwmon/hwmon0/pwm1_enable") == "2")
        #expect(sys.read("class/hwmon/hwmon0/temp1_input") == "45000", "not a file jobgov writes")
    }
}

extension Result {
    var failure: Failure? {
        if case .failure(let f) = self { return f }
        return nil
    }
}
