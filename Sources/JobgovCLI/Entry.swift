#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser

/// The executable's entry point: parses, runs, and turns every mistake into one line on stderr.
public enum JobgovEntry {
    public static func main(_ arguments: [String] = Array(CommandLine.arguments.dropFirst())) -> Never {
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
}
