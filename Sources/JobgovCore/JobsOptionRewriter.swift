/// Finds the user's `-j` in a build tool's command line and removes it where leaving it would switch the client
/// off: a command-line `-jN` makes a sub-make run its own pool, and makes ninja ignore the jobserver.
///
/// Each tool's own option grammar is followed, so that `make -C j8` or `ninja -f j.ninja` are left alone.
public struct JobsOptionRewriter: Sendable {
    public struct Result: Equatable, Sendable {
        /// The command line with the jobs options removed.
        public var argv: [String]
        /// What the last jobs option said (the last one wins, as in the tools themselves).
        public var jobs: JobsRequest
    }

    public let cpus: Int

    public init(cpus: Int) {
        self.cpus = max(1, cpus)
    }

    public func rewrite(_ argv: [String], kind: ClientKind) throws(CommandLineError) -> Result {
        guard let program = argv.first else { throw .noCommand }
        var rest = Array(argv.dropFirst())
        var jobs = JobsRequest.unspecified
        switch kind {
        case .gnuMake:
            rest = try stripMake(rest, jobs: &jobs)
        case .ninja:
            rest = try stripNinja(rest, jobs: &jobs)
        case .cargo:
            rest = try stripCargo(rest, jobs: &jobs)
        case .cmakeBuild:
            rest = try stripCMake(rest, jobs: &jobs)
        case .other:
            // xargs takes no tokens: its -P is read as the ceiling and left for it (the exec gate holds its jobs).
            if program.split(separator: "/").last == "xargs" { try readXargs(rest, jobs: &jobs) }
        }
        return Result(argv: [program] + rest, jobs: jobs)
    }

    // MARK: GNU make

    /// Short options of make that take a value, attached (`-Cdir`) or as the next word (`-C dir`).
    private static let makeShortWithValue: Set<Character> = ["C", "f", "I", "o", "W", "E"]
    /// Short options whose value is optional and can only be attached (`-l2.5`, `-Otarget`).
    private static let makeShortOptionalValue: Set<Character> = ["l", "O"]
    /// Long options of make that take their value as the next word when written without `=`.
    private static let makeLongWithValue: Set<String> = [
        "--file", "--makefile", "--directory", "--include-dir", "--old-file", "--assume-old",
        "--what-if", "--new-file", "--assume-new", "--eval",
    ]

    private func stripMake(_ args: [String], jobs: inout JobsRequest) throws(CommandLineError) -> [String] {
        var out: [String] = []
        var i = 0
        while i < args.count {
            let arg = args[i]
            i += 1
            if arg == "--" {
                out.append(contentsOf: args[(i - 1)...])
                break
            }
            if arg == "--jobs" {
                jobs = try optionalNumericValue(args, &i, option: "--jobs", zeroAllowed: false) ?? .unlimited
                continue
            }
            if arg.hasPrefix("--jobs=") {
                let value = String(arg.dropFirst("--jobs=".count))
                jobs = .count(try JobsRequest.parseCount(value, option: "--jobs"))
                continue
            }
            if arg.hasPrefix("--") {
                out.append(arg)
                if Self.makeLongWithValue.contains(arg), i < args.count {
                    out.append(args[i])
                    i += 1
                }
                continue
            }
            guard arg.hasPrefix("-"), arg.count > 1 else {
                out.append(arg)  // a target or VAR=value
                continue
            }
            // A cluster of short options such as -kj8 or -sC dir.
            var kept = "-"
            var chars = Substring(arg.dropFirst())
            var takesNextWord = false
            while let c = chars.first {
                chars = chars.dropFirst()
                if c == "j" {
                    if chars.isEmpty {
                        jobs = try optionalNumericValue(args, &i, option: "-j", zeroAllowed: false) ?? .unlimited
                    } else {
                        jobs = .count(try JobsRequest.parseCount(String(chars), option: "-j"))
                    }
                    chars = ""
                } else if Self.makeShortWithValue.contains(c) {
                    kept.append(c)
                    if chars.isEmpty { takesNextWord = true } else { kept.append(contentsOf: chars) }
                    chars = ""
                } else if Self.makeShortOptionalValue.contains(c) {
                    kept.append(c)
                    kept.append(contentsOf: chars)
                    chars = ""
                } else {
                    kept.append(c)
                }
            }
            if kept != "-" { out.append(kept) }
            if takesNextWord, i < args.count {
                out.append(args[i])
                i += 1
            }
        }
        return out
    }

