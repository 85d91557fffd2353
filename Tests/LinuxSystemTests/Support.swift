import Foundation
import Testing

/// The copied `Fixtures` folder inside the test bundle.
let fixturesRoot: String = {
    guard let url = Bundle.module.url(forResource: "Fixtures", withExtension: nil) else {
        fatalError("the LinuxSystemTests bundle has no Fixtures folder")
    }
    return url.path
}()

/// The root of one recorded tree (`hybrid`, `v2`, `v1`).
func fixtureTree(_ name: String) -> String { fixturesRoot + "/" + name }

/// The text of one fixture file, relative to `Fixtures`.
func fixture(_ relativePath: String) throws -> String {
    try String(contentsOfFile: fixturesRoot + "/" + relativePath, encoding: .utf8)
}

/// kB as the kernel prints them, in bytes.
func kB(_ value: UInt64) -> UInt64 { value * 1024 }
