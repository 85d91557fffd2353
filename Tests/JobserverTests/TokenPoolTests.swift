#if canImport(Glibc)
import Glibc
#endif
import Testing
import JobgovCore
@testable import Jobserver
import LinuxSystem

// MARK: helpers

/// A fresh directory under /tmp; the caller removes it with `removeTree` in a `defer`.
private func makeTempDir(_ label: String = "t") throws -> String {
    var template = Array("/tmp/jgtest-\(label)-XXXXXX".utf8CString)
    let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    try #require(made != nil, "mkdtemp failed: errno \(errno)")
    return String(decoding: template.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Removes a directory tree (files, FIFOs, sockets, subdirectories).
private func removeTree(_ path: String) {
    var st = stat()
    guard lstat(path, &st) == 0 else { return }
    if (st.st_mode & S_IFMT) == S_IFDIR {
        if let dir = opendir(path) {
            var names: [String] = []
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
                }
                if name != "." && name != ".." { names.append(name) }
            }
            closedir(dir)
            for name in names { removeTree("\(path)/\(name)") }
        }
        rmdir(path)
    } else {
        unlink(path)
    }
}

private func exists(_ path: String) -> Bool {
    var st = stat()
    return lstat(path, &st) == 0
}

private func fileMode(_ path: String) -> (type: mode_t, permissions: mode_t)? {
    var st = stat()
    guard lstat(path, &st) == 0 else { return nil }
    return (st.st_mode & S_IFMT, st.st_mode & 0o7777)
}

private func writeFile(_ path: String, _ text: String) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    try #require(fd >= 0, "cannot create \(path): errno \(errno)")
    defer { close(fd) }
    let bytes = Array(text.utf8)
    if !bytes.isEmpty {
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        try #require(n == bytes.count)
    }
}

private func makeDir(_ path: String) throws {
    try #require(mkdir(path, 0o755) == 0, "mkdir \(path): errno \(errno)")
}

private func writeBytes(_ fd: Int32, _ bytes: [UInt8]) -> Int {
    bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
}

private func readBytes(_ fd: Int32, max: Int) -> [UInt8] {
    var buffer = [UInt8](repeating: 0, count: max)
    let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    return n > 0 ? Array(buffer[0..<n]) : []
}

/// The suites below run one test at a time: ControlServer sets the process-wide umask to 0177 while it binds its
/// socket, which would turn a directory made meanwhile by another test (mkdtemp, RuntimeDirectory) into 0600.
@Suite(.serialized) struct OnDiskTests {}

// MARK: TokenPool

extension OnDiskTests {
    @Suite("TokenPool on a real FIFO")
    struct TokenPoolTests {
        @Test func createsAPrivateFifo() throws {
            let dir = try makeTempDir("pool")
            defer { removeTree(dir) }
            let pool = try TokenPool(fifoPath: "\(dir)/fifo")
            defer { pool.close() }
            let mode = try #require(fileMode(pool.fifoPath))
            #expect(mode.type == S_IFIFO)
            #expect(mode.permissions == 0o600)
            #expect(pool.tokensInPool() == 0)
            // jobgov's own ends are close-on-exec and non-blocking.
            #expect(fcntl(pool.reader.rawValue, F_GETFD) & FD_CLOEXEC != 0)
            #expect(fcntl(pool.writer.rawValue, F_GETFD) & FD_CLOEXEC != 0)
            #expect(fcntl(pool.reader.rawValue, F_GETFL) & O_NONBLOCK != 0)
            #expect(fcntl(pool.reader.rawValue, F_GETFL) & O_ACCMODE == O_RDONLY)
            #expect(fcntl(pool.writer.rawValue, F_GETFL) & O_ACCMODE == O_WRONLY)
        }

        @Test func existingPathIsAnError() throws {
            let dir = try makeTempDir("pool")
            defer { removeTree(dir) }
            try writeFile("\(dir)/fifo", "")
            do {
                let pool = try TokenPool(fifoPath: "\(dir)/fifo")
                pool.close()
                Issue.record("a pool was made over an existing file")
            } catch {
                #expect(error.errno == EEXIST)
                #expect(error.path == "\(dir)/fifo")
            }
            // The user's file is left alone.
            #expect(fileMode("\(dir)/fifo")?.type == S_IFREG)
        }

