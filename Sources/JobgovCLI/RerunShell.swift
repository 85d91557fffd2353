#if canImport(Glibc)
import Glibc
#endif
import JobgovCore
import LinuxSystem

/// Finding jobgov-shell and the makefile's own shell (the pure parts are `RerunShellPlan`).
enum RerunShell {
    /// Writes jobgov-shell (compiled into jobgov by ShellWrapperPlugin) into jobgov's private runtime directory,
    /// owner-only, and returns its path; nil if it cannot be written (the build then runs without it).
    static func write(into directory: String) -> String? {
        let path = directory + "/jobgov-shell"
        let bytes = EmbeddedHex.bytes(jobgovShellImageHex)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o700)
        guard fd >= 0 else { return nil }
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard written == bytes.count else {
            unlink(path)
            return nil
        }
        return path
    }

    /// The top-level makefile's `SHELL =` assignment, if any.
    static func makefileShell(argv: [String]) -> String? {
        let (directory, file) = RerunShellPlan.makefileLocation(argv: argv)
        let base = directory.map { $0.hasSuffix("/") ? $0 : $0 + "/" } ?? ""
        let candidates = file.map { [$0.hasPrefix("/") ? $0 : base + $0] } ?? ["GNUmakefile", "makefile", "Makefile"].map { base + $0 }
        for path in candidates {
            if let text = readSmallFile(path, limit: 4 << 20) { return RerunShellPlan.makefileShell(text: text) }
        }
        return nil
    }
}
