import Testing
import JobgovCore

@Suite("TokenLedger")
struct TokenLedgerTests {
    /// A ledger whose pool has been filled for `jobs` jobs, as the supervisor does at start.
    private func filled(jobs: Int) -> TokenLedger {
        var ledger = TokenLedger(jobs: jobs)
        if case .write(let n) = ledger.action(inPool: 0) { ledger.didWrite(n) }
        return ledger
    }

    @Test func newLedgerWantsJobsMinusOneTokens() {
        let ledger = TokenLedger(jobs: 4)
        #expect(ledger.target == 3)
        #expect(ledger.targetJobs == 4)
        #expect(ledger.created == 0)
        #expect(ledger.action(inPool: 0) == .write(3))
    }

    @Test func oneJobNeedsNoTokens() {
        let ledger = TokenLedger(jobs: 1)
        #expect(ledger.target == 0)
        #expect(ledger.action(inPool: 0) == .none)
        #expect(TokenLedger(jobs: 0).target == 0)
        #expect(TokenLedger(jobs: -3).targetJobs == 1)
    }

    @Test func afterWritingNothingIsNeeded() {
        let ledger = filled(jobs: 4)
        #expect(ledger.created == 3)
        #expect(ledger.action(inPool: 3) == .none)
        // Tokens held by clients are not missing: nothing to write.
        #expect(ledger.action(inPool: 0) == .none)
        #expect(ledger.outstanding(inPool: 1) == 2)
        #expect(ledger.outstanding(inPool: 3) == 0)
    }

    @Test func partialWriteIsCompletedLater() {
        var ledger = TokenLedger(jobs: 5)
        ledger.didWrite(1)  // the FIFO took only one
        #expect(ledger.action(inPool: 1) == .write(3))
    }

    @Test func raise() {
        var ledger = filled(jobs: 4)
        ledger.setJobs(6)
        #expect(ledger.target == 5)
        #expect(ledger.targetJobs == 6)
        #expect(ledger.action(inPool: 1) == .write(2))
        ledger.didWrite(2)
        #expect(ledger.created == 5)
        #expect(ledger.action(inPool: 3) == .none)
        #expect(ledger.absorbed == 0)
    }

    @Test func lowerWithAllTokensInThePool() {
        var ledger = filled(jobs: 4)
        ledger.setJobs(2)
        #expect(ledger.action(inPool: 3) == .absorb(2))
        ledger.didAbsorb(2, inPoolBefore: 3)
        #expect(ledger.created == 1)
        #expect(ledger.absorbed == 2)
        #expect(ledger.discardedExtra == 0)
        #expect(ledger.action(inPool: 1) == .none)
    }

    @Test func lowerWhileClientsHoldTokensAbsorbsAsTheyComeBack() {
        var ledger = filled(jobs: 5)  // 4 tokens
        ledger.setJobs(2)  // wants 1
        // Only one token is in the pool; three are held by clients.
        #expect(ledger.action(inPool: 1) == .absorb(3))
        ledger.didAbsorb(1, inPoolBefore: 1)
        #expect(ledger.created == 3)
        #expect(ledger.absorbed == 1)
        #expect(ledger.outstanding(inPool: 0) == 3)
        // Two come back; both are absorbed.
        #expect(ledger.action(inPool: 2) == .absorb(2))
        ledger.didAbsorb(2, inPoolBefore: 2)
        #expect(ledger.created == 1)
        #expect(ledger.absorbed == 3)
        #expect(ledger.action(inPool: 0) == .none)
        #expect(ledger.outstanding(inPool: 0) == 1)
    }

    @Test func lowerThenRaiseBeforeAbsorbing() {
        var ledger = filled(jobs: 4)
        ledger.setJobs(2)
        ledger.setJobs(8)
        #expect(ledger.action(inPool: 3) == .write(4))
    }

    @Test func extraBytesFromAClientAreDiscarded() {
        var ledger = filled(jobs: 4)  // 3 tokens
        #expect(ledger.action(inPool: 5) == .absorb(2))
        ledger.didAbsorb(2, inPoolBefore: 5)
        #expect(ledger.discardedExtra == 2)
        #expect(ledger.created == 3)
        #expect(ledger.absorbed == 0)
        #expect(ledger.action(inPool: 3) == .none)
    }

    @Test func extraBytesAndLoweredTarget() {
        var ledger = filled(jobs: 4)  // 3 tokens
        ledger.setJobs(2)  // wants 1
        #expect(ledger.action(inPool: 5) == .absorb(4))
        ledger.didAbsorb(4, inPoolBefore: 5)
        #expect(ledger.discardedExtra == 2)
        #expect(ledger.absorbed == 2)
        #expect(ledger.created == 1)
        #expect(ledger.action(inPool: 1) == .none)
    }

    @Test func extraBytesAreCountedBeforeAbsorbedOnes() {
        var ledger = filled(jobs: 4)
        ledger.setJobs(2)
        // Only one byte could be read of the four asked for: it counts as the extra one first.
        ledger.didAbsorb(1, inPoolBefore: 4)
        #expect(ledger.discardedExtra == 1)
        #expect(ledger.absorbed == 0)
        #expect(ledger.created == 3)
    }

    @Test func recreatedTokensReplaceLostOnes() {
        var ledger = filled(jobs: 4)  // 3 tokens, all taken by a client that was then killed
        #expect(ledger.outstanding(inPool: 0) == 3)
        ledger.didRecreate(3)
        #expect(ledger.recreated == 3)
        // The replacements stand for the lost tokens: the count in circulation is unchanged.
        #expect(ledger.created == 3)
        #expect(ledger.action(inPool: 3) == .none)
        #expect(ledger.outstanding(inPool: 3) == 0)
        ledger.didRecreate(1)
        #expect(ledger.recreated == 4)
    }