        @Test func addTakeAndCount() throws {
            let dir = try makeTempDir("pool")
            defer { removeTree(dir) }
            let pool = try TokenPool(fifoPath: "\(dir)/fifo")
            defer { pool.close() }

            #expect(pool.add(0) == 0)
            #expect(pool.add(-2) == 0)
            #expect(pool.add(5) == 5)
            #expect(pool.tokensInPool() == 5)
            #expect(pool.take(upTo: 2) == 2)
            #expect(pool.tokensInPool() == 3)
            #expect(pool.take(upTo: 0) == 0)
            // Non-blocking: asking for more than there is returns what there was, at once.
            #expect(pool.take(upTo: 10) == 3)
            #expect(pool.tokensInPool() == 0)
            #expect(pool.take(upTo: 1) == 0)
            #expect(pool.add(5000) == 5000)
            #expect(pool.tokensInPool() == 5000)
            #expect(pool.take(upTo: 6000) == 5000)
        }

        @Test func tokensWrittenByJobgovArePlus() throws {
            let dir = try makeTempDir("pool")
            defer { removeTree(dir) }
            let pool = try TokenPool(fifoPath: "\(dir)/fifo")
            defer { pool.close() }
            let client = try pool.openClientPipeEnds()
            #expect(pool.add(3) == 3)
            #expect(readBytes(client.read.rawValue, max: 3) == Array("+++".utf8))
        }

        @Test func anyByteValueCountsAsAToken() throws {
            let dir = try makeTempDir("pool")
            defer { removeTree(dir) }
            let pool = try TokenPool(fifoPath: "\(dir)/fifo")
            defer { pool.close() }
            let client = try pool.openClientPipeEnds()
            let raw: [UInt8] = [0x00, UInt8(ascii: "x"), 0xff, UInt8(ascii: "+"), 0x0a]
            #expect(writeBytes(client.write.rawValue, raw) == raw.count)
            #expect(pool.tokensInPool() == raw.count)
            #expect(pool.take(upTo: 100) == raw.count)
            #expect(pool.tokensInPool() == 0)
        }

        @Test func clientPipeEndsShareThePool() throws {
            let dir = try makeTempDir("pool")
            defer { removeTree(dir) }
            let pool = try TokenPool(fifoPath: "\(dir)/fifo")
            defer { pool.close() }
            let client = try pool.openClientPipeEnds()
            #expect(client.read.rawValue != pool.reader.rawValue && client.write.rawValue != pool.writer.rawValue)
            // Asking twice gives the same pair.
            let again = try pool.openClientPipeEnds()
            #expect(again.read == client.read && again.write == client.write)
            #expect(pool.clientFDs?.read == client.read)

            #expect(pool.add(2) == 2)
            #expect(readBytes(client.read.rawValue, max: 1).count == 1)  // a pipe-style client takes one
            #expect(pool.tokensInPool() == 1)
            #expect(writeBytes(client.write.rawValue, [UInt8(ascii: "+")]) == 1)  // and gives it back
            #expect(writeBytes(client.write.rawValue, [UInt8(ascii: "+")]) == 1)  // plus one of its own
            #expect(pool.tokensInPool() == 3)
            #expect(pool.take(upTo: 3) == 3)
        }

        @Test func clientEndsAreInheritableAndBlocking() throws {
            let dir = try makeTempDir("pool")
            defer { removeTree(dir) }
            let pool = try TokenPool(fifoPath: "\(dir)/fifo")
            defer { pool.close() }
            let client = try pool.openClientPipeEnds()
            #expect(fcntl(client.read.rawValue, F_GETFD) & FD_CLOEXEC == 0)
            #expect(fcntl(client.write.rawValue, F_GETFD) & FD_CLOEXEC == 0)
            #expect(fcntl(client.read.rawValue, F_GETFL) & O_NONBLOCK == 0)
            #expect(fcntl(client.write.rawValue, F_GETFL) & O_NONBLOCK == 0)
        }

