import Foundation
import Testing

/// Peak concurrency, measured by the jobs themselves, never exceeds the target plus the implicit slots of the
/// clients jobgov launched directly, for every real client.
@Suite("Concurrency limits with real clients", .serialized)
struct ConcurrencyTests {
    @Test("make never runs more than -j jobs, and does run that many",
          arguments: [Clients.make43, Clients.make44])
    func makeRespectsTarget(make: String) throws {
        try Clients.require(make)
        let s = try Scratch()
        try s.write("Makefile", flatMakefile(count: 12, seconds: 0.4))
        let r = try jobgov([make, "-j3"], in: s)
        #expect(r.status == 0, "\(r.stderr)")
        let log = JobLog(s.read("job.log"))
        #expect(log.count == 12)
        #expect(log.peak() <= 3)
        #expect(log.peak() == 3, "the pool should let make run 3 jobs at once")
        #expect(!r.stderr.contains("jobserver unavailable"))
        #expect(!r.stderr.contains("resetting jobserver mode"))
        #expect(s.runtimeLeftovers.isEmpty)
    }

    @Test("ninja 1.13 (fifo jobserver) never runs more than -j jobs, and does run that many")
    func ninjaRespectsTarget() throws {
        try Clients.require(Clients.ninja)
        let s = try Scratch()
        try s.write("build.ninja", flatNinja(count: 12, seconds: 0.4))
        let r = try jobgov([Clients.ninja, "-j3"], in: s)
        #expect(r.status == 0, "\(r.stderr)")
        let log = JobLog(s.read("job.log"))
        #expect(log.count == 12)
        #expect(log.peak() <= 3)
        #expect(log.peak() == 3)
        #expect(!r.stdout.contains("Ignoring jobserver") && !r.stderr.contains("Ignoring jobserver"))
        #expect(!r.stdout.contains("Could not initialize jobserver") && !r.stderr.contains("Could not initialize jobserver"))
    }

    @Test("cargo never runs more than -j build scripts at once, and does run that many")
    func cargoRespectsTarget() throws {
        try Clients.require(Clients.cargo)
        let s = try Scratch()
        let crates = (1...6).map { "c\($0)" }
        var deps = ""
        for c in crates {
            try s.write("\(c)/Cargo.toml", """
                [package]
                name = "\(c)"
                version = "0.1.0"
                edition = "2021"
                build = "build.rs"

                """)
            try s.write("\(c)/src/lib.rs", "pub fn f() -> u32 { 1 }\n")
            // A build script is one cargo job: it records itself and sleeps.
            try s.write("\(c)/build.rs", """
                fn main() {
                    let s = std::process::Command::new("\(Clients.jobScript)").arg("\(c)").arg("1.0")
                        .status().expect("job.sh");
                    assert!(s.success());
                }

                """)
            deps += "\(c) = { path = \"../\(c)\" }\n"
        }
        try s.write("top/Cargo.toml", """
            [package]
            name = "top"
            version = "0.1.0"
            edition = "2021"

            [dependencies]
            \(deps)
            [workspace]

            """)
        try s.write("top/src/lib.rs", "")
        let r = try jobgov([Clients.cargo, "build", "--offline", "-j", "3"], in: s, cwd: s.path + "/top",
                           env: ["CARGO_TARGET_DIR": s.path + "/target", "CARGO_TERM_COLOR": "never"], timeout: 300)
        #expect(r.status == 0, "\(r.stderr)")
        let log = JobLog(s.read("job.log"))
        #expect(log.count == 6)
        #expect(log.peak() <= 3)
        #expect(log.peak() >= 2, "cargo should run build scripts in parallel")
        #expect(!r.stderr.contains("ignoring the `-j` parameter"), "jobgov should take -j off cargo's command line")
    }

    /// Recursive make three levels deep: every level's jobs share one pool.
    @Test("recursive make, three levels deep, stays within the target", arguments: [Clients.make43, Clients.make44])
    func recursiveMake(make: String) throws {
        try Clients.require(make)
        let s = try Scratch()
        try s.write("Makefile", """
            all: a b top1 top2
            a b:
            \t@$(MAKE) -s -C $@
            top1 top2:
            \t@$(JOB) $@ 0.4
            .PHONY: all a b top1 top2

            """)
        for dir in ["a", "b"] {
            try s.write("\(dir)/Makefile", """
                all: sub \(flatNames(dir, 3))
                sub:
                \t@$(MAKE) -s -C sub
                \(flatNames(dir, 3)):
                \t@$(JOB) $@ 0.4
                .PHONY: all sub \(flatNames(dir, 3))

                """)
            try s.write("\(dir)/sub/Makefile", flatMakefile(count: 4, seconds: 0.4, prefix: "\(dir)-deep"))
        }
        let r = try jobgov([make, "-j4"], in: s)
        #expect(r.status == 0, "\(r.stderr)")
        let log = JobLog(s.read("job.log"))
        #expect(log.count == 2 + 2 * 3 + 2 * 4)
        #expect(log.intervals.contains { $0.name.hasPrefix("a-deep") })
        #expect(log.peak() <= 4)
        #expect(log.peak() >= 3)
        #expect(!r.stderr.contains("jobserver unavailable"))
        #expect(!r.stderr.contains("resetting jobserver mode"))
    }

    /// make 4.3 (pipe), make 4.4.1 (pipe, as a client) and ninja (fifo) run side by side under one shell and one
    /// pool: 3 tokens plus the 3 clients' implicit slots.
    @Test("make 4.3, make 4.4.1 and ninja share one pool")
    func mixedClients() throws {
        try Clients.require(Clients.make43)
        try Clients.require(Clients.make44)
        try Clients.require(Clients.ninja)
        let s = try Scratch()
        try s.write("m43/Makefile", flatMakefile(count: 8, seconds: 0.4, prefix: "old"))
        try s.write("m44/Makefile", flatMakefile(count: 8, seconds: 0.4, prefix: "new"))
        try s.write("nj/build.ninja", flatNinja(count: 8, seconds: 0.4, prefix: "nin"))
        let script = """
            \(Clients.make43) -s -C m43 & p1=$!
            \(Clients.make44) -s -C m44 & p2=$!
            MAKEFLAGS=" -j4 --jobserver-auth=fifo:$JOBGOV_FIFO" \(Clients.ninja) -C nj & p3=$!
            wait $p1 && wait $p2 && wait $p3
            """
        let r = try jobgov(["-j4", "--jobserver-style", "pipe", "--", "/bin/sh", "-c", script], in: s)
        #expect(r.status == 0, "\(r.stderr)")
        let log = JobLog(s.read("job.log"))
        #expect(log.count == 24)
        #expect(log.peak() <= 3 + 3, "3 tokens + 3 implicit slots")
        #expect(log.peak() >= 4)
        let all = r.stdout + r.stderr
        #expect(!all.contains("jobserver unavailable"))
        #expect(!all.contains("Ignoring jobserver"))
        #expect(!all.contains("Could not initialize jobserver"))
        #expect(!all.contains("invalid --jobserver-auth"))
    }

    private func flatNames(_ prefix: String, _ n: Int) -> String {
        (1...n).map { "\(prefix)\($0)" }.joined(separator: " ")
    }
}