    @Test func peakOutstandingKeepsTheMaximum() {
        var ledger = filled(jobs: 8)
        ledger.noteOutstanding(3)
        ledger.noteOutstanding(6)
        ledger.noteOutstanding(2)
        #expect(ledger.peakOutstanding == 6)
    }
}

@Suite("LostTokenDetector")
struct LostTokenDetectorTests {
    @Test func needsConsecutiveDeficitsAndReturnsTheMinimum() {
        var d = LostTokenDetector(checksRequired: 3)
        // Tokens are out, but the live clients can hold none of them.
        #expect(d.observe(outstanding: 3, bound: 0) == 0)
        #expect(d.observe(outstanding: 2, bound: 0) == 0)
        #expect(d.observe(outstanding: 4, bound: 0) == 2)
    }

    @Test func deficitIsOutstandingMinusBound() {
        var d = LostTokenDetector(checksRequired: 2)
        #expect(d.observe(outstanding: 7, bound: 3) == 0)
        #expect(d.observe(outstanding: 6, bound: 3) == 3)
    }

    @Test func startsOverAfterReporting() {
        var d = LostTokenDetector(checksRequired: 2)
        #expect(d.observe(outstanding: 3, bound: 0) == 0)
        #expect(d.observe(outstanding: 3, bound: 0) == 3)
        #expect(d.observe(outstanding: 3, bound: 0) == 0)
        #expect(d.observe(outstanding: 3, bound: 0) == 3)
    }

    @Test func aNonDeficitObservationResets() {
        var d = LostTokenDetector(checksRequired: 3)
        #expect(d.observe(outstanding: 3, bound: 0) == 0)
        #expect(d.observe(outstanding: 3, bound: 0) == 0)
        // The clients can hold every token out: no deficit, the count starts again.
        #expect(d.observe(outstanding: 3, bound: 3) == 0)
        #expect(d.observe(outstanding: 3, bound: 0) == 0)
        #expect(d.observe(outstanding: 3, bound: 0) == 0)
        #expect(d.observe(outstanding: 3, bound: 0) == 3)
    }

    @Test func tokensWithinTheBoundAreNotLost() {
        var d = LostTokenDetector(checksRequired: 1)
        #expect(d.observe(outstanding: 4, bound: 4) == 0)
        #expect(d.observe(outstanding: 0, bound: 0) == 0)
        #expect(d.observe(outstanding: 5, bound: 4) == 1)
        // A negative bound counts as zero.
        #expect(d.observe(outstanding: 2, bound: -1) == 2)
    }

    @Test func checksRequiredIsAtLeastOne() {
        #expect(LostTokenDetector(checksRequired: 0).checksRequired == 1)
        #expect(LostTokenDetector().checksRequired == 3)
        var d = LostTokenDetector(checksRequired: 0)
        #expect(d.observe(outstanding: 2, bound: 0) == 2)
    }
}

@Suite("tokenHoldingBound")
struct TokenHoldingBoundTests {
    private func p(_ pid: Int32, parent: Int32, threads: Int = 1, children: Int = 0, holds: Bool = true) -> BuildProcess {
        BuildProcess(pid: pid, parent: parent, threads: threads, children: children, holdsPool: holds)
    }

    @Test func launchedClientRunsItsFirstJobOnItsImplicitSlot() {
        // jobgov (1) launched make (10), which runs 4 jobs: at most 3 tokens.
        #expect(tokenHoldingBound(processes: [p(10, parent: 1, children: 4)], launchedPID: 10) == 3)
        #expect(tokenHoldingBound(processes: [p(10, parent: 1, children: 1)], launchedPID: 10) == 0)
        #expect(tokenHoldingBound(processes: [p(10, parent: 1, children: 0)], launchedPID: 10) == 0)
    }

    @Test func extraThreadsHoldTokens() {
        // rustc with 4 threads (3 codegen threads beyond the main one) under cargo with 1 child.
        let build = [p(10, parent: 1, children: 1), p(20, parent: 10, threads: 4)]
        #expect(tokenHoldingBound(processes: build, launchedPID: 10) == 3)
    }

    @Test func subMakeOfAClientGetsNoExtraToken() {
        // make (10) → sub-make (20) with 3 jobs: 20 runs on the token 10 took for it.
        let build = [p(10, parent: 1, children: 2), p(20, parent: 10, children: 3)]
        #expect(tokenHoldingBound(processes: build, launchedPID: 10) == 1 + 2)
    }

    @Test func clientWhoseParentIsNotAClientGetsOneMore() {
        // sh (10, does not hold the pool) → make (20, 2 jobs); or an orphaned sub-make.
        let build = [p(10, parent: 1, children: 1, holds: false), p(20, parent: 10, children: 2)]
        #expect(tokenHoldingBound(processes: build, launchedPID: 10) == 1 + 1)
        #expect(tokenHoldingBound(processes: [p(30, parent: 1, children: 1)], launchedPID: 10) == 1)
    }

    @Test func processesWithoutThePoolCountForNothing() {
        let build = [p(10, parent: 1, threads: 8, children: 5, holds: false)]
        #expect(tokenHoldingBound(processes: build, launchedPID: 10) == 0)
        #expect(tokenHoldingBound(processes: [], launchedPID: 10) == 0)
    }
}
