/// How jobgov-shell is put between make and its shell: a command-line `SHELL=` (which wins over the makefile's),
/// with the shell the recipes expect passed on in `JOBGOV_SHELL`.
public enum RerunShellPlan {
    /// Returns make's arguments with `SHELL=<wrapper>` and the shell jobgov-shell should run: the user's own
    /// `SHELL=` argument, else the makefile's top-level assignment, else /bin/sh.
    public static func install(_ wrapper: String, argv: [String], makefileShell: String?) -> (argv: [String], shell: String) {
        var out: [String] = []
        var userShell: String?
        var afterDoubleDash = false
        for (i, arg) in argv.enumerated() {
            if i > 0 && !afterDoubleDash && arg.hasPrefix("SHELL=") {
                userShell = String(arg.dropFirst("SHELL=".count))
                continue
            }
            if arg == "--" { afterDoubleDash = true }
            out.append(arg)
        }
        // After `--` everything is a target or a variable; an assignment there still counts, so append at the end.
        out.append("SHELL=" + wrapper)
        return (out, userShell ?? makefileShell ?? "/bin/sh")
    }

    /// The makefile's own `SHELL = /bin/bash` (also `:=`, `?=`, `::=`, with `override` or `export`), when it is
    /// a plain absolute path. Anything computed (`$(...)`) is left alone: recipes then run with /bin/sh.
    public static func makefileShell(text: String) -> String? {
        var found: String?
        for raw in text.split(separator: "\n") {
            var line = Substring(raw.drop { $0 == " " || $0 == "\t" })
            for prefix in ["override ", "export "] where line.hasPrefix(prefix) {
                line = line.dropFirst(prefix.count).drop { $0 == " " }
            }
            guard line.hasPrefix("SHELL") else { continue }
            var rest = line.dropFirst("SHELL".count).drop { $0 == " " || $0 == "\t" }
            guard let op = [":=", "::=", "?=", "="].first(where: { rest.hasPrefix($0) }) else { continue }
            rest = rest.dropFirst(op.count)
            let value = rest.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let path = String(value).trimmingWhitespace()
            if path.hasPrefix("/") && !path.contains("$") && !path.contains(" ") { found = path }
        }
        return found
    }

    /// Where make reads its makefile from: `-f FILE`/`--file=FILE`/`--makefile=FILE`, relative to `-C DIR`; nil
    /// means the default names in that directory.
    public static func makefileLocation(argv: [String]) -> (directory: String?, file: String?) {
        var directory: String?
        var file: String?
        var i = 1
        while i < argv.count {
            let a = argv[i]
            if a == "--" { break }
            if a == "-C" || a == "--directory", i + 1 < argv.count {
                directory = argv[i + 1]
                i += 1
            } else if a.hasPrefix("--directory=") {
                directory = String(a.dropFirst("--directory=".count))
            } else if a.hasPrefix("-C") && a.count > 2 {
                directory = String(a.dropFirst(2))
            } else if a == "-f" || a == "--file" || a == "--makefile", i + 1 < argv.count {
                file = argv[i + 1]
                i += 1
            } else if a.hasPrefix("--file=") || a.hasPrefix("--makefile=") {
                file = String(a.split(separator: "=", maxSplits: 1)[1])
            } else if a.hasPrefix("-f") && a.count > 2 {
                file = String(a.dropFirst(2))
            }
            i += 1
        }
        return (directory, file)
    }
}
