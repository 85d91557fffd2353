/// The build tools jobgov knows how to launch as jobserver clients.
public enum ClientKind: Equatable, Sendable {
    /// GNU make; the version decides between `fifo:` (4.4 and later) and `R,W` pipes (4.3 and older).
    case gnuMake(MakeVersion?)
    case ninja
    case cargo
    /// `cmake --build DIR`: cmake runs the native tool (make or ninja), which inherits the jobserver.
    case cmakeBuild
    /// Anything else: it just gets the environment, so makes, ninjas and cargos it runs join the pool.
    case other

    /// Every jobserver client jobgov knows by name (a program's base name, which is also its `comm`), with how it
    /// is launched. A process of one of these names is a client in the job table: its children are jobs. Those
    /// launched as `.other` (samurai, remake, MinGW's make) join the pool through the environment alone, since
    /// their options and versions are not GNU make's, ninja's or cargo's.
    public static let jobserverClients: [String: ClientKind] = [
        "make": .gnuMake(nil), "gmake": .gnuMake(nil), "gnumake": .gnuMake(nil),
        "ninja": .ninja, "ninja-build": .ninja,
        "cargo": .cargo,
        "samu": .other, "remake": .other, "mingw32-make": .other,
    ]

    /// Recognises a tool by the command's base name (and, for cmake, by `--build`).
    public static func detect(argv: [String]) -> ClientKind {
        guard let first = argv.first else { return .other }
        let name = first.split(separator: "/").last.map(String.init) ?? first
        if name == "cmake", argv.dropFirst().contains(where: { $0 == "--build" || $0.hasPrefix("--build=") }) {
            return .cmakeBuild
        }
        return jobserverClients[name] ?? .other
    }

    /// True for names that are worth asking `--version` to tell GNU make's version.
    public var needsMakeVersion: Bool {
        if case .gnuMake(nil) = self { return true }
        return false
    }
}

/// A GNU make version, as printed on the first line of `make --version`.
public struct MakeVersion: Comparable, Sendable, CustomStringConvertible {
    public var major: Int
    public var minor: Int
    public var patch: Int

    public init(_ major: Int, _ minor: Int, _ patch: Int = 0) {
        self.major = major
        self.minor = minor
        self.patch = patch
    }

    /// Parses `GNU Make 4.4.1` (the first line of `make --version`). Returns nil for anything else, such as BSD make.
    public init?(versionOutput: String) {
        guard let line = versionOutput.split(separator: "\n").first,
              line.hasPrefix("GNU Make ") else { return nil }
        let numbers = line.dropFirst("GNU Make ".count).split(separator: " ").first ?? ""
        let parts = numbers.split(separator: ".").map { Int($0.prefix(while: \.isNumber)) }
        guard parts.count >= 2, let major = parts[0], let minor = parts[1] else { return nil }
        self.init(major, minor, parts.count > 2 ? (parts[2] ?? 0) : 0)
    }

    /// make 4.4 was the first to accept `--jobserver-auth=fifo:PATH`; make 4.3 stops with an internal error on it.
    public var understandsFifo: Bool { self >= MakeVersion(4, 4) }

    public static func < (a: MakeVersion, b: MakeVersion) -> Bool {
        (a.major, a.minor, a.patch) < (b.major, b.minor, b.patch)
    }

    public var description: String { "\(major).\(minor).\(patch)" }
}

/// How a client is told where the pool is.
public enum JobserverStyle: String, Sendable, CaseIterable {
    /// `--jobserver-auth=fifo:PATH`: make 4.4+, ninja 1.13, cargo, GCC 13+.
    case fifo
    /// `--jobserver-auth=R,W` with inherited descriptors: make 4.3 and older, GCC 12 LTO, the Kitware ninja.
    case pipe
}
