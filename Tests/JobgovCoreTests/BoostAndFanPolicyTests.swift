import Testing
@testable import JobgovCore

@Suite("CPU boost policy")
struct BoostPolicyTests {
    let eight = BoostPolicy.Settings(cpus: 8)

    @Test func cpuBoundFromShareJobsPressureAndRunQueue() {
        func bound(_ busy: Double?, jobs: Int, stall: Double? = nil, runq: Double? = nil) -> Bool {
            BoostPolicy.isCPUBound(CPUSignals(cpusBusy: busy, runningJobs: jobs, cpuStall: stall, runQueueP90Seconds: runq),
                                   settings: eight)
        }
        #expect(bound(7.2, jobs: 16), "16 jobs keep 8 CPUs 90% busy")
        #expect(bound(0.95, jobs: 1), "a single-threaded link on one CPU is CPU-bound too")
        #expect(!bound(3.0, jobs: 16), "jobs that wait (I/O, memory) leave CPUs idle: not CPU-bound")
        #expect(!bound(0.3, jobs: 1), "one job mostly waiting")
        #expect(!bound(8, jobs: 0), "nothing runnable (every job frozen, or between steps)")
        #expect(!bound(nil, jobs: 8), "no reading yet")
        // Less while the build's tasks queue for a CPU (others share the machine): on a CPU or queued most of the time.
        #expect(!bound(2.5, jobs: 16))
        #expect(bound(2.5, jobs: 16, stall: 0.6))
        #expect(!bound(2.5, jobs: 16, stall: 0.25), "queued a quarter of the time, idle most of the rest")
        #expect(bound(0.6, jobs: 2, stall: 0.99), "measured on the shared 2-CPU VM: 0.6 of 2 CPUs, queued")
        #expect(bound(0.35, jobs: 2, stall: 0.8), "measured too: 0.35 of 2 CPUs, queued 80% of the time")
        #expect(bound(2.5, jobs: 16, runq: 0.008), "the run-queue latency says it queues: a quarter of a CPU per job is enough")
        #expect(!bound(1.5, jobs: 16, runq: 0.008), "below a quarter: mostly waiting for something else")
        #expect(!bound(2.5, jobs: 16, stall: 0.05, runq: 0.001), "a little queueing is not contention")
        #expect(!bound(1.5, jobs: 16, stall: 0.5))
    }

    @Test func raisesAfterTwoSecondsBoundAndLowersAfterTenFree() {
        var p = BoostPolicy(settings: eight)
        let busy = CPUSignals(cpusBusy: 7.8, runningJobs: 8)
        let idle = CPUSignals(cpusBusy: 1.0, runningJobs: 8)
        #expect(p.observe(CPUSignals(cpusBusy: nil, runningJobs: 8), now: 0) == nil)
        var actions: [(Double, BoostPolicy.Action)] = []
        // 5 s busy, a 3 s gap (a configure step between builds), busy again, then 15 s idle; a tick every 100 ms.
        for tick in 1..<300 {
            let t = Double(tick) / 10
            let s = t < 5 ? busy : t < 8 ? idle : t < 15 ? busy : idle
            if let a = p.observe(s, now: t) { actions.append((t, a)) }
        }
        #expect(actions.count == 2, "\(actions)")
        #expect(actions.first?.1 == .raise)
        #expect(abs((actions.first?.0 ?? 0) - 2.1) < 0.05, "raised 2 s after the build became CPU-bound")
        #expect(actions.last?.1 == .lower)
        #expect(abs((actions.last?.0 ?? 0) - 25) < 0.05, "the 3 s gap kept it; lowered 10 s after the build stopped being bound")
        #expect(!p.raised)
    }

    @Test func aBreakRestartsTheWaitAndFinishLowers() {
        var p = BoostPolicy(settings: eight)
        let busy = CPUSignals(cpusBusy: 7.8, runningJobs: 8)
        #expect(p.observe(busy, now: 0) == nil)
        #expect(p.observe(busy, now: 1.5) == nil)
        #expect(p.observe(CPUSignals(cpusBusy: 0.5, runningJobs: 8), now: 1.9) == nil)
        #expect(p.observe(busy, now: 2.5) == nil, "the wait starts again after a break")
        #expect(p.observe(busy, now: 4.4) == nil)
        #expect(p.observe(busy, now: 4.5) == .raise)
        #expect(p.observe(busy, now: 9) == nil, "raised once")
        #expect(p.finish() == .lower)
        #expect(p.finish() == nil)
    }
}

@Suite("Fan curve and policy")
struct FanCurveTests {
    @Test func parsesAndInterpolates() throws {
        let c = try FanCurve.parse("40:30%, 60:50, 75:80%", fullAt: 85)
        #expect(c.points == [.init(celsius: 40, duty: 0.3), .init(celsius: 60, duty: 0.5), .init(celsius: 75, duty: 0.8)])
        #expect(c.duty(at: 20) == 0.3, "below the first point: its duty")
        #expect(abs(c.duty(at: 50) - 0.4) < 1e-9)
        #expect(abs(c.duty(at: 70) - 0.7) < 1e-9)
        #expect(c.duty(at: 80) == 0.8, "above the last point: its duty")
        #expect(c.duty(at: 85) == 1, "full at the maximum temperature")
        #expect(c.description == "40 °C 30%, 60 °C 50%, 75 °C 80%, full at 85 °C")
        #expect(try FanCurve.celsius("85°C", option: "--max-temp") == 85)
        #expect(try FanCurve.celsius("72.5C", option: "--max-temp") == 72.5)
    }

