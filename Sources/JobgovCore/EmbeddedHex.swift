/// The binaries compiled into jobgov by its build plugins (jobgov-shell, the BPF object) are Swift string literals of
/// hex digits, two per byte: a byte-array literal of that size takes the compiler minutes, a string takes nothing.
public enum EmbeddedHex {
    /// How many bytes `hex` decodes to.
    public static func byteCount(_ hex: StaticString) -> Int { hex.utf8CodeUnitCount / 2 }

    /// Decodes `hex` (either case) into the first `byteCount(hex)` bytes of `buffer`.
    public static func decode(_ hex: StaticString, into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= byteCount(hex), "the buffer is smaller than the embedded binary")
        // A digit's low nibble: '0'-'9' are 0x30-0x39; 'a'-'f' and, with 0x20 set, 'A'-'F' are 0x61-0x66.
        func nibble(_ c: UInt8) -> UInt8 { c <= 0x39 ? c - 0x30 : (c | 0x20) - 0x57 }
        let digits = hex.utf8Start
        for i in 0..<byteCount(hex) {
            buffer[i] = nibble(digits[2 * i]) << 4 | nibble(digits[2 * i + 1])
        }
    }

    public static func bytes(_ hex: StaticString) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: byteCount(hex)) { buffer, count in
            decode(hex, into: UnsafeMutableRawBufferPointer(buffer))
            count = buffer.count
        }
    }
}