        @Test func clientNonBlockingModeDoesNotReachJobgovsEnds() throws {
            let dir = try makeTempDir("pool")
            defer { removeTree(dir) }
            let pool = try TokenPool(fifoPath: "\(dir)/fifo")
            defer { pool.close() }
            let jobgovFlagsBefore = fcntl(pool.reader.rawValue, F_GETFL)
            let client = try pool.openClientPipeEnds()
            // Making the client's end blocking must not have made jobgov's end blocking.
            #expect(fcntl(pool.reader.rawValue, F_GETFL) == jobgovFlagsBefore)
            #expect(jobgovFlagsBefore & O_NONBLOCK != 0)

            // A client (make with pselect, cc-rs) sets O_NONBLOCK on its inherited end...
            let clientFlags = fcntl(client.read.rawValue, F_GETFL)
            #expect(fcntl(client.read.rawValue, F_SETFL, clientFlags | O_NONBLOCK) == 0)
            #expect(fcntl(client.read.rawValue, F_GETFL) & O_NONBLOCK != 0)
            // ...and jobgov's own read end is a different file description: unchanged.
            #expect(fcntl(pool.reader.rawValue, F_GETFL) == jobgovFlagsBefore)

            // The other direction too: jobgov's end changing does not reach the client's.
            #expect(fcntl(pool.reader.rawValue, F_SETFL, jobgovFlagsBefore & ~O_NONBLOCK) == 0)
            #expect(fcntl(client.read.rawValue, F_GETFL) & O_NONBLOCK != 0)
            #expect(fcntl(pool.reader.rawValue, F_SETFL, jobgovFlagsBefore) == 0)
            #expect(fcntl(pool.reader.rawValue, F_GETFL) == jobgovFlagsBefore)
        }

        @Test func tokensSurviveClosingTheClientPair() throws {
            let dir = try makeTempDir("pool")
            defer { removeTree(dir) }
            let pool = try TokenPool(fifoPath: "\(dir)/fifo")
            defer { pool.close() }
            let client = try pool.openClientPipeEnds()
            #expect(writeBytes(client.write.rawValue, Array("++++".utf8)) == 4)
            pool.closeClientPipeEndsInParent()
            #expect(pool.clientFDs == nil)
            #expect(pool.tokensInPool() == 4)
            #expect(pool.take(upTo: 4) == 4)
        }

        @Test func closeRemovesTheFifo() throws {
            let dir = try makeTempDir("pool")
            defer { removeTree(dir) }
            let path = "\(dir)/fifo"
            let pool = try TokenPool(fifoPath: path)
            _ = try pool.openClientPipeEnds()
            #expect(pool.add(2) == 2)
            #expect(exists(path))
            pool.close()
            #expect(!exists(path))
            pool.close()  // a second close is harmless
            #expect(!exists(path))
            // The path can be used again.
            let next = try TokenPool(fifoPath: path)
            #expect(next.tokensInPool() == 0)
            next.close()
            #expect(!exists(path))
        }
    }
}

// MARK: RuntimeDirectory

/// A pid that no process has now (kill(pid, 0) fails with ESRCH).
private func deadPID() throws -> Int32 {
    let pidMax = readSmallFile("/proc/sys/kernel/pid_max").flatMap { Int32($0.trimmingWhitespaceForTests()) } ?? 32768
    var pid = pidMax - 1
    while pid > 300 {
        if kill(pid, 0) == -1 && errno == ESRCH { return pid }
        pid -= 1
    }
    try #require(Bool(false), "no free pid found")
    return -1
}

extension String {
    fileprivate func trimmingWhitespaceForTests() -> String {
        String(self.filter { !$0.isWhitespace })
    }
}

