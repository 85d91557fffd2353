import Testing
@testable import JobgovCore

/// The changed-files list: which paths are listed, which are reported deleted, and how they are written.
@Suite("Changed files")
struct FileChangeSetTests {
    private func b(_ s: String) -> [UInt8] { Array(s.utf8) }

    @Test func rootsCoverTheirOwnTreeOnly() {
        let set = FileChangeSet(roots: [b("/home/ann/"), b("/srv")])
        #expect(set.covers(b("/home/ann")))
        #expect(set.covers(b("/home/ann/x/y")))
        #expect(!set.covers(b("/home/anna/x")))
        #expect(!set.covers(b("/home")))
        #expect(set.covers(b("/srv/a")))
        #expect(FileChangeSet(roots: [b("/")]).covers(b("/etc/passwd")))
    }

    @Test func finalStateDecidesWhatIsListed() {
        var set = FileChangeSet(roots: [b("/r")])
        set.record(.modified, path: b("/r/kept"))
        set.record(.disappeared, path: b("/r/old"))           // existed before, deleted
        set.record(.appeared, path: b("/r/tmp"))              // created and deleted again: nothing to say
        set.record(.disappeared, path: b("/r/tmp"))
        set.record(.appeared, path: b("/r/moved"))            // a directory moved in with contents
        set.record(.appeared, path: b("/r/empty"))            // a new empty directory
        set.record(.modified, path: b("/r/kept"))
        set.record(.modified, path: b("/elsewhere/f"))
        #expect(set.outside == 1)
        let existing: [String: FileChangeSet.Kind] = [
            "/r/kept": .other, "/r/moved": .directory, "/r/moved/a": .other, "/r/moved/d": .directory,
            "/r/moved/d/b": .other, "/r/moved/e": .directory, "/r/empty": .directory,
        ]
        let result = set.result(kind: { existing[String(decoding: $0, as: UTF8.self)] }, contents: { dir in
            let prefix = String(decoding: dir, as: UTF8.self) + "/"
            return existing.filter { $0.key.hasPrefix(prefix) }.map { (Array($0.key.utf8), $0.value) }
        })
        #expect(result.changed.map { String(decoding: $0, as: UTF8.self) }
                == ["/r/empty", "/r/kept", "/r/moved/a", "/r/moved/d/b", "/r/moved/e"])
        #expect(result.deleted == [b("/r/old")])
    }

    @Test func encodingByLinesOrNul() {
        let odd: [UInt8] = b("/r/a\nb")
        let latin1: [UInt8] = b("/r/caf") + [0xE9]
        let lines = FileChangeSet.encode([b("/r/x"), odd, latin1], nul: false)
        #expect(lines.bytes == b("/r/x\n") + latin1 + [10])
        #expect(lines.skipped == [odd])
        let nul = FileChangeSet.encode([b("/r/x"), odd], nul: true)
        #expect(nul.bytes == b("/r/x") + [0] + odd + [0])
        #expect(nul.skipped.isEmpty)
    }
}
