//! `cargo xtask fuzz TARGET --time SECS`: run a cargo-fuzz target of `fuzz/` for a while,
//! one job (the build machines have two cores), with the corpus kept in `fuzz/corpus/TARGET`.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// Run `target` for `seconds`, installing cargo-fuzz (and the nightly toolchain) if missing;
/// prints libFuzzer's final statistics (executions, time, corpus size).
pub fn run(target: &str, seconds: u64) -> anyhow::Result<()> {
    ensure_tools()?;
    let root = crate::root();
    let mut cmd = nightly_cargo();
    cmd.current_dir(&root).args([
        "fuzz",
        "run",
        target,
        "--fuzz-dir",
        "fuzz",
        "--",
        &format!("-max_total_time={seconds}"),
        "-rss_limit_mb=2048",
        "-max_len=20000",
        "-print_final_stats=1",
    ]);
    eprintln!(
        "xtask: fuzzing {target} for {seconds}s; new inputs go to fuzz/corpus/{target}, crashes to fuzz/artifacts/{target}"
    );
    eprintln!("xtask: $ {}", crate::show(&cmd));
    let mut child = cmd
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start cargo fuzz")?;
    // libFuzzer reports on stderr: echo it, and keep the lines that sum the run up.
    let mut summary = Vec::new();
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if line.starts_with("Done ") || line.starts_with("stat::") {
                summary.push(line);
            }
        }
    }
    let status = child.wait().context("waiting for cargo fuzz")?;
    if !status.success() {
        bail!(
            "fuzzing {target} failed ({status}): see the crash input under fuzz/artifacts/{target}"
        );
    }
    let corpus = std::fs::read_dir(root.join("fuzz/corpus").join(target))
        .map(|d| d.count())
        .unwrap_or(0);
    eprintln!("xtask: fuzz {target} summary:");
    for l in &summary {
        eprintln!("xtask:   {l}");
    }
    eprintln!("xtask:   corpus: {corpus} files in fuzz/corpus/{target}");
    Ok(())
}

/// `cargo +nightly` through rustup, whatever toolchain this xtask runs under.
fn nightly_cargo() -> Command {
    let mut c = Command::new("cargo");
    c.arg("+nightly");
    // Variables the outer (stable) cargo set must not leak into the nightly build.
    for v in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTDOC",
        "CARGO",
    ] {
        c.env_remove(v);
    }
    c
}

fn ensure_tools() -> anyhow::Result<()> {
    crate::setup::nightly()?;
    if !crate::setup::succeeds(nightly_cargo().args(["fuzz", "--version"])) {
        eprintln!("xtask: cargo-fuzz is missing: installing it");
        crate::run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}