extension OnDiskTests {
    @Suite("RuntimeDirectory")
    struct RuntimeDirectoryTests {
        @Test func createdPrivateUnderTMPDIR() throws {
            let base = try makeTempDir("rt")
            defer { removeTree(base) }
            let dir = try RuntimeDirectory(environment: ["TMPDIR": base])
            defer { dir.remove() }
            #expect(dir.path.hasPrefix("\(base)/jobgov-\(getpid())-"))
            #expect(dir.path.count == "\(base)/jobgov-\(getpid())-".count + 6)
            let mode = try #require(fileMode(dir.path))
            #expect(mode.type == S_IFDIR)
            #expect(mode.permissions == 0o700)
            #expect(dir.file("fifo") == "\(dir.path)/fifo")
            // The name is one that removeStale and `jobgov ctl --pid` recognise.
            let found = RuntimeDirectory.instances(in: base)
            #expect(found.count == 1)
            #expect(found.first?.path == dir.path)
            #expect(found.first?.pid == getpid())
        }

        @Test func xdgRuntimeDirComesFirst() throws {
            let xdg = try makeTempDir("xdg")
            let tmp = try makeTempDir("tmp")
            defer { removeTree(xdg); removeTree(tmp) }
            let dir = try RuntimeDirectory(environment: ["XDG_RUNTIME_DIR": xdg, "TMPDIR": tmp], pid: 77)
            defer { dir.remove() }
            #expect(dir.path.hasPrefix("\(xdg)/jobgov-77-"))
        }

        @Test func unusableBaseFallsBackToTheNext() throws {
            let tmp = try makeTempDir("tmp")
            defer { removeTree(tmp) }
            let dir = try RuntimeDirectory(environment: ["XDG_RUNTIME_DIR": "\(tmp)/missing", "TMPDIR": tmp])
            defer { dir.remove() }
            #expect(dir.path.hasPrefix("\(tmp)/jobgov-"))
        }

        @Test func removeDeletesTheDirectoryAndItsFiles() throws {
            let base = try makeTempDir("rt")
            defer { removeTree(base) }
            let dir = try RuntimeDirectory(environment: ["TMPDIR": base])
            try writeFile(dir.file("note"), "x")
            let pool = try TokenPool(fifoPath: dir.file("fifo"))
            #expect(exists(dir.file("fifo")))
            dir.remove()
            #expect(!exists(dir.path))
            dir.remove()  // safe twice
            pool.close()
            #expect(!exists(dir.path))
        }

        @Test func baseWithWhitespaceIsSkipped() throws {
            let candidates = RuntimeDirectory.baseCandidates(environment: [
                "XDG_RUNTIME_DIR": "/run/user/with space", "TMPDIR": "/var/tmp/ok",
            ])
            #expect(candidates == ["/var/tmp/ok", "/tmp"])
            #expect(RuntimeDirectory.baseCandidates(environment: ["TMPDIR": "/tmp/tab\there"]) == ["/tmp"])
            #expect(RuntimeDirectory.baseCandidates(environment: ["TMPDIR": "relative", "XDG_RUNTIME_DIR": ""]) == ["/tmp"])
            #expect(RuntimeDirectory.baseCandidates(environment: [:]) == ["/tmp"])
            #expect(RuntimeDirectory.baseCandidates(environment: ["XDG_RUNTIME_DIR": "/run/user/0", "TMPDIR": "/t"])
                == ["/run/user/0", "/t", "/tmp"])

            // And the directory is really made elsewhere: an existing, writable base with a space is not used.
            let tmp = try makeTempDir("sp")
            defer { removeTree(tmp) }
            let spaced = "\(tmp)/with space"
            try makeDir(spaced)
            let dir = try RuntimeDirectory(environment: ["XDG_RUNTIME_DIR": spaced, "TMPDIR": tmp])
            defer { dir.remove() }
            #expect(dir.path.hasPrefix("\(tmp)/jobgov-"))
            #expect(!dir.path.contains(" "))
        }

