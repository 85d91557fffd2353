#if canImport(Glibc)
import Glibc
#endif
import Foundation
import JobgovCore
import LinuxSystem
import Testing

/// fanotify on the running kernel, in a directory under /tmp (a filesystem with file handles; ext4 here).
@Suite("Changed files on the real kernel", .enabled(if: geteuid() == 0, "needs root for a filesystem-wide fanotify mark"))
struct FileChangeWatcherTests {
    @Test func createsWritesRenamesAndDeletions() throws {
        let root = try canonicalRoot(NSTemporaryDirectory()) + "/jobgov-changes-\(getpid())"
        let fm = FileManager.default
        try fm.createDirectory(atPath: root + "/a/sub", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: root + "/old", withIntermediateDirectories: true)
        defer { try? fm.removeItem(atPath: root) }
        for name in ["a/keep", "a/gone", "old/f1", "untouched"] { try "x".write(toFile: root + "/" + name, atomically: false, encoding: .utf8) }

        let watcher = try FileChangeWatcher(roots: [root])
        let handle = try #require(FileHandle(forWritingAtPath: root + "/a/keep"))
        handle.seekToEndOfFile()
        handle.write("more".data(using: .utf8)!)
        handle.closeFile()
        try fm.removeItem(atPath: root + "/a/gone")
        try "n".write(toFile: root + "/a/new", atomically: false, encoding: .utf8)
        try fm.moveItem(atPath: root + "/old", toPath: root + "/moved")
        try "t".write(toFile: root + "/a/tmp", atomically: false, encoding: .utf8)
        try fm.removeItem(atPath: root + "/a/tmp")
        try "x".write(toFile: root + "/a/odd\nname", atomically: false, encoding: .utf8)
        watcher.drain()

        #expect(!watcher.overflowed)
        let result = watcher.changes.result(kind: fileKind, contents: directoryTree)
        let changed = result.changed.map { String(decoding: $0, as: UTF8.self) }
        #expect(changed == [root + "/a/keep", root + "/a/new", root + "/a/odd\nname", root + "/moved/f1"])
        #expect(result.deleted.map { String(decoding: $0, as: UTF8.self) } == [root + "/a/gone", root + "/old"])
    }

    @Test func aRootThatIsNotADirectoryIsRefused() {
        #expect(throws: SystemError.self) { try canonicalRoot("/nonexistent/jobgov") }
        #expect(throws: SystemError.self) { try canonicalRoot("/etc/hostname") }
    }
}
