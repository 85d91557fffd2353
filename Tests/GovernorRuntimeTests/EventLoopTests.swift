#if canImport(Glibc)
import Glibc
#endif
import GovernorRuntime
import Testing

/// A clock that moves only when a wait passes time, and a poller that plays a script: at given times, given
/// descriptors are ready.
final class ScriptedPoller: Polling {
    var now = 0.0
    /// fd → the times it becomes ready (each readiness is consumed once reported).
    var readyAt: [Int32: [Double]] = [:]
    /// Every wait: the descriptors asked for and the timeout.
    private(set) var waits: [(fds: [Int32], timeout: Double)] = []

    func poll(_ requests: inout [PollRequest], timeout: Double) -> Bool {
        waits.append((requests.map(\.fd), timeout))
        let asked = Set(requests.map(\.fd))
        let next = readyAt.filter { asked.contains($0.key) }.values.compactMap(\.first).min()
        if let next, next <= now + timeout {
            now = max(now, next)
        } else {
            now += timeout
        }
        for i in requests.indices {
            if let first = readyAt[requests[i].fd]?.first, first <= now {
                requests[i].revents = requests[i].events
                readyAt[requests[i].fd]?.removeFirst()
            }
        }
        return true
    }
}

@Suite("The event loop")
struct EventLoopTests {
    @Test("timers fire at their intervals, and the wait lasts until the next one is due")
    func timers() throws {
        let poller = ScriptedPoller()
        let loop = EventLoop(clock: { poller.now }, poller: poller)
        var ticks: [Double] = []
        var checks: [Double] = []
        loop.every("tick", first: 0, interval: { 0.1 }) { ticks.append($0) }
        loop.every("check", interval: { 0.5 }) { checks.append($0) }
        try loop.run { poller.now >= 1.0 - 1e-9 }
        #expect(ticks.count == 11 && abs(ticks.last! - 1.0) < 1e-9, "\(ticks)")
        #expect(checks.count == 2 && abs(checks[0] - 0.5) < 1e-9 && abs(checks[1] - 1.0) < 1e-9, "\(checks)")
        #expect(poller.waits.allSatisfy { $0.timeout <= 0.1 + 1e-9 })
    }

    @Test("an interval asked after each firing changes the pace; nil ends the timer")
    func changingInterval() throws {
        let poller = ScriptedPoller()
        let loop = EventLoop(clock: { poller.now }, poller: poller)
        var fired: [Double] = []
        loop.every("tick", first: 0, interval: { fired.count < 3 ? 0.1 : fired.count < 5 ? 0.5 : nil }) { fired.append($0) }
        try loop.run(longestWait: 1) { poller.now >= 3 }
        #expect(fired.map { ($0 * 10).rounded() / 10 } == [0, 0.1, 0.2, 0.7, 1.2])
        #expect(loop.sourceNames.isEmpty, "the ended timer is gone")
    }

    @Test("a one-shot timer fires once, after its delay")
    func once() throws {
        let poller = ScriptedPoller()
        let loop = EventLoop(clock: { poller.now }, poller: poller)
        var fired: [Double] = []
        loop.after("attach", 1) { fired.append($0) }
        try loop.run(longestWait: 0.3) { poller.now >= 2 }
        #expect(fired.count == 1 && abs(fired[0] - 1) < 1e-9, "\(fired)")
    }

    @Test("a descriptor wakes the loop at once, and only while its source lists it")
    func descriptors() throws {
        let poller = ScriptedPoller()
        poller.readyAt = [7: [0.25, 0.8], 9: [0.3]]
        let loop = EventLoop(clock: { poller.now }, poller: poller)
        var seen: [(Int32, Double)] = []
        var absorbing = false
        loop.watch("signals", events: Int16(POLLIN), descriptors: { [7] }) { fd, _ in seen.append((fd, poller.now)) }
        loop.watch("returned tokens", events: Int16(POLLIN), descriptors: { absorbing ? [9] : [] }) { fd, _ in
            seen.append((fd, poller.now))
        }
        var wakes = 0
        loop.onWake = { wakes += 1 }
        loop.after("start absorbing", 0.5) { _ in absorbing = true }
        try loop.run(longestWait: 1) { poller.now >= 1.5 }
        #expect(seen.map(\.0) == [7, 9, 7], "fd 9 is asked for only from 0.5 s, then reports its readiness")
        #expect(abs(seen[0].1 - 0.25) < 1e-9 && abs(seen[1].1 - 0.5) < 1e-9 && abs(seen[2].1 - 0.8) < 1e-9)
        #expect(poller.waits.first?.fds == [7])
        #expect(poller.waits.contains { $0.fds == [7, 9] })
        #expect(wakes == poller.waits.count, "onWake runs on every wake")
    }

    @Test("a handler can remove a source, its own or another, within the same wake")
    func removal() throws {
        let poller = ScriptedPoller()
        let loop = EventLoop(clock: { poller.now }, poller: poller)
        var a = 0, b = 0
        var second: EventLoop.Source?
        loop.every("a", first: 0, interval: { 0.1 }) { _ in
            a += 1
            if a == 2, let s = second { loop.remove(s) }
        }
        second = loop.every("b", first: 0, interval: { 0.1 }) { _ in b += 1 }
        try loop.run { poller.now >= 0.5 }
        #expect(a == 6 && b == 1, "b ran once, then a removed it before its second firing (a \(a), b \(b))")
        #expect(loop.sourceNames == ["a"])
    }

    @Test("a failed wait stops the loop with the reason")
    func failedWait() {
        struct Failing: Polling {
            func poll(_ requests: inout [PollRequest], timeout: Double) -> Bool { errno = EBADF; return false }
        }
        let loop = EventLoop(clock: { 0 }, poller: Failing())
        #expect(throws: EventLoopError.self) { try loop.run { false } }
    }

    @Test("the system poller waits on a real pipe")
    func realPipe() throws {
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        defer { close(ends[0]); close(ends[1]) }
        var requests = [PollRequest(fd: ends[0], events: Int16(POLLIN))]
        #expect(SystemPoller().poll(&requests, timeout: 0.01) && requests[0].revents == 0)
        #expect(write(ends[1], "x", 1) == 1)
        #expect(SystemPoller().poll(&requests, timeout: 1) && requests[0].revents & Int16(POLLIN) != 0)
    }
}
