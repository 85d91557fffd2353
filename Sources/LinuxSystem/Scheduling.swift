#if canImport(Glibc)
import Glibc
#endif

/// Moves the calling thread in and out of the lowest real-time priority (SCHED_FIFO 1).
///
/// Why: when the target is lowered, jobgov must read back tokens that clients return. make and ninja write a
/// token back and read one again microseconds later for their next job; at normal priority jobgov loses that race
/// nearly every time, and the pool shrinks only by chance. A real-time waiter preempts the client as soon as its
/// write wakes it, and wins. jobgov stays real-time only while it has tokens to absorb, and does little then.
/// Returns false when not permitted (no CAP_SYS_NICE): lowering then still converges, only more slowly.
@discardableResult
public func setRealtimePriority(_ on: Bool) -> Bool {
    var param = sched_param()
    param.sched_priority = on ? 1 : 0
    return sched_setscheduler(0, on ? SCHED_FIFO : SCHED_OTHER, &param) == 0
}