        @Test func removeStaleRemovesDeadInstancesOnly() throws {
            let base = try makeTempDir("stale")
            defer { removeTree(base) }
            let dead = try deadPID()
            let stale = "\(base)/jobgov-\(dead)-abcdef"
            let live = "\(base)/jobgov-\(getpid())-ghijkl"
            let notOurs = "\(base)/jobgov-\(dead)-abc"  // not the XXXXXX form
            let staleFile = "\(base)/jobgov-\(dead)-zzzzzz"  // a file, not a directory
            try makeDir(stale)
            try writeFile("\(stale)/control", "")
            try #require(mkfifo("\(stale)/fifo", 0o600) == 0)
            try makeDir(live)
            try makeDir(notOurs)
            try writeFile(staleFile, "")

            // removeStale also scans /tmp, as jobgov does at start; only look at what it did in `base`.
            let removed = RuntimeDirectory.removeStale(environment: ["TMPDIR": base]).filter { $0.hasPrefix(base + "/") }
            #expect(removed == [stale])
            #expect(!exists(stale))
            #expect(exists(live))
            #expect(exists(notOurs))
            #expect(exists(staleFile))
        }

        @Test func instancesParsesNames() throws {
            let base = try makeTempDir("inst")
            defer { removeTree(base) }
            try makeDir("\(base)/jobgov-123-abcdef")
            try makeDir("\(base)/jobgov-x-abcdef")
            try makeDir("\(base)/jobgov-123-abcdef-more")
            try makeDir("\(base)/other-123-abcdef")
            let found = RuntimeDirectory.instances(in: base)
            #expect(found.map(\.path) == ["\(base)/jobgov-123-abcdef"])
            #expect(found.map(\.pid) == [123])
            #expect(RuntimeDirectory.instances(in: "\(base)/missing").isEmpty)
        }

        @Test func processExists() throws {
            #expect(RuntimeDirectory.processExists(getpid()))
            #expect(!RuntimeDirectory.processExists(try deadPID()))
        }
    }
}

// MARK: ProcessTree

extension OnDiskTests {
    @Suite("ProcessTree")
    struct ProcessTreeTests {
        @Test func countsRealDescendants() throws {
            let tree = ProcessTree()
            try #require(tree.isSupported(), "this kernel has no /proc/PID/task/TID/children")
            let before = tree.descendantTaskCount(of: getpid())

            let child = try ProcessLauncher.spawn(
                executable: "/bin/sh", arguments: ["sh", "-c", "sleep 5 & sleep 5; wait"],
                environment: ["PATH=/usr/bin:/bin"])
            defer {
                // Kill the sleeps first, so none is left behind when sh goes, then sh, and reap it.
                for grandchild in tree.children(of: child) { kill(grandchild, SIGKILL) }
                kill(child, SIGKILL)
                var status: Int32 = 0
                _ = waitpid(child, &status, 0)
            }

            // Give sh time to start both sleeps (waiting for the state, not asserting on time).
            var below = 0
            for _ in 0..<100 {
                usleep(50_000)
                below = tree.descendantTaskCount(of: child)
                if below >= 2 { break }
            }
            #expect(below == 2, "two sleeps below sh")
            #expect(tree.children(of: child).count == 2)
            #expect(tree.children(of: getpid()).contains(child))
            let during = tree.descendantTaskCount(of: getpid())
            #expect(during >= before + 2)
            #expect(tree.taskIDs(of: child) == [child])
        }

        @Test func goneProcessHasNoTasks() throws {
            let tree = ProcessTree()
            let dead = try deadPID()
            #expect(tree.descendantTaskCount(of: dead) == 0)
            #expect(tree.children(of: dead).isEmpty)
            #expect(tree.taskIDs(of: dead).isEmpty)
        }

