#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser

/// The executable's entry point: parses, runs, and turns every mistake into one line on stderr.
public enum JobgovEntry {
    public static func main(_ arguments: [String] = Array(CommandLine.arguments.dropFirst())) -> Never {
        // `run` is the default command and takes everything after the first word as the build's, so its options
        // are shown with the overview, and `jobgov run --help` means help, not a command named --help.
        if arguments == ["--help"] || arguments == ["-h"] || arguments == ["help"] {
            print(Jobgov.helpMessage(columns: nil) + "\n\nOPTIONS OF RUN (the default command):\n"
                  + runOptions())
            exit(0)
        }
        if arguments.count == 2, arguments[0] == "run", ["--help", "-h"].contains(arguments[1]) {
            print(Jobgov.helpMessage(for: Run.self, columns: nil))
            exit(0)
        }
        do {
            var command = try Jobgov.parseAsRoot(arguments)
            if let run = command as? Run {
                exit(run.execute())
            }
            try command.run()
            exit(0)
        } catch {
            let code = Jobgov.exitCode(for: error)
            if code == .success {
                Jobgov.exit(withError: error)  // --help, --version
            }
            if let exitCode = error as? ExitCode { exit(exitCode.rawValue) }
            fail(Jobgov.message(for: error) + " (see `jobgov --help`)")
            exit(2)
        }
    }

    /// The OPTIONS block of `jobgov help run`, without its own header.
    static func runOptions() -> String {
        let lines = Jobgov.helpMessage(for: Run.self, columns: nil).split(separator: "\n", omittingEmptySubsequences: false)
        guard let start = lines.firstIndex(of: "OPTIONS:") else { return lines.joined(separator: "\n") }
        return lines[(start + 1)...].joined(separator: "\n")
    }
}
