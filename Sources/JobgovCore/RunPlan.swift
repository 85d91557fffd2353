/// Everything decided about a build before it starts, from the command line and a few facts about the tools.
/// Pure: the facts (make versions, whether a CMake build directory uses ninja) are looked up by the caller.
public struct RunPlan: Equatable, Sendable {
    public var kind: ClientKind
    /// The command to run, with the `-j` options removed where they would switch the client off.
    public var argv: [String]
    public var jobsRequest: JobsRequest
    /// The most jobs: the user's `-jN` (or jobgov's own `--jobs`).
    public var ceiling: Int
    public var style: JobserverStyle

    /// Facts about the tools that the plan depends on.
    public struct ToolFacts: Equatable, Sendable {
        /// The version of the command itself, when it is GNU make.
        public var commandMakeVersion: MakeVersion?
        /// The version of the `make` on PATH, which any script or cmake will run.
        public var pathMakeVersion: MakeVersion?
        /// For `cmake --build DIR`: DIR holds a build.ninja.
        public var cmakeUsesNinja: Bool
        public var cpus: Int

        public init(commandMakeVersion: MakeVersion? = nil, pathMakeVersion: MakeVersion? = nil,
                    cmakeUsesNinja: Bool = false, cpus: Int) {
            self.commandMakeVersion = commandMakeVersion
            self.pathMakeVersion = pathMakeVersion
            self.cmakeUsesNinja = cmakeUsesNinja
            self.cpus = cpus
        }
    }

    /// - Parameters:
    ///   - command: the build command as typed.
    ///   - jobsOverride: jobgov's own `-j/--jobs`, which wins over the tool's.
    ///   - styleOverride: jobgov's `--jobserver-style`, nil for automatic.
    public static func make(
        command: [String], jobsOverride: Int?, styleOverride: JobserverStyle?, facts: ToolFacts
    ) throws(CommandLineError) -> RunPlan {
        guard !command.isEmpty, !command[0].isEmpty else { throw .noCommand }
        var kind = ClientKind.detect(argv: command)
        if case .gnuMake = kind { kind = .gnuMake(facts.commandMakeVersion) }
        let rewritten = try JobsOptionRewriter(cpus: facts.cpus).rewrite(command, kind: kind)
        let request = jobsOverride.map(JobsRequest.count) ?? rewritten.jobs
        let style = styleOverride ?? automaticStyle(kind: kind, facts: facts)
        return RunPlan(kind: kind, argv: rewritten.argv, jobsRequest: request,
                       ceiling: request.ceiling(cpus: facts.cpus), style: style)
    }

    /// The form each client understands: never `fifo:` for make 4.3 (it stops with "invalid --jobserver-auth
    /// string"), always `fifo:` for ninja (upstream 1.13 refuses pipes).
    public static func automaticStyle(kind: ClientKind, facts: ToolFacts) -> JobserverStyle {
        switch kind {
        case .gnuMake(let version):
            return (version?.understandsFifo ?? false) ? .fifo : .pipe
        case .ninja, .cargo:
            return .fifo
        case .cmakeBuild:
            if facts.cmakeUsesNinja { return .fifo }
            return (facts.pathMakeVersion?.understandsFifo ?? false) ? .fifo : .pipe
        case .other:
            return (facts.pathMakeVersion?.understandsFifo ?? false) ? .fifo : .pipe
        }
    }

    /// The environment the build gets: jobgov's MAKEFLAGS (and CARGO_MAKEFLAGS), minus variables that would
    /// override the pool with a fixed `-j`.
    public func environment(base: [String: String], auth: String, controlPath: String, fifoPath: String)
        -> [String: String]
    {
        var env = base
        env["MAKEFLAGS"] = Makeflags.merge(existing: base["MAKEFLAGS"], jobs: ceiling, auth: auth)
        env["CARGO_MAKEFLAGS"] = Makeflags.merge(existing: base["CARGO_MAKEFLAGS"], jobs: ceiling, auth: auth)
        // MFLAGS is make's older copy of the flags; a stale -j in it means nothing with an auth option present,
        // but some scripts pass it on to sub-makes on the command line.
        env["MFLAGS"] = nil
        // `cmake --build` turns this into a command-line -j for the native tool, which would leave the pool.
        env["CMAKE_BUILD_PARALLEL_LEVEL"] = nil
        env["JOBGOV_CONTROL"] = controlPath
        env["JOBGOV_FIFO"] = fifoPath
        env["JOBGOV_JOBSERVER_AUTH"] = auth
        return env
    }

    /// The build directory of `cmake --build DIR` (or `--build=DIR`), to look for build.ninja in.
    public static func cmakeBuildDirectory(_ argv: [String]) -> String? {
        for (i, arg) in argv.enumerated() {
            if arg == "--build", i + 1 < argv.count { return argv[i + 1] }
            if arg.hasPrefix("--build=") { return String(arg.dropFirst("--build=".count)) }
        }
        return nil
    }
}
