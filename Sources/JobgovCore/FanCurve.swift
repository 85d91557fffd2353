/// How fast a fan runs for a temperature (`jobgov fan`): points of (°C, duty), straight lines between them, the first
/// point's duty below it, the last point's above it, and full speed at and above `fullAt`.
public struct FanCurve: Sendable, Equatable {
    public struct Point: Sendable, Equatable {
        public var celsius: Double
        /// 0...1 of the fan's full duty.
        public var duty: Double
        public init(celsius: Double, duty: Double) {
            self.celsius = celsius
            self.duty = duty
        }
    }

    public let points: [Point]
    public let fullAt: Double

    public static let defaultText = "40:30%,60:50%,75:80%"
    public static let defaultFullAt = 85.0

    /// Checks what `parse` and the user give: temperatures rising, duties never falling (a fan that slows down as it
    /// gets hotter is a typing mistake), full speed at or above the last point.
    public init(points: [Point], fullAt: Double, option: String = "--max-temp") throws(CommandLineError) {
        guard !points.isEmpty else { throw .conflict("a fan curve needs at least one point") }
        for (a, b) in zip(points, points.dropFirst()) {
            if b.celsius <= a.celsius {
                throw .conflict("the fan curve's temperatures must rise from point to point: \(Self.format(b.celsius)) °C follows \(Self.format(a.celsius)) °C")
            }
            if b.duty < a.duty {
                throw .conflict("the fan curve's duty must not fall as the temperature rises: \(Self.percent(b.duty)) at \(Self.format(b.celsius)) °C is below \(Self.percent(a.duty)) at \(Self.format(a.celsius)) °C")
            }
        }
        guard fullAt.isFinite, fullAt > -50, fullAt <= 150 else {
            throw .invalidValue(option: option, value: Self.format(fullAt), reason: "give degrees Celsius from -50 to 150, e.g. 85")
        }
        guard let last = points.last, fullAt >= last.celsius else {
            throw .invalidValue(option: option, value: Self.format(fullAt),
                                reason: "it is below the fan curve's last point (\(Self.format(points[points.count - 1].celsius)) °C); the fan goes to full at the maximum temperature, so give one at or above the curve's")
        }
        self.points = points
        self.fullAt = fullAt
    }

    /// `40:30%,60:50%,75:80%`: comma-separated `°C:duty%` points (the `%` may be left out).
    public static func parse(_ text: String, fullAt: Double, option: String = "--curve",
                             maxOption: String = "--max-temp") throws(CommandLineError) -> FanCurve {
        let example = "give points as °C:duty%, e.g. \(defaultText)"
        var points: [Point] = []
        for part in text.split(separator: ",") {
            let pair = part.split(separator: ":", omittingEmptySubsequences: false).map { String($0).trimmingWhitespace() }
            let dutyText = pair.count == 2 && pair[1].hasSuffix("%") ? String(pair[1].dropLast()) : (pair.count == 2 ? pair[1] : "")
            guard pair.count == 2, let celsius = Double(pair[0]), celsius.isFinite, celsius > -50, celsius <= 150,
                  let duty = Double(dutyText), duty >= 0, duty <= 100 else {
                throw .invalidValue(option: option, value: text,
                                    reason: "'\(String(part).trimmingWhitespace())' is not a point from -50 to 150 °C and 0 to 100%; \(example)")
            }
            points.append(Point(celsius: celsius, duty: duty / 100))
        }
        guard !points.isEmpty else { throw .invalidValue(option: option, value: text, reason: example) }
        do {
            return try FanCurve(points: points, fullAt: fullAt, option: maxOption)
        } catch .conflict(let why) {
            throw .invalidValue(option: option, value: text, reason: why)
        }
    }

    /// `85`, `85C`, `85°C`: degrees Celsius.
    public static func celsius(_ text: String, option: String) throws(CommandLineError) -> Double {
        var s = text.trimmingWhitespace()
        for suffix in ["°C", "C", "°"] where s.hasSuffix(suffix) { s = String(s.dropLast(suffix.count)) }
        guard let value = Double(s), value.isFinite, value > -50, value <= 150 else {
            throw .invalidValue(option: option, value: text, reason: "give degrees Celsius from -50 to 150, e.g. 85")
        }
        return value
    }