        /// A recorded tree:
        ///
        ///     100 (threads 100, 101)
        ///     ├── 200 (threads 200, 201)      child of thread 100
        ///     │   └── 500                      child of thread 201
        ///     │       └── 600 (gone: no directory)
        ///     ├── 300                          child of thread 100
        ///     └── 400 (threads 400, 401, 402)  child of thread 101
        ///     999 is not below 100.
        @Test func countsAFakeProcfsTree() throws {
            let root = try makeTempDir("proc")
            defer { removeTree(root) }
            func task(_ pid: Int32, _ tid: Int32, children: String) throws {
                if !exists("\(root)/\(pid)") { try makeDir("\(root)/\(pid)") }
                if !exists("\(root)/\(pid)/task") { try makeDir("\(root)/\(pid)/task") }
                try makeDir("\(root)/\(pid)/task/\(tid)")
                try writeFile("\(root)/\(pid)/task/\(tid)/children", children)
            }
            try task(100, 100, children: "200 300 ")
            try task(100, 101, children: "400\n")
            try task(200, 200, children: "")
            try task(200, 201, children: "500 ")
            try task(300, 300, children: "")
            try task(400, 400, children: "")
            try task(400, 401, children: "")
            try task(400, 402, children: "")
            try task(500, 500, children: "600 ")
            try task(999, 999, children: "100")
            // Entries that are not task ids are ignored.
            try writeFile("\(root)/100/task/status", "")

            let tree = ProcessTree(procRoot: root)
            #expect(tree.isSupported(selfPID: 100))
            #expect(!tree.isSupported(selfPID: 42))
            #expect(tree.taskIDs(of: 100).sorted() == [100, 101])
            #expect(tree.children(of: 100).sorted() == [200, 300, 400])
            // 200: 2 tasks, 300: 1, 400: 3, 500: 1, 600: gone.
            #expect(tree.descendantTaskCount(of: 100) == 7)
            #expect(tree.descendantTaskCount(of: 200) == 1)
            #expect(tree.descendantTaskCount(of: 300) == 0)
            #expect(tree.descendantTaskCount(of: 999) == 9)
            #expect(tree.descendantTaskCount(of: 600) == 0)
        }

        @Test func aPidListedTwiceIsCountedOnce() throws {
            let root = try makeTempDir("proc")
            defer { removeTree(root) }
            for (pid, children) in [(1, "2 3"), (2, "3"), (3, "")] as [(Int32, String)] {
                try makeDir("\(root)/\(pid)")
                try makeDir("\(root)/\(pid)/task")
                try makeDir("\(root)/\(pid)/task/\(pid)")
                try writeFile("\(root)/\(pid)/task/\(pid)/children", children)
            }
            #expect(ProcessTree(procRoot: root).descendantTaskCount(of: 1) == 2)
        }
    }
}

