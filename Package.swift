// swift-tools-version: 6.1
import PackageDescription

// The simulator runs the governor through more than ten thousand builds in every test run: the pure code it drives is
// optimised in debug builds too (about 9x faster than -Onone), so that `swift test` takes seconds for it, not minutes.
let optimised: [SwiftSetting] = [.unsafeFlags(["-O"])]

let package = Package(
    name: "jobgov",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "jobgov", targets: ["jobgov"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
    ],
    targets: [
        // Pure types and policy: no system calls, tested without root or a kernel.
        .target(name: "JobgovCore", swiftSettings: optimised),
        // C helpers for calls Swift cannot import (variadic ioctl/prctl).
        .target(name: "CJobgovShims"),
        // /proc, signals, spawning: the seam between policy and the kernel.
        .target(
            name: "LinuxSystem",
            dependencies: [
                "JobgovCore", "CJobgovShims",
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        // The token pool (named FIFO + pipe-style fds) and the control socket.
        .target(
            name: "Jobserver",
            dependencies: [
                "JobgovCore", "LinuxSystem", "CJobgovShims",
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        // The governor's loop (sense, decide, act) behind protocols: the kernel drives it in `jobgov run`, a simulated
        // build in the simulator.
        .target(name: "GovernorRuntime", dependencies: ["JobgovCore"], swiftSettings: optimised),
        // A deterministic simulated build (jobs with memory curves, make's and ninja's scheduling, a cgroup with a
        // hard limit and an OOM killer, a simulated clock) that drives GovernorRuntime's loop.
        .target(name: "BuildSimulator", dependencies: ["GovernorRuntime", "JobgovCore"], swiftSettings: optimised),
        .executableTarget(name: "jobgov-simulate", dependencies: ["BuildSimulator", "JobgovCore"]),
        // Commands and the supervisor loop; the executable only calls into this.
        .target(
            name: "JobgovCLI",
            dependencies: [
                "JobgovCore", "GovernorRuntime", "Jobserver", "LinuxSystem", "BPFProbes",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            plugins: ["ShellWrapperPlugin"]
        ),
        .executableTarget(name: "jobgov", dependencies: ["JobgovCLI"]),
        // Builds shell/jobgov-shell.c (make's SHELL under jobgov, to run again a recipe the OOM killer ended) into
        // the JobgovCLI module as bytes.
        .plugin(name: "ShellWrapperPlugin", capability: .buildTool()),

        // eBPF observers and in-kernel actuators (exec gate, brake): libbpf from the system (Debian libbpf-dev), the
        // header shared with bpf/*.bpf.c, and the Swift loader. The plugin compiles bpf/ into the BPFProbes module.
        .systemLibrary(name: "CLibbpf", pkgConfig: "libbpf", providers: [.apt(["libbpf-dev"])]),
        .target(name: "CJobgovBPF", dependencies: ["CLibbpf"]),
        .plugin(name: "BPFObjectPlugin", capability: .buildTool()),
        .target(
            name: "BPFProbes",
            dependencies: [
                "CLibbpf", "CJobgovBPF", "JobgovCore",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            plugins: ["BPFObjectPlugin"]
        ),
        .executableTarget(name: "jobgov-probe-bench", dependencies: ["BPFProbes"]),

        .testTarget(name: "JobgovCoreTests", dependencies: ["JobgovCore"]),
        .testTarget(name: "GovernorRuntimeTests", dependencies: ["GovernorRuntime"]),
        .testTarget(name: "GovernorSimulationTests", dependencies: ["BuildSimulator", "GovernorRuntime", "JobgovCore"]),
        .testTarget(name: "JobserverTests", dependencies: ["Jobserver", "LinuxSystem"]),
        // The command-line module's own logic: the settings table against its flags and config keys.
        .testTarget(name: "JobgovCLITests", dependencies: ["JobgovCLI", "JobgovCore"]),
        .testTarget(
            name: "LinuxSystemTests", dependencies: ["LinuxSystem", "JobgovCore"], resources: [.copy("Fixtures")]),
        // Root tests of the BPF programs on the running kernel, in cgroups they create and remove.
        .testTarget(name: "BPFProbesTests", dependencies: ["BPFProbes", "JobgovCore", "LinuxSystem"]),
        // Drive the built `jobgov` binary with real make 4.3, make 4.4.1, ninja 1.13 and cargo.
        .testTarget(name: "IntegrationTests", dependencies: ["jobgov", "LinuxSystem"], exclude: ["Fixtures"]),
    ]
)
