//! The external programs the tests use (redis-server, Chromium and chromedriver, kubectl),
//! found one way and missed one way.
//!
//! Missing on a workstation, a tool's test says so on standard error, in a line that starts
//! with `SKIPPED`, and skips what needs it. Under CI (`CI` set to `true` or `1`) a missing tool
//! fails the test instead: CI installs every one (`scripts/install-test-deps.sh`), so a test
//! that passed there ran for real.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;

/// Whether the tests run under CI, where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The first of `names` found on `PATH`; else, outside CI, `None` after saying that `test`
/// skips what needs it (installed by the Debian package `package`). Under CI a missing tool
/// panics.
pub fn require(test: &str, names: &[&str], package: &str) -> Option<PathBuf> {
    if let Some(path) = find(names) {
        return Some(path);
    }
    let tool = names.first().copied().unwrap_or("a tool");
    assert!(
        !in_ci(),
        "{test}: {tool} is not installed, and CI must run this test (Debian package {package})"
    );
    // Written to the stream itself, not through `eprintln!`, which the test harness captures
    // and hides for a passing test.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {tool} is not installed (apt-get install {package}); \
         CI=true makes this a failure"
    );
    None
}

/// The first of `names` that is an executable file in a directory of `PATH`.
fn find(names: &[&str]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}
