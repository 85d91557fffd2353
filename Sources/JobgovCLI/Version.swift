/// jobgov's version: the one place it is written. `jobgov --version` prints it, and scripts/package names the Debian
/// package after what the built binary prints.
public let jobgovVersion = "0.1.0"