    /// make and cmake let `-j` stand alone ("no limit") or take a number as the next word. A next word that looks
    /// like a number (including `0` or `-3`) is taken as the value, so that a mistake is reported, not run.
    private func optionalNumericValue(
        _ args: [String], _ i: inout Int, option: String, zeroAllowed: Bool
    ) throws(CommandLineError) -> JobsRequest? {
        guard i < args.count, looksNumeric(args[i]) else { return nil }
        let value = args[i]
        i += 1
        if zeroAllowed, Int(value) == 0 { return .unlimited }
        return .count(try JobsRequest.parseCount(value, option: option))
    }

    private func looksNumeric(_ s: String) -> Bool {
        let digits = s.hasPrefix("-") ? s.dropFirst() : Substring(s)
        return !digits.isEmpty && digits.allSatisfy(\.isNumber)
    }

    // MARK: ninja

    /// ninja options that take a value (`-C dir`, `-f file`, `-k N`, `-l N`, `-d mode`, `-w flag`).
    private static let ninjaShortWithValue: Set<Character> = ["C", "f", "k", "l", "d", "w"]

    private func stripNinja(_ args: [String], jobs: inout JobsRequest) throws(CommandLineError) -> [String] {
        var out: [String] = []
        var i = 0
        while i < args.count {
            let arg = args[i]
            i += 1
            // After `-t TOOL` or `--`, the words belong to the tool or are targets.
            if arg == "--" || arg == "-t" || (arg.hasPrefix("-t") && arg.count > 2) {
                out.append(contentsOf: args[(i - 1)...])
                break
            }
            guard arg.hasPrefix("-"), !arg.hasPrefix("--"), arg.count > 1 else {
                out.append(arg)
                continue
            }
            var kept = "-"
            var chars = Substring(arg.dropFirst())
            var takesNextWord = false
            while let c = chars.first {
                chars = chars.dropFirst()
                if c == "j" {
                    let value: String
                    if chars.isEmpty {
                        guard i < args.count else { throw .missingJobsValue(option: "-j") }
                        value = args[i]
                        i += 1
                    } else {
                        value = String(chars)
                    }
                    // ninja documents -j0 as "infinity".
                    jobs = Int(value) == 0 ? .unlimited : .count(try JobsRequest.parseCount(value, option: "-j"))
                    chars = ""
                } else if Self.ninjaShortWithValue.contains(c) {
                    kept.append(c)
                    if chars.isEmpty { takesNextWord = true } else { kept.append(contentsOf: chars) }
                    chars = ""
                } else {
                    kept.append(c)
                }
            }
            if kept != "-" { out.append(kept) }
            if takesNextWord, i < args.count {
                out.append(args[i])
                i += 1
            }
        }
        return out
    }

    // MARK: cargo