    @Test func mistakesSayWhatToGive() {
        func message(_ text: String, fullAt: Double = 85) -> String {
            do {
                _ = try FanCurve.parse(text, fullAt: fullAt)
                return ""
            } catch { return error.description }
        }
        #expect(message("40-30") == "invalid value '40-30' for --curve: '40-30' is not a point from -50 to 150 °C and 0 to 100%; give points as °C:duty%, e.g. 40:30%,60:50%,75:80%")
        #expect(message("40:130%").contains("'40:130%' is not a point"))
        #expect(message("60:50%,40:30%").contains("must rise from point to point: 40 °C follows 60 °C"))
        #expect(message("40:60%,60:30%").contains("must not fall as the temperature rises: 30% at 60 °C is below 60% at 40 °C"))
        #expect(message("40:30%,80:90%", fullAt: 70).hasPrefix("invalid value '70' for --max-temp: it is below the fan curve's last point (80 °C)"))
        #expect(message("") == "invalid value '' for --curve: give points as °C:duty%, e.g. 40:30%,60:50%,75:80%")
        #expect(throws: CommandLineError.invalidValue(option: "--max-temp", value: "hot",
                                                      reason: "give degrees Celsius from -50 to 150, e.g. 85")) {
            try FanCurve.celsius("hot", option: "--max-temp")
        }
    }

    @Test func upAtOnceDownWithHysteresisFullWithoutAReading() throws {
        var p = FanPolicy(curve: try FanCurve.parse("40:20%,80:80%", fullAt: 90), hysteresis: 3)
        #expect(p.pwm(celsius: 30) == 51, "20% of 255")
        #expect(p.pwm(celsius: 60) == 128, "up at once: 50%")
        #expect(p.pwm(celsius: 59) == 128, "a degree cooler: held")
        #expect(p.pwm(celsius: 57) == 128, "3 degrees cooler: still the duty of 60 °C")
        #expect(p.pwm(celsius: 55) == 120, "5 degrees cooler: the duty of 58 °C (55 + 3), 47%")
        #expect(p.pwm(celsius: nil) == 255, "no sensor readable: full")
        #expect(p.pwm(celsius: 89) == 255, "from full, 89 °C is within the hysteresis of the maximum (90 °C)")
        #expect(p.pwm(celsius: 86) == 204, "86 + 3 is below the maximum: the curve's 80%")
        #expect(p.pwm(celsius: 95) == 255)
    }

    @Test func settingsFromFlagsOverTheConfigFile() throws {
        let file = ["fan": "hwmon3/pwm1", "fan-sensor": "net:eth0, hwmon1/temp2_input", "fan-curve": "30:20%,70:90%",
                    "fan-max-temp": "80", "fan-interval": "5"]
        let fromFile = try FanSettings(fan: nil, sensors: [], curve: nil, maxTemp: nil, interval: nil, file: file, filePath: "/c")
        #expect(fromFile.fan == "hwmon3/pwm1")
        #expect(fromFile.sensors == ["net:eth0", "hwmon1/temp2_input"])
        #expect(fromFile.curve.points.count == 2 && fromFile.curve.fullAt == 80)
        #expect(fromFile.intervalSeconds == 5)
        let flags = try FanSettings(fan: "nct6798/pwm2", sensors: ["pci:0000:03:00.0"], curve: "50:40%", maxTemp: "95",
                                    interval: "1", file: file, filePath: "/c")
        #expect(flags.fan == "nct6798/pwm2" && flags.sensors == ["pci:0000:03:00.0"])
        #expect(flags.curve.points == [.init(celsius: 50, duty: 0.4)] && flags.curve.fullAt == 95 && flags.intervalSeconds == 1)
        let defaults = try FanSettings(fan: "hwmon0/pwm1", sensors: ["hwmon0"], curve: nil, maxTemp: nil, interval: nil,
                                       file: [:], filePath: nil)
        #expect(defaults.curve.description == "40 °C 30%, 60 °C 50%, 75 °C 80%, full at 85 °C" && defaults.intervalSeconds == 2)

        #expect(throws: CommandLineError.self) {
            try FanSettings(fan: nil, sensors: ["hwmon0"], curve: nil, maxTemp: nil, interval: nil, file: [:], filePath: nil)
        }
        do {
            _ = try FanSettings(fan: "hwmon0/pwm1", sensors: [], curve: nil, maxTemp: nil, interval: nil, file: [:], filePath: nil)
            Issue.record("no sensor was accepted")
        } catch {
            #expect(error.description.hasPrefix("say which temperature drives the fan: --sensor"))
        }
        do {
            _ = try FanSettings(fan: nil, sensors: [], curve: nil, maxTemp: nil, interval: nil,
                                file: ["fan": "hwmon0/pwm1", "fan-sensor": "hwmon0", "fan-max-temp": "60"], filePath: "/c")
            Issue.record("a maximum below the default curve was accepted")
        } catch {
            #expect(error.description.hasPrefix("invalid value '60' for fan-max-temp in /c: it is below the fan curve's last point (75 °C)"), "\(error)")
        }
    }

    @Test func configFileKnowsTheNewKeys() throws {
        let values = try ConfigFile.parse("no-boost = true\nfan = hwmon2/pwm1\nfan-sensor = net:eth0\nfan-curve = 40:30%\n", path: "c")
        #expect(values["no-boost"] == "true" && values["fan"] == "hwmon2/pwm1" && values["fan-curve"] == "40:30%")
        #expect(throws: CommandLineError.conflict("c:1: no-boost is true or false, not \"yes\"")) {
            try ConfigFile.parse("no-boost = yes", path: "c")
        }
    }
}