    /// The duty (0...1) for a temperature.
    public func duty(at celsius: Double) -> Double {
        if celsius >= fullAt { return 1 }
        guard let first = points.first, celsius > first.celsius else { return points[0].duty }
        for (a, b) in zip(points, points.dropFirst()) where celsius <= b.celsius {
            return a.duty + (b.duty - a.duty) * (celsius - a.celsius) / (b.celsius - a.celsius)
        }
        return points[points.count - 1].duty
    }

    /// For the line said at start: `40 °C 30%, 60 °C 50%, 75 °C 80%, full at 85 °C`.
    public var description: String {
        (points.map { "\(Self.format($0.celsius)) °C \(Self.percent($0.duty))" } + ["full at \(Self.format(fullAt)) °C"])
            .joined(separator: ", ")
    }

    public static func format(_ celsius: Double) -> String {
        celsius == celsius.rounded() ? String(Int(celsius)) : String((celsius * 10).rounded() / 10)
    }

    static func percent(_ duty: Double) -> String { "\(Int((duty * 100).rounded()))%" }
}

/// The fan's duty from tick to tick: up at once as it gets hotter, down only once the temperature has fallen
/// `hysteresis` degrees below where the curve gives the lower duty (a fan that hunts up and down with every
/// half-degree is audible), and full while no sensor can be read. Pure: temperatures in, PWM values out.
public struct FanPolicy: Sendable {
    public let curve: FanCurve
    public let hysteresis: Double
    /// The hwmon PWM value for full duty (the sysfs ABI's 255).
    public static let fullPWM = 255
    public private(set) var duty: Double?

    public init(curve: FanCurve, hysteresis: Double = 3) {
        self.curve = curve
        self.hysteresis = max(0, hysteresis)
    }

    /// The PWM value (0...255) for the hottest sensor's reading; nil celsius (unreadable) means full.
    public mutating func pwm(celsius: Double?) -> Int {
        var next = celsius.map { curve.duty(at: $0) } ?? 1
        if let celsius, let current = duty, next < current {
            next = min(current, curve.duty(at: celsius + hysteresis))
        }
        duty = next
        return Int((next * Double(Self.fullPWM)).rounded())
    }
}

/// What `jobgov fan` is told: its flags over the config file's `fan*` keys over the defaults.
public struct FanSettings: Sendable, Equatable {
    public static let configKeys: Set<String> = ["fan", "fan-sensor", "fan-curve", "fan-max-temp", "fan-interval"]

    /// The fan output and the temperature inputs, as given (resolved against sysfs by the caller).
    public var fan: String
    public var sensors: [String]
    public var curve: FanCurve
    public var intervalSeconds: Double

    public init(fan: String?, sensors: [String], curve: String?, maxTemp: String?, interval: String?,
                file: [String: String], filePath: String?) throws(CommandLineError) {
        func value(_ flag: String?, _ key: String) -> (String, String)? {
            if let flag { return (flag, "--\(key.hasPrefix("fan-") ? String(key.dropFirst(4)) : key)") }
            return file[key].map { ($0, "\(key) in \(filePath ?? "the config file")") }
        }
        guard let (fanSpec, _) = value(fan, "fan") else {
            throw .conflict("say which fan to drive: --fan hwmonN/pwmM (or `fan = hwmonN/pwmM` in the config file); "
                + "`ls /sys/class/hwmon/*/pwm?` lists this machine's fan outputs")
        }
        self.fan = fanSpec
        let sensorList = sensors.isEmpty
            ? (file["fan-sensor"] ?? "").split(separator: ",").map { String($0).trimmingWhitespace() }.filter { !$0.isEmpty }
            : sensors
        guard !sensorList.isEmpty else {
            throw .conflict("say which temperature drives the fan: --sensor hwmonN/tempM_input, net:IFACE or pci:ADDRESS "
                + "(or `fan-sensor = …` in the config file); `ls /sys/class/hwmon/*/temp*_input` lists this machine's")
        }
        self.sensors = sensorList
        let (maxText, maxWhere) = value(maxTemp, "fan-max-temp") ?? (FanCurve.format(FanCurve.defaultFullAt), "--max-temp")
        let fullAt = try FanCurve.celsius(maxText, option: maxWhere)
        let (curveText, curveWhere) = value(curve, "fan-curve") ?? (FanCurve.defaultText, "--curve")
        self.curve = try FanCurve.parse(curveText, fullAt: fullAt, option: curveWhere, maxOption: maxWhere)
        if let (text, option) = value(interval, "fan-interval") {
            intervalSeconds = try OptionValues.seconds(text, option: option, range: 0.1...60)
        } else {
            intervalSeconds = 2
        }
    }
}
