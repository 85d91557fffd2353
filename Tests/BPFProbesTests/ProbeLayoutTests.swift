import BPFProbes
import Testing

/// The header bpf/jobgov_probes.h as Swift imports it against the same header as compiled into the BPF object
/// (its BTF): sizes and field offsets of every shared struct, key and value sizes of every map user space touches.
/// Needs no privilege: the object is opened, not loaded.
@Suite("BPF header layout")
struct ProbeLayoutTests {
    @Test func swiftAndBPFAgreeOnTheSharedHeader() {
        #expect(ProbeLayout.mismatches() == [])
    }
}