    private func stripCargo(_ args: [String], jobs: inout JobsRequest) throws(CommandLineError) -> [String] {
        var out: [String] = []
        var i = 0
        while i < args.count {
            let arg = args[i]
            i += 1
            if arg == "--" {
                out.append(contentsOf: args[(i - 1)...])
                break
            }
            var value: String?
            var option = arg
            if arg == "-j" || arg == "--jobs" {
                guard i < args.count else { throw .missingJobsValue(option: arg) }
                value = args[i]
                i += 1
            } else if arg.hasPrefix("--jobs=") {
                option = "--jobs"
                value = String(arg.dropFirst("--jobs=".count))
            } else if arg.hasPrefix("-j"), arg.count > 2 {
                option = "-j"
                value = String(arg.dropFirst(2))
            }
            guard let value else {
                out.append(arg)
                continue
            }
            if value == "default" {
                jobs = .unspecified
            } else if let n = Int(value), n < 0 {
                // cargo: "negative numbers count backwards from the number of CPUs".
                let count = cpus + n
                guard count >= 1 else {
                    throw .invalidJobs(option: option, value: value, reason: "this machine has only \(cpus) CPUs")
                }
                jobs = .count(count)
            } else {
                jobs = .count(try JobsRequest.parseCount(value, option: option))
            }
        }
        return out
    }

    // MARK: cmake --build

    private func stripCMake(_ args: [String], jobs: inout JobsRequest) throws(CommandLineError) -> [String] {
        var out: [String] = []
        var i = 0
        while i < args.count {
            let arg = args[i]
            i += 1
            if arg == "--" {
                // Words after `--` go to the native tool (make or ninja); a -j there would switch it off too.
                let native = Array(args[i...])
                out.append("--")
                out.append(contentsOf: try stripMake(native, jobs: &jobs))
                break
            }
            if arg == "-j" || arg == "--parallel" {
                jobs = try optionalNumericValue(args, &i, option: arg, zeroAllowed: false) ?? .unspecified
            } else if arg.hasPrefix("--parallel=") {
                jobs = .count(try JobsRequest.parseCount(String(arg.dropFirst("--parallel=".count)), option: "--parallel"))
            } else if arg.hasPrefix("-j"), arg.count > 2 {
                jobs = .count(try JobsRequest.parseCount(String(arg.dropFirst(2)), option: "-j"))
            } else {
                out.append(arg)
            }
        }
        return out
    }

    // MARK: xargs

    /// Short options of GNU xargs that take a value, attached or as the next word; those whose value is optional
    /// and only attached (`-e`, `-i`, `-l`); long options that take the next word when written without `=`.
    private static let xargsShortWithValue: Set<Character> = ["a", "d", "E", "I", "L", "n", "P", "s"]
    private static let xargsShortOptionalValue: Set<Character> = ["e", "i", "l"]
    private static let xargsLongWithValue: Set<String> = [
        "--arg-file", "--delimiter", "--max-args", "--max-chars", "--max-procs", "--process-slot-var",
    ]

    /// `-P N` / `--max-procs=N` among xargs's options (before its command); `-P 0` is "as many as possible".
    private func readXargs(_ args: [String], jobs: inout JobsRequest) throws(CommandLineError) {
        func procs(_ value: String, option: String) throws(CommandLineError) {
            jobs = Int(value) == 0 ? .unlimited : .count(try JobsRequest.parseCount(value, option: option))
        }
        var i = 0
        while i < args.count {
            let arg = args[i]
            i += 1
            guard arg.hasPrefix("-"), arg != "-" else { return } // the command starts here
            if arg == "--" { return }
            if arg.hasPrefix("--") {
                let parts = arg.split(separator: "=", maxSplits: 1).map(String.init)
                var value = parts.count == 2 ? parts[1] : nil
                if value == nil, Self.xargsLongWithValue.contains(parts[0]), i < args.count {
                    value = args[i]
                    i += 1
                }
                if parts[0] == "--max-procs", let value { try procs(value, option: "--max-procs") }
                continue
            }
            let chars = Array(arg.dropFirst())
            for (k, c) in chars.enumerated() {
                if Self.xargsShortOptionalValue.contains(c) { break }
                guard Self.xargsShortWithValue.contains(c) else { continue }
                var value: String?
                if k + 1 < chars.count {
                    value = String(chars[(k + 1)...])
                } else if i < args.count {
                    value = args[i]
                    i += 1
                }
                if c == "P", let value { try procs(value, option: "-P") }
                break
            }
        }
    }
}
