#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import JobgovCore
import LinuxSystem

/// `jobgov fan`: drives a hwmon PWM fan from a temperature by a curve until it is stopped, then gives the fan back.
struct Fan: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fan",
        abstract: "Drive a hwmon PWM fan from a temperature by a curve; give it back to the firmware at exit.",
        discussion: """
        Takes the fan into manual control (pwmN_enable 1), sets its duty (pwmN) from the hottest of the sensors every \
        --interval seconds by the curve, full at --max-temp and whenever no sensor can be read, and runs until \
        stopped (Ctrl-C, SIGTERM, SIGHUP). At exit, and from a watchdog process if jobgov is killed, pwmN_enable \
        gets its value from before (the firmware's control), and pwmN too where the fan was in manual mode before. \
        Needs root (or write access to the fan's files).

        Fans and sensors: hwmonN/FILE (a directory of /sys/class/hwmon), CHIP/FILE (the hwmon's name, e.g. \
        nct6798/pwm2), net:IFACE/FILE (a network interface's sensors, e.g. net:eth0/temp1_input), \
        pci:ADDRESS/FILE (a PCI device's), or a path under /sys. FILE defaults to pwm1 and temp1_input.

        Examples:
          jobgov fan --fan nct6798/pwm2 --sensor net:eth0 --max-temp 90
          jobgov fan --fan hwmon3/pwm1 --sensor hwmon1 --curve 45:30%,80:100%
        """
    )

    @Option(help: ArgumentHelp("The fan output to drive, e.g. hwmon3/pwm1 or nct6798/pwm2.", valueName: "fan"))
    var fan: String?

    @Option(help: ArgumentHelp("""
        A temperature input, e.g. hwmon1/temp1_input, net:eth0 or pci:0000:03:00.0 (repeat it: the hottest counts).
        """, valueName: "sensor"))
    var sensor: [String] = []

    @Option(help: ArgumentHelp("""
        °C:duty% points, straight lines between them (default \(FanCurve.defaultText)).
        """, valueName: "points"))
    var curve: String?

    @Option(parsing: .unconditional, help: ArgumentHelp("""
        The temperature at and above which the fan runs at full duty (default \(FanCurve.format(FanCurve.defaultFullAt)) °C).
        """, valueName: "°C"))
    var maxTemp: String?

    @Option(parsing: .unconditional, help: ArgumentHelp("Seconds between readings (default 2).", valueName: "s"))
    var interval: String?

    @Option(help: ArgumentHelp("""
        Read the fan's defaults (keys fan, fan-sensor, fan-curve, fan-max-temp, fan-interval) from this file \
        instead of $XDG_CONFIG_HOME/jobgov/config (~/.config/jobgov/config).
        """, valueName: "file"))
    var config: String?

    @Flag(name: .shortAndLong, help: "Print only errors, not each change of the fan's duty.")
    var quiet = false

    func run() throws {
        throw ExitCode(execute())
    }

    func execute() -> Int32 {
        let env = currentEnvironment()
        let settings: FanSettings
        do {
            let (file, path) = try ConfigFileLoader.load(explicit: config, environment: env)
            settings = try FanSettings(fan: fan, sensors: sensor, curve: curve, maxTemp: maxTemp, interval: interval,
                                       file: file, filePath: path)
        } catch {
            fail(error.description)
            return 2
        }
        let root = SysfsTuning.root(environment: env)
        let control: FanControl
        let sensors: [String]
        do {
            control = try FanControl(path: try FanDevice.resolveFan(settings.fan, root: root), root: root)
            sensors = try settings.sensors.map { (spec) throws(FanError) in try FanDevice.resolveSensor(spec, root: root) }
        } catch {
            fail(error.description)
            return 1
        }
        return drive(control, sensors: sensors, settings: settings, root: root)
    }

    private func drive(_ control: FanControl, sensors: [String], settings: FanSettings, root: String) -> Int32 {
        let say: (String) -> Void = { if !quiet { note($0) } }
        let signals: SignalChannel
        let watchdog: WatchdogHandle
        do {
            signals = try SignalChannel(signals: [SIGINT, SIGTERM, SIGHUP, SIGQUIT])
            // Started before the fan is taken: from then on a SIGKILL of jobgov still gives it back.
            var plan = WatchdogPlan(runtimeDirectory: nil, removeWhenEmpty: [])
            plan.sysfs = control.originals
            plan.sysfsRoot = root == SysfsTuning.defaultRoot ? nil : root
            watchdog = try WatchdogHandle(executable: BuildSupervisor.ownExecutable(), plan: plan)
        } catch {
            fail(error.description)
            return 1
        }
        defer { watchdog.finish(.done) }
        var policy = FanPolicy(curve: settings.curve)
        func hottest() -> Double? { sensors.compactMap { FanDevice.celsius($0, root: root) }.max() }
        var celsius = hottest()
        var pwm = policy.pwm(celsius: celsius)
        do {
            try control.take(pwm: pwm)
        } catch {
            fail("cannot take the fan \(root)/\(control.path): \(error)")
            return 1
        }
        defer { control.giveBack() }
        say("fan \(control.path) (mode \(control.originalMode) before) from \(sensors.joined(separator: ", ")): "
            + "\(settings.curve.description); every \(FanCurve.format(settings.intervalSeconds)) s; "
            + "\(control.path)_enable \(control.originalMode) again at exit")
        report(celsius, pwm, say)
        var unreadable = celsius == nil
        let timeout = Int32(settings.intervalSeconds * 1000)
        while true {
            var fds = [pollfd(fd: signals.fd.rawValue, events: Int16(POLLIN), revents: 0)]
            _ = retryingInterrupts { poll(&fds, 1, timeout) }
            if fds[0].revents != 0, let delivery = signals.drain().first {
                say("\(signalName(delivery.signal)): fan given back (\(control.path)_enable \(control.originalMode))")
                return 0
            }
            guard control.stillManual else {
                // Another fan daemon or a person took it: theirs now, so jobgov leaves it and says so.
                fail("\(root)/\(control.enablePath) was changed by someone else (no longer 1, manual); jobgov fan stops and leaves it")
                return 1
            }
            celsius = hottest()
            if (celsius == nil) != unreadable {
                unreadable = celsius == nil
                if unreadable { fail("cannot read \(sensors.joined(separator: ", ")): the fan runs at full until a sensor reads again") }
            }
            let next = policy.pwm(celsius: celsius)
            guard next != pwm else { continue }
            do {
                try control.set(pwm: next)
            } catch {
                fail("cannot set the fan's duty: \(error)")
                return 1
            }
            pwm = next
            report(celsius, pwm, say)
        }
    }

    private func report(_ celsius: Double?, _ pwm: Int, _ say: (String) -> Void) {
        let duty = "\(Int((Double(pwm) / Double(FanPolicy.fullPWM) * 100).rounded()))% (pwm \(pwm))"
        say((celsius.map { "\(FanCurve.format($0)) °C" } ?? "no reading") + ": fan \(duty)")
    }
}
