#if canImport(Glibc)
import Glibc
#endif
import JobgovCore
import LinuxSystem

/// Finds and reads jobgov's config file: the one `--config` names, else $XDG_CONFIG_HOME/jobgov/config (else
/// ~/.config/jobgov/config), whose absence is no error.
enum ConfigFileLoader {
    /// The file's keys and values, and its path (nil when there is neither --config nor a home).
    static func load(explicit: String?, environment env: [String: String]) throws(CommandLineError) -> ([String: String], String?) {
        let path = explicit ?? (env["XDG_CONFIG_HOME"].map { $0 + "/jobgov/config" } ?? env["HOME"].map { $0 + "/.config/jobgov/config" })
        guard let path else { return ([:], nil) }
        let text: String
        do {
            text = try readFile(path, limit: 1 << 20)
        } catch {
            // No config file of ours (or a HOME that belongs to someone else): the defaults.
            if case .open(let e) = error, explicit == nil, [ENOENT, ENOTDIR, EACCES].contains(e) { return ([:], path) }
            let why = switch error {
            case .open(let e), .read(let e): String(cString: strerror(e))
            case .tooLarge(let limit): "larger than \(limit / 1024) KiB"
            }
            let fix = explicit == nil ? "fix it or remove it" : "give an existing file to --config, or leave --config out"
            throw .conflict("cannot read the config file \(path): \(why); \(fix)")
        }
        return (try ConfigFile.parse(text, path: path), path)
    }
}
