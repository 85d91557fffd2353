import ArgumentParser
import LinuxSystem

/// The watchdog process jobgov starts beside every build that has a cgroup (not for people to run).
struct WatchdogCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watchdog",
        abstract: "Undo freezing, limits, jobgov's swap device, CPU boost and fan control if jobgov dies (started by jobgov itself).",
        shouldDisplay: false
    )

    @Option var pipeFd: Int32
    @Option var runtimeDir: String?
    @Option var unified: String?
    @Option var memory: String?
    @Option var cpu: String?
    @Option var freezer: String?
    @Option var remove: [String] = []
    @Option var sysctl: [String] = []
    @Option var sysfs: [String] = []
    @Option var sysfsRoot: String?
    @Option var zram: Int?
    @Option var zramLabel: String?

    func run() throws {
        var plan = WatchdogPlan(
            runtimeDirectory: runtimeDir,
            cgroup: CgroupDirectories(unified: unified, memory: memory, cpu: cpu, freezer: freezer),
            removeWhenEmpty: remove)
        plan.sysctls = sysctl.compactMap(SystemTuning.decode)
        plan.sysfs = sysfs.compactMap(SystemTuning.decode)
        plan.sysfsRoot = sysfsRoot
        plan.zramIndex = zram
        plan.zramLabel = zramLabel
        throw ExitCode(WatchdogRunner.run(pipeFD: pipeFd, plan: plan))
    }
}
