import Testing
@testable import JobgovCore

/// The exec gate's user side: which held processes go, what credit the kernel gets, which tools get a gate.
@Suite("Exec gate admission")
struct GateAdmissionTests {
    private func held(_ pid: Int32, job: Int32? = nil, at since: UInt64) -> GateAdmission.Held {
        GateAdmission.Held(pid: pid, job: job ?? pid, since: since)
    }

    @Test func heldJobsGoOldestFirstWhileTheTargetLeavesRoom() {
        let waiting = [held(30, at: 300), held(10, at: 100), held(20, at: 200)]
        #expect(GateAdmission.release(target: 4, admittedJobs: 2, held: waiting).map(\.pid) == [10, 20])
        #expect(GateAdmission.release(target: 4, admittedJobs: 4, held: waiting).isEmpty)
        #expect(GateAdmission.release(target: 2, admittedJobs: 5, held: waiting).isEmpty, "over the target: none")
        #expect(GateAdmission.release(target: 8, admittedJobs: 0, held: waiting).map(\.pid) == [10, 20, 30])
    }

    @Test func theProcessesOfOneJobGoTogetherAndTakeOnePlace() {
        // Job 7's root forked without executing (a subshell): two of its processes wait, both for job 7.
        let waiting = [held(71, job: 7, at: 50), held(90, at: 60), held(72, job: 7, at: 80)]
        #expect(GateAdmission.release(target: 3, admittedJobs: 2, held: waiting).map(\.pid) == [71, 72])
        #expect(GateAdmission.release(target: 4, admittedJobs: 2, held: waiting).map(\.pid) == [71, 72, 90])
    }

    @Test func oneJobAlwaysRuns() {
        // A target of 0 never comes from the governor; the gate still lets one job run when none does.
        #expect(GateAdmission.release(target: 0, admittedJobs: 0, held: [held(5, at: 1)]).map(\.pid) == [5])
        #expect(GateAdmission.release(target: 0, admittedJobs: 1, held: [held(5, at: 1)]).isEmpty)
    }

    @Test func theKernelGetsWhatRoomIsLeft() {
        // 10 admitted by the kernel so far, 7 admitted jobs ended, 3 alive: with a target of 5, two more.
        let credit = GateAdmission.kernelCredit(target: 5, admittedJobs: 3, admits: 10, ends: 7)
        #expect(credit == 5)
        #expect(Int64(10) - 7 + 2 == credit, "two admissions later the kernel stops: 12 - 7 is not below 5")
        // Released jobs are alive but were not admitted by the kernel: ends may pass admits.
        #expect(GateAdmission.kernelCredit(target: 2, admittedJobs: 4, admits: 1, ends: 6) == -5,
                "over the target: no credit at all (1 - 6 is not below -5)")
        #expect(GateAdmission.kernelCredit(target: 0, admittedJobs: 0, admits: 0, ends: 0) == 1)
    }

    @Test func onlyToolsThatTakeNoTokensGetTheGate() {
        #expect(GateAdmission.wanted(argv: ["xargs", "-P", "16", "-n1", "./job.sh"]))
        #expect(GateAdmission.wanted(argv: ["/usr/bin/parallel", "-j8", "cmd"]))
        #expect(GateAdmission.wanted(argv: ["./build.sh"]))
        for argv in [["make", "-j8"], ["/usr/bin/ninja"], ["cargo", "build"], ["cmake", "--build", "b"], ["samu"],
                     ["gmake"]] {
            #expect(!GateAdmission.wanted(argv: argv), "\(argv)")
        }
        #expect(!GateAdmission.wanted(argv: []))
    }
}
