/// The files changed under some roots while `jobgov changes` ran, and how they are written out for backup tools.
///
/// Paths are raw bytes: Linux names need not be UTF-8, and a backup list must name the file exactly.
/// Pure: the watcher feeds it events (path already resolved), and the caller says what exists at the end.
public struct FileChangeSet: Sendable {
    public enum Event: Sendable, Equatable {
        /// Created, or moved here from elsewhere.
        case appeared
        /// Contents or attributes changed.
        case modified
        /// Deleted, or moved away.
        case disappeared
    }

    public enum Kind: Sendable, Equatable { case directory, other }

    /// Normalised roots (no trailing slash except `/` itself).
    public let roots: [[UInt8]]
    /// Every path seen, with whether it was new in this run (its first event made it appear).
    public private(set) var paths: [ByteKey: Bool] = [:]
    /// Events outside the roots, ignored (a filesystem-wide mark sees the whole filesystem).
    public private(set) var outside = 0

    public init(roots: [[UInt8]]) {
        self.roots = roots.map { root in
            var r = root
            while r.count > 1 && r.last == UInt8(ascii: "/") { r.removeLast() }
            return r
        }
    }

    /// Whether `path` is a root or lies below one.
    public func covers(_ path: [UInt8]) -> Bool {
        roots.contains { root in
            if root == [UInt8(ascii: "/")] { return path.first == UInt8(ascii: "/") }
            guard path.count >= root.count, path.starts(with: root) else { return false }
            return path.count == root.count || path[root.count] == UInt8(ascii: "/")
        }
    }

    public mutating func record(_ event: Event, path: [UInt8]) {
        guard covers(path) else {
            outside += 1
            return
        }
        let key = ByteKey(path)
        if paths[key] == nil { paths[key] = (event == .appeared) }
    }

    public struct Result: Sendable, Equatable {
        /// What exists now and changed: files, symbolic links and so on; directories only when empty (a directory
        /// with contents is given by its contents, so that a list is the same for tools that recurse and those that
        /// do not). Sorted, without duplicates.
        public var changed: [[UInt8]]
        /// What existed before the run and is gone now (deleted, or renamed: the new name is in `changed`).
        public var deleted: [[UInt8]]
    }

    /// The final lists. `kind` says what is at a path now (nil: nothing); `contents` lists a directory's entries
    /// below it, recursively, as full paths with their kinds.
    public func result(kind: ([UInt8]) -> Kind?,
                       contents: ([UInt8]) -> [([UInt8], Kind)]) -> Result {
        var changed = Set<ByteKey>()
        var deleted: [[UInt8]] = []
        for (key, isNew) in paths {
            let path = key.bytes
            switch kind(path) {
            case nil:
                if !isNew { deleted.append(path) }
            case .other?:
                changed.insert(key)
            case .directory?:
                // A directory moved in from elsewhere brings contents that raised no event of their own.
                let below = contents(path)
                var hasChild = Set<ByteKey>()
                for (child, childKind) in below {
                    if childKind == .other { changed.insert(ByteKey(child)) }
                    if let slash = child.lastIndex(of: UInt8(ascii: "/")) { hasChild.insert(ByteKey(Array(child[..<slash]))) }
                }
                for (child, childKind) in below where childKind == .directory && !hasChild.contains(ByteKey(child)) {
                    changed.insert(ByteKey(child))
                }
                if below.isEmpty { changed.insert(key) }
            }
        }
        // A directory that is not empty is given by its contents.
        var parents = Set<ByteKey>()
        for path in changed {
            var p = path.bytes
            while let slash = p.lastIndex(of: UInt8(ascii: "/")), slash > 0 {
                p.removeSubrange(slash...)
                if !parents.insert(ByteKey(p)).inserted { break }
            }
        }
        let files = changed.filter { !parents.contains($0) }.map(\.bytes)
        return Result(changed: files.sorted(by: Self.before), deleted: deleted.sorted(by: Self.before))
    }

    static func before(_ a: [UInt8], _ b: [UInt8]) -> Bool { a.lexicographicallyPrecedes(b) }

    /// One path per line, or NUL-terminated with `nul`. A name with a newline in it cannot be written one per line:
    /// such paths are left out and returned in `skipped`.
    public static func encode(_ paths: [[UInt8]], nul: Bool) -> (bytes: [UInt8], skipped: [[UInt8]]) {
        var out: [UInt8] = []
        var skipped: [[UInt8]] = []
        for path in paths {
            if !nul && path.contains(UInt8(ascii: "\n")) {
                skipped.append(path)
                continue
            }
            out += path
            out.append(nul ? 0 : UInt8(ascii: "\n"))
        }
        return (out, skipped)
    }
}

/// Bytes as a dictionary key, hashed in one call rather than byte by byte as `[UInt8]` is (hashing and lookups
/// were about a tenth of `jobgov changes`' CPU with 100,000 changed files).
public struct ByteKey: Hashable, Sendable {
    public var bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public func hash(into hasher: inout Hasher) { bytes.withUnsafeBytes { hasher.combine(bytes: $0) } }
}
