#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import JobgovCore
import LinuxSystem

/// `jobgov changes`: the files changed under some directories while it runs, as a list backup tools read.
struct ChangesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "changes",
        abstract: "Record the files changed under directories while it runs, as a list for rsync, tar and restic.",
        discussion: """
        Watches the filesystems of the given directories with fanotify (Linux 5.9+, root) until Ctrl-C, SIGTERM \
        or --for seconds, then writes the files created, written, changed in their attributes or renamed into \
        place under them, one absolute path per line (NUL-terminated with -0), sorted, to --output or stdout. \
        A directory renamed or moved in is given by its contents; an empty new directory by itself. What existed \
        before and is gone at the end (deleted, or renamed away) goes to --deleted, since the backup tools take \
        only what exists.

        Use the list with:
          rsync -a --files-from=LIST / DEST           (-0: add --from0)
          tar -cf backup.tar --verbatim-files-from -T LIST   (-0: tar --null -T LIST)
          restic backup --files-from-verbatim LIST    (-0: --files-from-raw LIST)

        Exit status: 0; 1 when the kernel dropped events (the list is then incomplete: use a full scan) or \
        the filesystems cannot be watched; 2 for a mistake on the command line.
        """
    )

    @Option(name: .shortAndLong, help: ArgumentHelp("Write the list of changed files here instead of stdout.",
                                                    valueName: "file"))
    var output: String?

    @Option(help: ArgumentHelp("Write the paths that existed and are gone (deleted or renamed away) here.",
                               valueName: "file"))
    var deleted: String?

    @Flag(name: [.customShort("0"), .long], help: "End each path with a NUL byte instead of a newline (for names with newlines).")
    var null = false

    @Option(name: .customLong("for"), parsing: .unconditional,
            help: ArgumentHelp("Stop after this many seconds (default: at Ctrl-C or SIGTERM).", valueName: "seconds"))
    var duration: String?

    @Argument(help: ArgumentHelp("Directories to watch (their whole filesystems are marked; other paths are ignored).",
                                 valueName: "directory"))
    var roots: [String] = []

    func validate() throws {
        if roots.isEmpty {
            // `.conflict` carries a whole message: there is no value to quote.
            throw CommandLineError.conflict("no directory given: say which to watch, e.g. `jobgov changes /home`")
        }
        _ = try seconds
    }

    private var seconds: Double? {
        get throws(CommandLineError) {
            try duration.map { (text) throws(CommandLineError) in
                try OptionValues.seconds(text, option: "--for", range: 0.01...31_536_000)
            }
        }
    }

    func run() throws {
        let limit = try seconds
        let watcher: FileChangeWatcher
        let signals: SignalChannel
        do {
            let resolved = try roots.map { (root) throws(SystemError) in try canonicalRoot(root) }
            signals = try SignalChannel(signals: [SIGINT, SIGTERM, SIGHUP])
            watcher = try FileChangeWatcher(roots: resolved)
        } catch {
            fail(error.description)
            throw ExitCode(1)
        }
        let start = monotonicSeconds()
        var fds = [pollfd(fd: watcher.fd, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: signals.fd.rawValue, events: Int16(POLLIN), revents: 0)]
        loop: while true {
            var timeout: Int32 = -1
            if let limit {
                let left = limit - (monotonicSeconds() - start)
                if left <= 0 { break }
                timeout = Int32(min(left * 1000, 60_000).rounded(.up))
            }
            _ = poll(&fds, nfds_t(fds.count), timeout)
            // Let events gather for 10 ms: reading them in larger batches costs far fewer wake-ups.
            if fds[0].revents != 0 { usleep(10_000) }
            watcher.drain()
            if !signals.drain().isEmpty { break loop }
        }
        watcher.drain()
        let result = watcher.changes.result(kind: fileKind, contents: directoryTree)
        var status: Int32 = 0
        do {
            let changed = FileChangeSet.encode(result.changed, nul: null)
            try write(changed.bytes, to: output)
            if !changed.skipped.isEmpty {
                fail("\(changed.skipped.count) changed path(s) have a newline in their name and were left out: use -0")
                status = 1
            }
            if let deleted {
                let gone = FileChangeSet.encode(result.deleted, nul: null)
                try write(gone.bytes, to: deleted)
                if !gone.skipped.isEmpty {
                    fail("\(gone.skipped.count) deleted path(s) have a newline in their name and were left out: use -0")
                    status = 1
                }
            }
        } catch {
            fail(error.description)
            throw ExitCode(1)
        }
        var note = "jobgov: \(result.changed.count) changed, \(result.deleted.count) deleted"
        if deleted == nil && !result.deleted.isEmpty { note += " (not listed: give --deleted FILE)" }
        if watcher.unresolved > 0 {
            note += "; \(watcher.unresolved) event(s) in directories deleted before they were read are not in the lists"
        }
        writeStandardError(note + "\n")
        if watcher.overflowed {
            fail("the kernel dropped events (its queue overflowed): the list is incomplete; make a full scan instead")
            status = 1
        }
        if status != 0 { throw ExitCode(status) }
    }

    /// Writes the list to a file, or to stdout without a path.
    private func write(_ bytes: [UInt8], to path: String?) throws(SystemError) {
        let fd = path.map { open($0, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) } ?? 1
        guard fd >= 0 else { throw SystemError("cannot write the list to", path: path) }
        defer { if path != nil { close(fd) } }
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { raw in
                retryingInterrupts { Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset) }
            }
            guard n > 0 else { throw SystemError("cannot write the list to", path: path ?? "stdout") }
            offset += n
        }
    }
}
