/// Builds the `MAKEFLAGS` value that points clients at jobgov's pool, keeping the user's own flags.
public enum Makeflags {
    /// Merges jobgov's ` -jN --jobserver-auth=AUTH` into an existing MAKEFLAGS value.
    ///
    /// - Earlier jobserver options and `-j` words are dropped: clients take the last auth option, and a stale one
    ///   would point at a pool that does not exist.
    /// - make's single-letter first word (e.g. `k` for `-k`) and any ` -- VAR=value` tail are kept in place.
    /// - With no flags of the user's, the result starts with a space, so that no client reads the first word as
    ///   single-letter flags (an `n` there would mean a dry run).
    public static func merge(existing: String?, jobs: Int, auth: String) -> String {
        var words = (existing ?? "").split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        var variables: [String] = []
        if let dashes = words.firstIndex(of: "--") {
            variables = Array(words[(dashes + 1)...])
            words = Array(words[..<dashes])
        }
        var kept: [String] = []
        // Assignments belong after ` -- `, where make itself writes them.
        variables = words.filter { !$0.hasPrefix("-") && $0.contains("=") } + variables
        words.removeAll { !$0.hasPrefix("-") && $0.contains("=") }
        for (index, word) in words.enumerated() {
            if word.hasPrefix("--jobserver-auth=") || word.hasPrefix("--jobserver-fds=") || word.hasPrefix("--jobs")
                || word == "-j" || (word.hasPrefix("-j") && word.dropFirst(2).allSatisfy(\.isNumber)) {
                continue
            }
            if index == 0, !word.hasPrefix("-") {
                // make's compact first word of single-letter flags; a `j` in it would mean "no limit".
                let letters = word.filter { $0 != "j" }
                if !letters.isEmpty { kept.append(letters) }
                continue
            }
            kept.append(word)
        }
        var result = kept.isEmpty ? "" : kept.joined(separator: " ")
        if let first = kept.first, !first.hasPrefix("-") {
            result = kept.joined(separator: " ")
        } else if !kept.isEmpty {
            result = " " + kept.joined(separator: " ")
        }
        result += " -j\(jobs) --jobserver-auth=\(auth)"
        if !variables.isEmpty {
            result += " -- " + variables.joined(separator: " ")
        }
        return result
    }

    /// The auth string for a style: `fifo:PATH` or `R,W`.
    public static func auth(style: JobserverStyle, fifoPath: String, readFD: Int32, writeFD: Int32) -> String {
        switch style {
        case .fifo: return "fifo:\(fifoPath)"
        case .pipe: return "\(readFD),\(writeFD)"
        }
    }
}
