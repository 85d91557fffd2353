import JobgovCore
import Testing

/// The helpers that turn two samples into a rate guard every delta (zero or negative intervals, counters that
/// went backwards) instead of dividing by zero or wrapping.
@Suite("Rates between samples")
struct RateTests {
    private func line(_ total: UInt64) -> PressureLine {
        PressureLine(avg10: 0, avg60: 0, avg300: 0, totalMicroseconds: total)
    }

    @Test func stalledFraction() {
        #expect(PressureRate.stalledFraction(previous: line(1_000_000), current: line(1_250_000), elapsedSeconds: 0.5)
            == 0.5)
        #expect(PressureRate.stalledFraction(previous: line(7), current: line(7), elapsedSeconds: 0.1) == 0)
        // Read jitter can make a fully stalled interval look longer than the interval.
        #expect(PressureRate.stalledFraction(previous: line(0), current: line(150_000), elapsedSeconds: 0.1) == 1)
    }

    @Test(arguments: [0, -0.1, Double.nan, Double.infinity])
    func stalledFractionRejectsBadIntervals(elapsed: Double) {
        #expect(PressureRate.stalledFraction(previous: line(0), current: line(10), elapsedSeconds: elapsed) == nil)
    }

    @Test func stalledFractionRejectsCounterGoingBackwards() {
        #expect(PressureRate.stalledFraction(previous: line(500), current: line(100), elapsedSeconds: 1) == nil)
    }

    private func cpu(busy: UInt64, idle: UInt64, iowait: UInt64 = 0) -> CPUTimes {
        CPUTimes(user: busy, nice: 0, system: 0, idle: idle, iowait: iowait, irq: 0, softirq: 0, steal: 0)
    }

    @Test func utilization() {
        #expect(CPUTimes.utilization(previous: cpu(busy: 100, idle: 100), current: cpu(busy: 130, idle: 170)) == 0.3)
        let stolen = CPUTimes(user: 10, nice: 0, system: 0, idle: 10, iowait: 0, irq: 0, softirq: 0, steal: 10)
        #expect(CPUTimes.utilization(previous: cpu(busy: 0, idle: 0), current: stolen) == 20.0 / 30.0)
    }

    @Test func utilizationGuards() {
        let same = cpu(busy: 100, idle: 100)
        #expect(CPUTimes.utilization(previous: same, current: same) == nil)
        #expect(CPUTimes.utilization(previous: cpu(busy: 100, idle: 100), current: cpu(busy: 90, idle: 120)) == nil)
        #expect(CPUTimes.utilization(previous: cpu(busy: 100, idle: 100), current: cpu(busy: 110, idle: 90)) == nil)
    }

    @Test func utilizationToleratesIowaitMovingToIdle() {
        // iowait alone can decrease on tickless kernels; idle + iowait does not.
        let before = cpu(busy: 100, idle: 100, iowait: 10)
        let after = cpu(busy: 110, idle: 115, iowait: 5)
        #expect(CPUTimes.utilization(previous: before, current: after) == 0.5)
    }

    private func disk(reads: UInt64, readMs: UInt64, writes: UInt64 = 0, writeMs: UInt64 = 0) -> DiskStat {
        DiskStat(name: "vda", readsCompleted: reads, sectorsRead: 0, readMilliseconds: readMs, writesCompleted: writes,
                 sectorsWritten: 0, writeMilliseconds: writeMs, inFlight: 0, ioTicksMilliseconds: 0,
                 weightedMilliseconds: 0)
    }

    @Test func averageLatency() {
        let before = disk(reads: 100, readMs: 1000, writes: 50, writeMs: 500)
        let after = disk(reads: 106, readMs: 1060, writes: 54, writeMs: 1340)
        #expect(DiskStat.averageLatencyMilliseconds(previous: before, current: after) == 90)
    }

    @Test func averageLatencyGuards() {
        let before = disk(reads: 100, readMs: 1000)
        #expect(DiskStat.averageLatencyMilliseconds(previous: before, current: before) == nil)
        #expect(DiskStat.averageLatencyMilliseconds(previous: before, current: disk(reads: 100, readMs: 1200)) == nil)
        #expect(DiskStat.averageLatencyMilliseconds(previous: before, current: disk(reads: 50, readMs: 1200)) == nil)
        #expect(DiskStat.averageLatencyMilliseconds(previous: before, current: disk(reads: 110, readMs: 900)) == nil)
    }

    @Test func vmstatAccessorsAreNilWithoutTheirKeys() {
        let empty = VMStat(counters: ["pgscan_direct_throttle": 5, "nr_free_pages": 1])
        #expect(empty.pgscanKswapd == nil)
        #expect(empty.pgscanDirect == nil)
        #expect(empty.allocstall == nil)
        #expect(empty.oomKill == nil)
        #expect(empty.workingsetRefault == nil)
        #expect(VMStat(counters: ["workingset_refault_file": 3]).workingsetRefault == 3)
    }
}
