//! Skipping a test whose prerequisite is missing, never silently. Shared by every test
//! directory (`sip-firewall/tests` through its dev-dependency on this library).

/// A test cannot run because `why` (a prerequisite is missing). It never passes silently:
/// the line goes to stderr and to the skip log that `cargo xtask test` sums up at the end
/// (`SIPFW_SKIP_LOG`), and under `CI=true` the test fails, so a green CI run never skipped.
pub fn skip(test: &str, why: &str) {
    let line = format!("SKIPPED {test}: {why}");
    eprintln!("{line}");
    if let Some(log) = std::env::var_os("SIPFW_SKIP_LOG") {
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(f, "{line}");
        }
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{line} (CI=true: a missing prerequisite fails the run)");
    }
}

/// Whether the tool `program` is installed (`program --version` runs and exits 0); when it
/// is not, [`skip`] says so, with `install` (what installs it).
pub fn require_tool(test: &str, program: &str, install: &str) -> bool {
    let ok = std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip(test, &format!("{program} is missing ({install})"));
    }
    ok
}
