#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import JobgovCore

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
        if arguments.count >= 2, arguments[0] == "ctl", !arguments[1].hasPrefix("-"),
           !Ctl.configuration.subcommands.map({ $0._commandName }).contains(arguments[1]), arguments[1] != "help" {
            fail("unknown ctl command '\(arguments[1])': give jobs N, status, freeze, thaw or kill (see `jobgov ctl --help`)")
            exit(2)
        }
        do {
            var command = try Jobgov.parseAsRoot(arguments)
            if let run = command as? Run {
                exit(run.execute())
            }
            try command.run()
            exit(0)
        } catch let error as CommandLineError {
            fail(error.description)  // says what to give already
            exit(2)
        } catch {
            let code = Jobgov.exitCode(for: error)
            if code == .success {
                Jobgov.exit(withError: error)  // --help, --version
            }
            if let exitCode = error as? ExitCode { exit(exitCode.rawValue) }
            fail(explained(Jobgov.message(for: error)) + " (see `\(helpCommand(arguments))`)")
            exit(2)
        }
    }

    /// The help that covers the command the user typed: `jobgov ctl jobs --help`, `jobgov monitor --help`, ...
    static func helpCommand(_ arguments: [String]) -> String {
        switch arguments.first {
        case "ctl":
            let sub = arguments.dropFirst().first
            let known = Ctl.configuration.subcommands.map { $0._commandName }
            return sub.map { known.contains($0) } == true ? "jobgov ctl \(sub!) --help" : "jobgov ctl --help"
        case "monitor": return "jobgov monitor --help"
        case "fan", "changes", "guard", "daemon": return "jobgov \(arguments[0]) --help"
        default: return "jobgov --help"
        }
    }

    /// What each option wants, for ArgumentParser's "Missing value for '--pid <pid>'".
    static let expectedValues: [String: String] = [
        "-j": "a number of jobs, e.g. -j 8", "--jobs": "a number of jobs, e.g. --jobs 8",
        "--jobserver-style": "auto, fifo or pipe",
        "--cgroup": "a cgroup path relative to the cgroup mounts, e.g. builds",
        "--cpu-max": "a number of CPUs such as 1.5",
        "--memory-budget": "a size such as 8G, 512M or 75%",
        "--memory-threshold": "a percentage such as 85", "--freeze-threshold": "a percentage such as 95",
        "--cpu-threshold": "a percentage such as 90", "--io-latency": "milliseconds, such as 100",
        "--trace": "a file to write to", "--trace-events": "a file to write to", "--summary-json": "a file to write to",
        "--config": "a file to read",
        "--priority": "a weight from 1 to 100, e.g. 20", "--daemon-socket": "the daemon's socket, e.g. /run/jobgov/daemon.sock",
        "--socket": "a socket path, e.g. /run/jobgov/daemon.sock", "--group": "a group name, e.g. jobgov",
        "--pool": "a number of tokens, e.g. 8 (0: no pool)",
        "--pid": "the process id of a running jobgov (`pgrep -a jobgov` lists them)",
        "--interval": "seconds between updates, e.g. 0.5", "--count": "a number of updates, e.g. 10",
        "--generate-completion-script": "bash, zsh or fish",
        "--for": "a number of seconds, e.g. 60", "-o": "a file to write to", "--output": "a file to write to",
        "--deleted": "a file to write to", "--action": "report, freeze or kill",
        "--protect": "a command name as /proc/PID/comm shows it, e.g. firefox",
        "--memory-pressure": "a percentage such as 10", "--cpu-pressure": "a percentage such as 50",
        "--cpu-minimum": "a number of CPUs such as 0.5", "--stuck-seconds": "seconds, such as 10",
        "--confirm": "a number of looks, e.g. 3",
        "--fan": "a hwmon fan output, e.g. hwmon3/pwm1", "--sensor": "a hwmon temperature, e.g. hwmon1/temp1_input or net:eth0",
        "--curve": "°C:duty% points, e.g. 40:30%,60:50%,75:80%", "--max-temp": "degrees Celsius, e.g. 85",
    ]

    /// ArgumentParser's message on one line, with what to give when a value is missing, and in lower case like
    /// jobgov's own.
    static func explained(_ text: String) -> String {
        let message = text.split(whereSeparator: \.isNewline).map { String($0).trimmingWhitespace() }.filter { !$0.isEmpty }
            .joined(separator: " ")
        let prefix = "Missing value for '"
        if message.hasPrefix(prefix) {
            let option = message.dropFirst(prefix.count).prefix { $0 != " " && $0 != "'" }
            if let expected = expectedValues[String(option)] {
                return "\(option) needs a value: \(expected)"
            }
        }
        guard let first = message.first, first.isUppercase else { return message }
        return first.lowercased() + message.dropFirst()
    }

    /// The OPTIONS block of `jobgov help run`, without its own header.
    static func runOptions() -> String {
        let lines = Jobgov.helpMessage(for: Run.self, columns: nil).split(separator: "\n", omittingEmptySubsequences: false)
        guard let start = lines.firstIndex(of: "OPTIONS:") else { return lines.joined(separator: "\n") }
        return lines[(start + 1)...].joined(separator: "\n")
    }
}
