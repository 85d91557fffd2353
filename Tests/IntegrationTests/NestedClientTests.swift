import Foundation
import Testing

/// Clients started by other clients (cargo under make, gcc's LTO under make) and clients that misbehave on a
/// shared pipe all draw from the same pool.
@Suite("Nested and misbehaving clients", .serialized)
struct NestedClientTests {
    /// cc-rs and make set O_NONBLOCK on an inherited pipe descriptor, which changes it for every process sharing
    /// it. jobgov's own ends are separate opens of the FIFO, so nothing changes for the pool.
    @Test("a client that switches the shared pipe to non-blocking breaks nothing")
    func nonBlockingSharedPipe() throws {
        try Clients.require(Clients.make43)
        try Clients.require(Clients.make44)
        let s = try Scratch()
        try s.write("a/Makefile", flatMakefile(count: 8, seconds: 0.3, prefix: "a"))
        try s.write("b/Makefile", flatMakefile(count: 8, seconds: 0.3, prefix: "b"))
        // Find R from MAKEFLAGS, set O_NONBLOCK on it (as cc-rs does), and record that it took.
        let script = """
            python3 - <<'PY'
            import fcntl, os, re
            r = int(re.search(r'--jobserver-auth=(\\d+),', os.environ['MAKEFLAGS']).group(1))
            fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_NONBLOCK)
            open('nonblock', 'w').write(str(bool(fcntl.fcntl(r, fcntl.F_GETFL) & os.O_NONBLOCK)))
            PY
            \(Clients.make43) -s -C a && \(Clients.make44) -s -C b
            """
        let r = try jobgov(["-j4", "--jobserver-style", "pipe", "--", "/bin/sh", "-c", script], in: s)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(s.read("nonblock") == "True", "the shared descriptor really was switched")
        let log = JobLog(s.read("job.log"))
        #expect(log.count == 16)
        #expect(log.peak() <= 4)
        #expect(log.peak() == 4)
        #expect(!r.stderr.contains("jobserver unavailable"))
    }

    @Test("cargo started by make shares make's pool", arguments: [Clients.make43, Clients.make44])
    func cargoUnderMake(make: String) throws {
        try Clients.require(make)
        try Clients.require(Clients.cargo)
        let s = try Scratch()
        for c in ["c1", "c2", "c3", "c4"] {
            try s.write("\(c)/Cargo.toml", "[package]\nname = \"\(c)\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n")
            try s.write("\(c)/src/lib.rs", "")
            try s.write("\(c)/build.rs", """
                fn main() {
                    let s = std::process::Command::new("\(Clients.jobScript)").arg("cargo-\(c)").arg("1.0")
                        .status().expect("job.sh");
                    assert!(s.success());
                }

                """)
        }
        // Two cargo builds side by side under make, next to plain make jobs. `+` marks them as recursive, so
        // make 4.3 passes its descriptors on.
        try s.write("Makefile", """
            all: cargo1 cargo2 m1 m2 m3 m4
            cargo1:
            \t+@cd c1 && \(Clients.cargo) build -q --offline && cd ../c2 && \(Clients.cargo) build -q --offline
            cargo2:
            \t+@cd c3 && \(Clients.cargo) build -q --offline && cd ../c4 && \(Clients.cargo) build -q --offline
            m1 m2 m3 m4:
            \t@$(JOB) $@ 1.0
            .PHONY: all cargo1 cargo2 m1 m2 m3 m4

            """)
        let r = try jobgov([make, "-j3"], in: s, env: ["CARGO_TARGET_DIR": s.path + "/target"], timeout: 300)
        #expect(r.status == 0, "\(r.stderr)")
        let log = JobLog(s.read("job.log"))
        #expect(log.count == 8)
        // make runs a cargo on a token; cargo's build script then runs on that cargo's implicit slot.
        #expect(log.peak() <= 3, "make's jobs and cargo's build scripts together stay within -j3")
        let builds = r.stderr.split(separator: "\n").filter { !$0.hasPrefix("jobgov:") }.joined(separator: "\n")
        #expect(!builds.contains("jobserver"), "no client complained about the jobserver: \(builds)")
    }

    /// gcc's lto-wrapper runs `$MAKE -f tmp.mk all`: with a working jobserver it adds no -j and its make joins the
    /// pool; without one it falls back to `-jN`. A stand-in `$MAKE` records which happened.
    @Test("gcc -flto=jobserver under make joins the pool (make 4.3, and make 4.4.1 with pipe style)",
          arguments: [(Clients.make43, "auto"), (Clients.make44, "pipe")])
    func ltoUnderMake(make: String, style: String) throws {
        try Clients.require(make)
        let s = try Scratch()
        for i in 1...6 { try s.write("u\(i).c", "int f\(i)(int x) { return x * \(i) + 1; }\n") }
        try s.write("main.c", (1...6).map { "int f\($0)(int);" }.joined() + "int main(void) { return f1(1) + f6(6) > 100; }\n")
        try s.write("recordmake.sh", """
            #!/bin/sh
            echo "ARGS: $* | $MAKEFLAGS" >> lto-make.log
            exec \(make) "$@"

            """)
        chmod(s.path + "/recordmake.sh", 0o755)
        try s.write("Makefile", """
            prog: u1.o u2.o u3.o u4.o u5.o u6.o main.o
            \t+@$(CC) -flto=jobserver -flto-partition=max -o $@ $^
            %.o: %.c
            \t@$(CC) -flto -O2 -c $<

            """)
        let r = try jobgov(["--jobserver-style", style, make, "-j4"], in: s, env: ["MAKE": s.path + "/recordmake.sh"])
        #expect(r.status == 0, "\(r.stderr)")
        let calls = s.read("lto-make.log").split(separator: "\n").filter { $0.contains(".mk") }
        #expect(!calls.isEmpty, "lto-wrapper ran make for the LTRANS jobs")
        for call in calls {
            let arguments = call.split(separator: "|").first ?? ""
            #expect(!arguments.contains(" -j"), "lto-wrapper fell back to its own -j: \(call)")
            #expect(call.contains("--jobserver-auth="), "\(call)")
        }
    }
}
