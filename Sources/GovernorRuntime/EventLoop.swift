#if canImport(Glibc)
import Glibc
#endif

/// One descriptor to wait on, and what came back.
public struct PollRequest: Sendable, Equatable {
    public var fd: Int32
    public var events: Int16
    public var revents: Int16 = 0
    public init(fd: Int32, events: Int16, revents: Int16 = 0) {
        self.fd = fd
        self.events = events
        self.revents = revents
    }
}

/// The wait itself: poll(2) on the kernel, a script in tests.
public protocol Polling {
    /// Waits at most `timeout` seconds for any of `requests`; fills in `revents`. Returns false when the wait failed.
    func poll(_ requests: inout [PollRequest], timeout: Double) -> Bool
}

/// poll(2), retried when a signal interrupts it.
public struct SystemPoller: Polling {
    public init() {}
    public func poll(_ requests: inout [PollRequest], timeout: Double) -> Bool {
        var fds = requests.map { pollfd(fd: $0.fd, events: $0.events, revents: 0) }
        let ms = Int32(max(0, min(timeout * 1000, 3_600_000)).rounded(.up))
        var ready: Int32
        repeat { ready = Glibc.poll(&fds, nfds_t(fds.count), ms) } while ready < 0 && errno == EINTR
        guard ready >= 0 else { return false }
        for i in requests.indices { requests[i].revents = fds[i].revents }
        return true
    }
}

/// The failure of the wait itself, which leaves nothing to do but stop.
public struct EventLoopError: Error, CustomStringConvertible, Sendable {
    public var description: String
}

/// One loop over named sources: descriptors that wake it (signals, a socket, a pipe, a PSI trigger) and timers
/// (the governor's tick, periodic checks, a one-shot delay). Single-threaded: every handler runs on the loop, one
/// after another, and none may block; a handler that needs to wait for something registers a timer or a
/// descriptor instead. The clock and the wait are injected, so the loop is tested without a kernel.
public final class EventLoop {
    /// A source's handle, to remove it.
    public struct Source: Hashable, Sendable {
        fileprivate let id: Int
    }

    private enum Kind {
        /// The descriptors to wait on now (an empty list: not now), and what to do when one is ready.
        case descriptors(events: Int16, current: () -> [Int32], ready: (Int32, Int16) -> Void)
        /// Fires when `due`; then again `interval()` seconds later, or never when that is nil.
        case timer(due: Double, interval: () -> Double?, fire: (Double) -> Void)
    }

    private struct Entry {
        var name: String
        var kind: Kind
    }

    private var entries: [(Source, Entry)] = []
    private var nextID = 0
    private let clock: () -> Double
    private let poller: Polling
    /// Runs after the descriptors' handlers and before the timers, on every wake.
    public var onWake: (() -> Void)?
    /// Runs before every wait.
    public var beforeWait: (() -> Void)?

    public init(clock: @escaping () -> Double, poller: Polling = SystemPoller()) {
        self.clock = clock
        self.poller = poller
    }

    /// Names of the sources, in the order they run (for messages and tests).
    public var sourceNames: [String] { entries.map(\.1.name) }

    /// Wakes the loop when one of `descriptors()` (asked anew before each wait) is ready for `events`.
    @discardableResult
    public func watch(_ name: String, events: Int16, descriptors: @escaping () -> [Int32],
                      ready: @escaping (Int32, Int16) -> Void) -> Source {
        add(name, .descriptors(events: events, current: descriptors, ready: ready))
    }

    /// Calls `fire` with the time every `interval()` seconds (asked anew after each firing), the first time
    /// `first` seconds from now (else one interval from now); a nil interval ends the timer.
    @discardableResult
    public func every(_ name: String, first: Double? = nil, interval: @escaping () -> Double?,
                      fire: @escaping (Double) -> Void) -> Source {
        let start = clock() + (first ?? interval() ?? 0)
        return add(name, .timer(due: start, interval: interval, fire: fire))
    }

    /// Calls `fire` once, `delay` seconds from now.
    @discardableResult
    public func after(_ name: String, _ delay: Double, fire: @escaping (Double) -> Void) -> Source {
        add(name, .timer(due: clock() + delay, interval: { nil }, fire: fire))
    }

    public func remove(_ source: Source) {
        entries.removeAll { $0.0 == source }
    }

    private func add(_ name: String, _ kind: Kind) -> Source {
        let source = Source(id: nextID)
        nextID += 1
        entries.append((source, Entry(name: name, kind: kind)))
        return source
    }

    /// Waits for and runs sources until `done()` is true (asked before each wait). `longestWait` bounds a wait with
    /// no timer due.
    public func run(longestWait: Double = 1, until done: () -> Bool) throws(EventLoopError) {
        while !done() {
            try turn(longestWait: longestWait)
        }
    }

    /// One wait and whatever it woke.
    public func turn(longestWait: Double = 1) throws(EventLoopError) {
        beforeWait?()
        var requests: [PollRequest] = []
        var owners: [Source] = []
        var wait = longestWait
        let now = clock()
        for (source, entry) in entries {
            switch entry.kind {
            case .descriptors(let events, let current, _):
                for fd in current() {
                    requests.append(PollRequest(fd: fd, events: events))
                    owners.append(source)
                }
            case .timer(let due, _, _):
                wait = min(wait, max(0, due - now))
            }
        }
        guard poller.poll(&requests, timeout: wait) else {
            throw EventLoopError(description: "poll failed: " + String(cString: strerror(errno)))
        }
        for (request, owner) in zip(requests, owners) where request.revents != 0 {
            // A source removed by an earlier handler of this wake is not run.
            guard let entry = entries.first(where: { $0.0 == owner })?.1,
                  case .descriptors(_, _, let ready) = entry.kind else { continue }
            ready(request.fd, request.revents)
        }
        onWake?()
        let after = clock()
        for (source, entry) in entries {
            // A timer removed by an earlier handler of this wake does not fire.
            guard case .timer(let due, let interval, let fire) = entry.kind, due <= after + 0.000_5,
                  entries.contains(where: { $0.0 == source }) else { continue }
            fire(after)
            // The interval is asked after the firing, which may change it (the governor ticks less often when calm).
            guard entries.contains(where: { $0.0 == source }) else { continue }
            if let next = interval() {
                replace(source, with: .timer(due: after + next, interval: interval, fire: fire))
            } else {
                remove(source)
            }
        }
    }

    private func replace(_ source: Source, with kind: Kind) {
        guard let i = entries.firstIndex(where: { $0.0 == source }) else { return }
        entries[i].1.kind = kind
    }
}
