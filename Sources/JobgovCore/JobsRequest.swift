/// What the user asked for with `-j`: nothing, a bare `-j` (make's "no limit"), or a number.
public enum JobsRequest: Equatable, Sendable {
    case unspecified
    case unlimited
    case count(Int)

    /// The most jobs jobgov will hand out for this request.
    ///
    /// - no `-j`: one job per CPU (`cpus`), which is what ninja and cargo do and what people usually mean when
    ///   they wrap a build in jobgov;
    /// - a bare `-j`: make would start every ready job at once; jobgov caps that at 4 × CPUs, the most that
    ///   helps on a machine without thousands of cores;
    /// - `-jN`: N.
    public func ceiling(cpus: Int) -> Int {
        let cpus = max(1, cpus)
        switch self {
        case .unspecified: return cpus
        case .unlimited: return min(JobsRequest.maximumJobs, 4 * cpus)
        case .count(let n): return n
        }
    }

    /// A FIFO holds 64 KiB by default; far more tokens than any build can use, and far fewer than would fill it.
    public static let maximumJobs = 4096

    /// Parses the value of a jobs option as typed by the user.
    /// - Parameters:
    ///   - text: the value, e.g. `"8"` from `-j8`.
    ///   - option: how the user spelled the option, for the error message.
    public static func parseCount(_ text: String, option: String) throws(CommandLineError) -> Int {
        guard let n = Int(text) else {
            throw .invalidJobs(option: option, value: text, reason: "not a number")
        }
        guard n >= 1 else {
            throw .invalidJobs(option: option, value: text, reason: "it must be at least 1")
        }
        guard n <= maximumJobs else {
            throw .invalidJobs(option: option, value: text, reason: "jobgov hands out at most \(maximumJobs) jobs")
        }
        return n
    }
}

/// Mistakes on the command line, each with a message that says what to do.
public enum CommandLineError: Error, Equatable, Sendable, CustomStringConvertible {
    case noCommand
    case invalidJobs(option: String, value: String, reason: String)
    case missingJobsValue(option: String)
    case invalidSize(option: String, value: String, reason: String)
    /// Any other option value: `reason` says what to give instead.
    case invalidValue(option: String, value: String, reason: String)
    /// An option jobgov does not have, before the build command (which would otherwise be taken for the command).
    case unknownOption(String, suggestion: String?)
    case conflict(String)

    public var description: String {
        switch self {
        case .noCommand:
            return "no command given: say which build to run, e.g. `jobgov make -j8` or `jobgov -- ./build.sh`"
        case .invalidJobs(let option, let value, let reason):
            // The example in the option's own spelling: -j8, --parallel 8, or `jobgov ctl jobs 8` (ctl and the
            // control protocol, whose command is `jobs`).
            let example = ["-j", "--jobs"].contains(option) ? "-j8" : option.hasPrefix("-") ? "\(option) 8" : "`jobgov ctl jobs 8`"
            return "invalid job count '\(value)' for \(option): \(reason); give a whole number from 1 to \(JobsRequest.maximumJobs), e.g. \(example)"
        case .invalidSize(let option, let value, let reason):
            return "invalid size '\(value)' for \(option): \(reason)"
        case .invalidValue(let option, let value, let reason):
            return "invalid value '\(value)' for \(option): \(reason)"
        case .unknownOption(let option, let suggestion):
            let name = option.split(separator: "=", maxSplits: 1).first.map(String.init) ?? option
            return "unknown jobgov option '\(name)'" + (suggestion.map { " (did you mean '\($0)'?)" } ?? "")
                + ": jobgov's own options come before the command (`jobgov --help` lists them); to run a command "
                + "whose name starts with '-', put `--` before it: `jobgov -- \(option) ...`"
        case .conflict(let message):
            return message
        case .missingJobsValue(let option):
            return "\(option) needs a number of jobs, e.g. \(option) 8"
        }
    }
}