extension OnDiskTests {
    @Suite("ProcessTree.snapshot")
    struct ProcessSnapshotTests {
        /// A recorded build below jobgov (pid 1), pool at /run/j/fifo:
        ///
        ///     10 make (launched; fds 3 → pool, 4 → /dev/null)
        ///     ├── 20 sub-make (fd 5 → pool)
        ///     │   ├── 40 rustc, threads 40 41 42 (fd 0 → pool)
        ///     │   └── 50 (gone: listed, no directory)
        ///     └── 30 cc, a single-threaded leaf (fd 3 → pool, not read)
        @Test func recordedTree() throws {
            let root = try makeTempDir("snap")
            defer { removeTree(root) }
            func process(_ pid: Int32, tasks: [Int32: String], fds: [String: String] = [:]) throws {
                try makeDir("\(root)/\(pid)")
                try makeDir("\(root)/\(pid)/task")
                for (tid, children) in tasks {
                    try makeDir("\(root)/\(pid)/task/\(tid)")
                    try writeFile("\(root)/\(pid)/task/\(tid)/children", children)
                }
                try makeDir("\(root)/\(pid)/fd")
                for (fd, target) in fds {
                    try #require(symlink(target, "\(root)/\(pid)/fd/\(fd)") == 0)
                }
            }
            let pool = "/run/j/fifo"
            try process(1, tasks: [1: "10"])
            try process(10, tasks: [10: "20 30"], fds: ["3": pool, "4": "/dev/null"])
            try process(20, tasks: [20: "40 50"], fds: ["5": pool])
            try process(30, tasks: [30: ""], fds: ["3": pool])
            try process(40, tasks: [40: "", 41: "", 42: ""], fds: ["0": pool])

            let tree = ProcessTree(procRoot: root)
            #expect(tree.hasOpen(10, path: pool))
            #expect(tree.hasOpen(30, path: pool))
            #expect(!tree.hasOpen(10, path: "/run/j/other"))
            #expect(!tree.hasOpen(1, path: pool))
            #expect(!tree.hasOpen(77, path: pool))

            let snapshot = tree.snapshot(below: 1, poolPath: pool).sorted { $0.pid < $1.pid }
            #expect(snapshot == [
                BuildProcess(pid: 10, parent: 1, threads: 1, children: 2, holdsPool: true),
                BuildProcess(pid: 20, parent: 10, threads: 1, children: 2, holdsPool: true),
                BuildProcess(pid: 30, parent: 10, threads: 1, children: 0, holdsPool: false),
                BuildProcess(pid: 40, parent: 20, threads: 3, children: 0, holdsPool: true),
            ])
            // make: 2 children → 1; sub-make: 2 children → 1; rustc: 2 extra threads.
            #expect(tokenHoldingBound(processes: snapshot, launchedPID: 10) == 4)
        }

        @Test func realProcessHoldingThePool() throws {
            let tree = ProcessTree()
            try #require(tree.isSupported(), "this kernel has no /proc/PID/task/TID/children")
            let dir = try makeTempDir("snap")
            defer { removeTree(dir) }
            let pool = try TokenPool(fifoPath: "\(dir)/fifo")
            defer { pool.close() }
            #expect(tree.hasOpen(getpid(), path: pool.fifoPath))
            #expect(!tree.hasOpen(getpid(), path: "\(dir)/other"))

            // A pipe-style client inherits the pair; sh has children, so its descriptors are looked at.
            _ = try pool.openClientPipeEnds()
            let child = try ProcessLauncher.spawn(
                executable: "/bin/sh", arguments: ["sh", "-c", "sleep 5 & sleep 5; wait"],
                environment: ["PATH=/usr/bin:/bin"])
            pool.closeClientPipeEndsInParent()
            defer {
                for grandchild in tree.children(of: child) { kill(grandchild, SIGKILL) }
                kill(child, SIGKILL)
                var status: Int32 = 0
                _ = waitpid(child, &status, 0)
            }
            var snapshot: [BuildProcess] = []
            for _ in 0..<100 {
                usleep(50_000)
                snapshot = tree.snapshot(below: getpid(), poolPath: pool.fifoPath)
                if snapshot.first(where: { $0.pid == child })?.children == 2 { break }
            }
            let sh = try #require(snapshot.first { $0.pid == child })
            #expect(sh.parent == getpid())
            #expect(sh.children == 2)
            #expect(sh.threads == 1)
            #expect(sh.holdsPool)
            let sleeps = snapshot.filter { $0.parent == child }
            #expect(sleeps.count == 2)
            #expect(sleeps.allSatisfy { !$0.holdsPool && $0.children == 0 })
            #expect(tokenHoldingBound(processes: snapshot, launchedPID: child) == 1)
        }
    }
}

// MARK: Control socket

extension OnDiskTests {
    @Suite("Control socket")
    struct ControlSocketTests {
        /// Connects to `path`, sends `line`, lets the server handle it, and returns the reply line.
        private func exchange(_ server: ControlServer, path: String, line: String,
                              respond: (Result<ControlRequest, ControlProtocolError>) -> String) throws -> String {
            let fd = try connectAndSend(path: path, line: line)
            defer { close(fd) }
            // Accept, then read the request and reply: what the supervisor's poll loop would do.
            server.handleReadable(server.listener.rawValue, respond: respond)
            let connections = server.pollDescriptors.filter { $0 != server.listener.rawValue }
            try #require(connections.count == 1)
            server.handleReadable(connections[0], respond: respond)
            #expect(server.pollDescriptors == [server.listener.rawValue])
            return readReply(fd)
        }

        /// The whole reply, up to the server's closing the connection.
        private func readReply(_ fd: Int32) -> String {
            var reply: [UInt8] = []
            while true {
                let chunk = readBytes(fd, max: 512)
                if chunk.isEmpty { break }
                reply += chunk
            }
            return String(decoding: reply, as: UTF8.self)
        }

        /// A client connected to `path` that has sent `line`.
        private func connectAndSend(path: String, line: String) throws -> Int32 {
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            try #require(fd >= 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                let bytes = Array(path.utf8)
                raw.copyBytes(from: bytes)
                raw[bytes.count] = 0
            }
            let rc = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            if rc != 0 { close(fd) }
            try #require(rc == 0, "connect: errno \(errno)")
            #expect(writeBytes(fd, Array((line + "\n").utf8)) == line.utf8.count + 1)
            return fd
        }

