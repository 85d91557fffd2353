/// What kind of job a command is, for predicting a command never seen from others of its kind: the program and,
/// for compilers, whether it compiles or links. A build's compiles are alike and its links are alike, and the two
/// differ by several times in memory (a link maps every object it reads); a link's peak is better guessed from
/// another link's than from the compiles before it.
public enum CommandKind {
    /// Words that run another program: the kind is that program's.
    static let wrappers: Set<String> = [
        "env", "nice", "ionice", "time", "chrt", "taskset", "ccache", "sccache", "distcc", "icecc", "jobgov-shell",
    ]
    /// Options that change what a compiler driver does (compile only, preprocess, assemble, a shared object, a
    /// relocatable link).
    static let modes: Set<String> = ["-c", "-S", "-E", "-shared", "-r"]

    /// `g++ -O2 -c a.cc -o a.o` and `/usr/bin/g++ -O2 -c b.cc` → `g++ -c`; `g++ -o app a.o b.o` → `g++`;
    /// `rustc --crate-type lib ...` → `rustc --crate-type lib`.
    public static func of(_ command: String) -> String {
        var words = command.split(separator: " ", omittingEmptySubsequences: true)[...]
        // Skip wrappers and their variable assignments, and a shell's `-c` (its script's first word is the program).
        while let first = words.first {
            let name = first.split(separator: "/").last.map(String.init) ?? String(first)
            if wrappers.contains(name) || (first.contains("=") && !first.hasPrefix("-")) {
                words = words.dropFirst()
                while let w = words.first, w.hasPrefix("-") || (w.contains("=") && !w.hasPrefix("/")) { words = words.dropFirst() }
            } else if ["sh", "bash", "dash"].contains(name), words.dropFirst().first == "-c" {
                words = words.dropFirst(2)
            } else {
                break
            }
        }
        guard let program = words.first else { return "" }
        var kind = program.split(separator: "/").last.map(String.init) ?? String(program)
        var seen: Set<Substring> = []
        var rest = words.dropFirst()
        while let w = rest.popFirst() {
            if modes.contains(String(w)), seen.insert(w).inserted { kind += " " + w }
            if w == "--crate-type", let t = rest.first { kind += " --crate-type " + t }
        }
        return kind
    }
}

/// Peaks of finished jobs by kind (`CommandKind`), each kind's mean and count.
struct KindPeaks: Sendable {
    private var sums: [String: (bytes: Double, count: Int)] = [:]

    mutating func add(_ kind: String, _ bytes: UInt64) {
        let s = sums[kind] ?? (0, 0)
        sums[kind] = (s.bytes + Double(bytes), s.count + 1)
    }

    func mean(_ kind: String) -> UInt64? {
        guard let s = sums[kind], s.count > 0 else { return nil }
        return UInt64(s.bytes / Double(s.count))
    }

    var isEmpty: Bool { sums.isEmpty }
}
