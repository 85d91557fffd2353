import Foundation
import JobgovCore
import LinuxSystem
import Testing

@Suite("Fan control on sysfs")
struct FanControlTests {
    /// A Super I/O chip with two fan outputs (the second without `_enable`), a CPU sensor, and a NIC whose driver
    /// reports its temperature under its PCI device.
    static func machine() throws -> FakeSysfs {
        let sys = try FakeSysfs([
            "class/hwmon/hwmon0/name": "k10temp",
            "class/hwmon/hwmon0/temp1_input": "48500",
            "class/hwmon/hwmon1/name": "nct6798",
            "class/hwmon/hwmon1/pwm1": "90",
            "class/hwmon/hwmon1/pwm1_enable": "5",
            "class/hwmon/hwmon1/pwm2": "120",
            "class/hwmon/hwmon2/name": "mlx5",
            "bus/pci/devices/0000:03:00.0/hwmon/hwmon2/temp1_input": "71000",
            "class/net/eth0/device/hwmon/hwmon2/temp1_input": "71000",
        ])
        return sys
    }

    @Test func namesResolveToHwmonFiles() throws {
        let sys = try Self.machine()
        let r = sys.root
        #expect(try FanDevice.resolveFan("hwmon1/pwm1", root: r) == "class/hwmon/hwmon1/pwm1")
        #expect(try FanDevice.resolveFan("nct6798", root: r) == "class/hwmon/hwmon1/pwm1", "pwm1 by default")
        #expect(try FanDevice.resolveFan("/sys/class/hwmon/hwmon1/pwm1", root: r) == "class/hwmon/hwmon1/pwm1")
        #expect(try FanDevice.resolveFan(r + "/class/hwmon/hwmon1/pwm1", root: r) == "class/hwmon/hwmon1/pwm1")
        #expect(try FanDevice.resolveSensor("hwmon0", root: r) == "class/hwmon/hwmon0/temp1_input")
        #expect(try FanDevice.resolveSensor("k10temp/temp1_input", root: r) == "class/hwmon/hwmon0/temp1_input")
        #expect(try FanDevice.resolveSensor("net:eth0", root: r) == "class/net/eth0/device/hwmon/hwmon2/temp1_input")
        #expect(try FanDevice.resolveSensor("pci:0000:03:00.0/temp1_input", root: r)
                == "bus/pci/devices/0000:03:00.0/hwmon/hwmon2/temp1_input")
        #expect(FanDevice.celsius("class/net/eth0/device/hwmon/hwmon2/temp1_input", root: r) == 71)
        #expect(FanDevice.celsius("class/hwmon/hwmon0/temp1_input", root: r) == 48.5)
    }

    @Test func missingDevicesSayWhatThereIs() throws {
        let sys = try Self.machine()
        let r = sys.root
        func message(_ body: () throws -> String) -> String {
            do { return "resolved to " + (try body()) } catch { return "\(error)" }
        }
        #expect(message { try FanDevice.resolveFan("hwmon7/pwm1", root: r) }
                == "no hwmon device hwmon7: this machine's hwmon devices: hwmon0 (k10temp), hwmon1 (nct6798), hwmon2 (mlx5)")
        #expect(message { try FanDevice.resolveFan("it8728/pwm1", root: r) }.hasPrefix("no hwmon device named it8728: this machine's hwmon devices: hwmon0 (k10temp)"))
        #expect(message { try FanDevice.resolveFan("hwmon1/pwm3", root: r) }
                == "\(r)/class/hwmon/hwmon1/pwm3 does not exist: hwmon1 (nct6798) has the fan outputs pwm1, pwm2")
        #expect(message { try FanDevice.resolveFan("hwmon1/pwm2", root: r) }
                == "\(r)/class/hwmon/hwmon1/pwm2 has no pwm2_enable: its driver does not let software take this fan from the firmware")
        #expect(message { try FanDevice.resolveFan("hwmon1/temp1_input", root: r) }.contains("is not a fan output"))
        #expect(message { try FanDevice.resolveSensor("net:eth9", root: r) } == "no network interface eth9 (\(r)/class/net/eth9 does not exist)")
        #expect(message { try FanDevice.resolveSensor("hwmon1/temp1_input", root: r) }
                .hasPrefix("cannot read \(r)/class/hwmon/hwmon1/temp1_input (No such file or directory): hwmon1 (nct6798) has no temperature input"))
        #expect(message { try FanDevice.resolveSensor("/etc/passwd", root: r) }.hasPrefix("/etc/passwd is not under /sys"))
        let bare = try FakeSysfs(["class/net/lo/device/x": ""])
        #expect(message { try FanDevice.resolveSensor("net:lo", root: bare.root) }
                == "the network interface lo has no hwmon device (\(bare.root)/class/net/lo/device/hwmon does not exist): its driver reports no temperature or fan")
        #expect(message { try FanDevice.resolveFan("hwmon0/pwm1", root: bare.root) }
                == "no hwmon device hwmon0: this machine has no hwmon device (\(bare.root)/class/hwmon is empty or missing), so no fan jobgov can use")
    }

    /// This kernel: without /sys/class/hwmon (this project's VM) the error says there is none; with it, the list.
    @Test func thisKernel() {
        let devices = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/class/hwmon")) ?? []
        do {
            _ = try FanDevice.resolveFan("hwmon999/pwm1", root: "/sys")
            Issue.record("hwmon999 resolved")
        } catch {
            if devices.isEmpty {
                #expect(error.description.contains("this machine has no hwmon device (/sys/class/hwmon is empty or missing)"))
            } else {
                #expect(error.description.hasPrefix("no hwmon device hwmon999: this machine's hwmon devices: "))
            }
        }
    }

    @Test func takesTheFanAndGivesItBackToTheFirmware() throws {
        let sys = try Self.machine()
        let fan = try FanControl(path: "class/hwmon/hwmon1/pwm1", root: sys.root)
        #expect(fan.originals.map(SystemTuning.encode) == ["class/hwmon/hwmon1/pwm1_enable=5"],
                "in an automatic mode the duty is the firmware's: only the mode is given back")
        try fan.take(pwm: 200)
        #expect(sys.read("class/hwmon/hwmon1/pwm1_enable") == "1")
        #expect(sys.read("class/hwmon/hwmon1/pwm1") == "200")
        try fan.set(pwm: 300)
        #expect(sys.read("class/hwmon/hwmon1/pwm1") == "255", "clamped to the ABI's full")
        #expect(fan.stillManual)
        fan.giveBack()
        #expect(sys.read("class/hwmon/hwmon1/pwm1_enable") == "5")
        #expect(!fan.taken)
    }

    @Test func aManualFanGetsItsDutyBack() throws {
        let sys = try Self.machine()
        try sys.write("class/hwmon/hwmon1/pwm1_enable", "1")
        let fan = try FanControl(path: "class/hwmon/hwmon1/pwm1", root: sys.root)
        #expect(fan.originals.map(SystemTuning.encode) == ["class/hwmon/hwmon1/pwm1=90", "class/hwmon/hwmon1/pwm1_enable=1"])
        try fan.take(pwm: 255)
        fan.giveBack()
        #expect(sys.read("class/hwmon/hwmon1/pwm1") == "90")
        #expect(sys.read("class/hwmon/hwmon1/pwm1_enable") == "1")
    }

    @Test func aFanSomeoneElseTookIsLeftAlone() throws {
        let sys = try Self.machine()
        let fan = try FanControl(path: "class/hwmon/hwmon1/pwm1", root: sys.root)
        try fan.take(pwm: 255)
        try sys.write("class/hwmon/hwmon1/pwm1_enable", "2")
        #expect(!fan.stillManual)
        fan.giveBack()
        #expect(sys.read("class/hwmon/hwmon1/pwm1_enable") == "2")
    }
}