        /// A reply put off (as `ctl freeze` waits for the cgroup's state) leaves the server answering others, and
        /// reaches its client when given.
        @Test func aReplyCanComeLater() throws {
            let dir = try makeTempDir("ctl")
            defer { removeTree(dir) }
            let path = "\(dir)/control"
            let server = try ControlServer(path: path)
            defer { server.close() }
            var putOff: Int32?
            let respond: (Int32, Result<ControlRequest, ControlProtocolError>) -> String? = { connection, request in
                if case .success(.freeze) = request {
                    putOff = connection
                    return nil
                }
                return "{}"
            }
            let freezing = try connectAndSend(path: path, line: "freeze")
            defer { close(freezing) }
            server.handleReadable(server.listener.rawValue, respond: respond)
            for fd in server.pollDescriptors where fd != server.listener.rawValue { server.handleReadable(fd, respond: respond) }
            let waiting = try #require(putOff)
            #expect(server.pollDescriptors == [server.listener.rawValue], "a connection waiting for its reply is not polled")
            var pfd = pollfd(fd: freezing, events: Int16(POLLIN), revents: 0)
            #expect(poll(&pfd, 1, 50) == 0, "no reply yet")

            let status = try connectAndSend(path: path, line: "status")
            defer { close(status) }
            server.handleReadable(server.listener.rawValue, respond: respond)
            for fd in server.pollDescriptors where fd != server.listener.rawValue { server.handleReadable(fd, respond: respond) }
            #expect(readReply(status) == "{}\n", "answered while the other waits")

            server.reply("ok frozen", to: waiting)
            #expect(readReply(freezing) == "ok frozen\n")
            server.reply("twice", to: waiting)  // a connection answered once is closed and forgotten
        }

        @Test func oneRequestOneReply() throws {
            let dir = try makeTempDir("ctl")
            defer { removeTree(dir) }
            let path = "\(dir)/control"
            let server = try ControlServer(path: path)
            defer { server.close() }
            let mode = try #require(fileMode(path))
            #expect(mode.type == S_IFSOCK)
            #expect(mode.permissions == 0o600)

            var seen: [Result<ControlRequest, ControlProtocolError>] = []
            let respond: (Result<ControlRequest, ControlProtocolError>) -> String = { request in
                seen.append(request)
                switch request {
                case .success(.setJobs(let n)): return "ok jobs=\(n)"
                case .success(.status): return "{}"
                case .success(let other): return "ok \(other.line)"
                case .failure(let e): return "error \(e.message)"
                }
            }
            #expect(try exchange(server, path: path, line: "jobs 6", respond: respond) == "ok jobs=6\n")
            let statusReply = try exchange(server, path: path, line: "status", respond: respond)
            #expect(statusReply == "{}\n")
            let bad = try exchange(server, path: path, line: "bogus", respond: respond)
            #expect(bad.hasPrefix("error "))
            #expect(seen.count == 3)
            #expect(seen.first == .success(.setJobs(6)))
        }

        @Test func closeRemovesTheSocket() throws {
            let dir = try makeTempDir("ctl")
            defer { removeTree(dir) }
            let server = try ControlServer(path: "\(dir)/control")
            server.close()
            #expect(!exists("\(dir)/control"))
        }

        @Test func clientReportsAMissingServer() throws {
            let dir = try makeTempDir("ctl")
            defer { removeTree(dir) }
            #expect(throws: SystemError.self) { try ControlClient.send(.status, to: "\(dir)/nothing") }
        }

        @Test func tooLongPathIsRefused() throws {
            let long = "/tmp/" + String(repeating: "x", count: 200)
            do {
                let server = try ControlServer(path: long)
                server.close()
                Issue.record("a socket path of \(long.count) bytes was accepted")
            } catch {
                #expect(error.errno == ENAMETOOLONG)
            }
        }
    }
}
