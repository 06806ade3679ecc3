//! `cargo xtask`: set-up, build, run, test and benchmarks of sip-firewall.
//!
//! Every command first runs the set-up it needs; set-up steps print what they do and are
//! idempotent (a second run only checks).

mod bench_cluster;
mod bench_flood;
mod bench_keepalive;
mod bench_parse;
mod bench_proxy;
mod bench_shards;
mod bench_soak;
mod bench_workers;
mod bench_xdp;
mod daemon;
mod dist;
mod fuzz;
mod setup;
mod sipp;
mod structure;

use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Build, run, test and benchmark sip-firewall")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the build and tests need (nightly rust-src, bpf-linker, test tools), and
    /// Kamailio for `bench flood --peer kamailio`.
    Setup,
    /// Build the daemon (with its embedded XDP program).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build and run `sip-firewall run` with the given arguments.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the Debian package into target/dist/ (cargo-deb; lintian when installed).
    Dist,
    /// Build in release mode and put `sip-firewall` on PATH (<prefix>/bin), with its man
    /// pages and bash completion.
    Install {
        #[arg(long, default_value = "/usr/local")]
        prefix: std::path::PathBuf,
    },
    /// Run every test: formatting, clippy, unit, BPF_PROG_TEST_RUN and namespace tests.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The structure check: import cycles between modules, files over 500 lines
    /// and functions over 80 lines outside tests, against the exception list in
    /// xtask/src/structure.rs.
    LintStructure,
    /// Benchmarks: `xdp` (drop cost: XDP vs nftables vs a socket), `parse` (messages/s, ours
    /// vs rsip), `proxy` (SIPp calls through the proxy at rising rates), `proxy-workers` (the
    /// highest rate with 1 and 2 `[sip] workers`), `cluster` (ban propagation between two
    /// daemons through Redis), `flood` (legitimate calls while trafgen floods the edge;
    /// `--peer kamailio` runs the same against Kamailio; `--pin`: no flood, each edge pinned
    /// to one core and SIPp to the other, the highest rate and CPU per call over a rate
    /// ladder), `keepalive` (the CPU of pinging 100,000 registered contacts every 30 s),
    /// `shards` (calls/s of the proxy fed by 2 threads through its handler, no sockets, with
    /// `[proxy] shards` 1 and 2), `soak` (a million calls at a steady rate with
    /// registration churn: memory, tables and setup time every minute).
    Bench {
        #[arg(value_parser = ["xdp", "parse", "proxy", "proxy-workers", "cluster", "flood", "keepalive", "shards", "soak"])]
        what: String,
        /// Options of `bench flood` and `bench soak`.
        #[command(flatten)]
        flood: bench_flood::Args,
    },
    /// Fuzz a target for a given time (`parse`: parser, sanity checks and framer; `pipeline`:
    /// gate, message layer and proxy core on a fake clock, UDP and TCP; `stun`: the STUN
    /// keep-alive parser and its answer).
    Fuzz {
        #[arg(value_parser = ["parse", "pipeline", "stun"])]
        target: String,
        /// How long to run, in seconds.
        #[arg(long, default_value_t = 60)]
        time: u64,
    },
}

/// Run a command, echoing it; fail when it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: $ {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", show(cmd)))?;
    if !status.success() {
        bail!("{} failed: {status}", show(cmd));
    }
    Ok(())
}

fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// `cargo` with the project root as working directory.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Build sip-firewall's `example` in release mode and run it (the in-process benches: they
/// print their own figures).
pub fn release_example(example: &str) -> anyhow::Result<()> {
    run(cargo().args([
        "run",
        "--release",
        "-p",
        "sip-firewall",
        "--example",
        example,
    ]))
}

/// The workspace root.
pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// `cargo xtask test`: formatting, clippy, the structure check, then every test.
fn test(args: &[String]) -> anyhow::Result<()> {
    setup::build_tools()?;
    setup::test_tools()?;
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    // The default members: every crate but the eBPF one, which only builds for the BPF
    // target (through sip-firewall's build.rs).
    run(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    // The fuzz pipeline is behind a feature the fuzz crate turns on: linted here so that it
    // keeps compiling between fuzz runs.
    run(cargo().args([
        "clippy",
        "-p",
        "sip-firewall",
        "--features",
        "fuzzing",
        "--lib",
        "--",
        "-D",
        "warnings",
    ]))?;
    structure::run()?;
    // Builds the daemon binary too, which the integration tests start.
    run(cargo().args(["build", "--bins"]))?;
    // The package the packaging tests install (tests/tests/packaging.rs); without
    // cargo-deb they skip loudly.
    if let Err(e) = dist::build_deb() {
        eprintln!("xtask: no .deb built ({e:#}): the package tests will skip");
    }
    // Tests that cannot run say so in this log (tests/src/skip.rs); it is summed up
    // below, so a skip shows in the summary even where cargo hides a passing test's
    // output. Under CI=true such a test fails instead.
    let skips = root().join("target/test-skips.log");
    let _ = std::fs::remove_file(&skips);
    let mut c = cargo();
    c.env("SIPFW_SKIP_LOG", &skips)
        .args(["test", "--no-fail-fast"]);
    if !args.is_empty() {
        c.arg("--").args(args);
    }
    let (result, totals) = run_counting(&mut c);
    let skipped = std::fs::read_to_string(&skips).unwrap_or_default();
    let n = skipped.lines().count();
    eprintln!("xtask: {n} tests skipped for a missing prerequisite");
    for line in skipped.lines() {
        eprintln!("xtask:   {line}");
    }
    // libtest counts a test that returned early as passed: the run's summary counts it as
    // skipped instead, so a non-root or tool-less run never reads as all green.
    eprintln!(
        "xtask: summary: {} passed, {} failed, {} ignored, {n} skipped for a missing prerequisite",
        totals.passed.saturating_sub(n as u64),
        totals.failed,
        totals.ignored
    );
    result
}

/// The sums of libtest's `test result:` lines.
#[derive(Default, Debug, PartialEq)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    /// Add one `test result: ok. 3 passed; 1 failed; 2 ignored; ...` line (others: nothing).
    fn add(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split([';', '.']) {
            let mut words = part.split_whitespace();
            let (Some(n), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// Run `cmd`, its standard output passed through line by line and its test results summed.
fn run_counting(cmd: &mut Command) -> (anyhow::Result<()>, Totals) {
    use std::io::BufRead as _;
    eprintln!("xtask: $ {}", show(cmd));
    let mut totals = Totals::default();
    let mut child = match cmd.stdout(std::process::Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => {
            return (
                Err(e).context(format!("cannot start {}", show(cmd))),
                totals,
            );
        }
    };
    if let Some(out) = child.stdout.take() {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            println!("{line}");
            totals.add(&line);
        }
    }
    let result = match child.wait() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(anyhow::anyhow!("{} failed: {s}", show(cmd))),
        Err(e) => Err(e).context(format!("waiting for {}", show(cmd))),
    };
    (result, totals)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Setup => {
            setup::build_tools()?;
            setup::test_tools()?;
            setup::kamailio()
        }
        Cmd::Build { release } => {
            setup::build_tools()?;
            let mut c = cargo();
            c.args(["build", "--package", "sip-firewall"]);
            if release {
                c.arg("--release");
            }
            run(&mut c)
        }
        Cmd::Run { args } => {
            setup::build_tools()?;
            run(cargo().args(["build", "--release", "--package", "sip-firewall"]))?;
            let bin = root().join("target/release/sip-firewall");
            let mut c = Command::new(&bin);
            c.arg("run").args(&args);
            eprintln!("xtask: $ {}", show(&c));
            // Replace nothing: wait, and pass the daemon's exit status on.
            let status = c
                .status()
                .with_context(|| format!("cannot start {}", bin.display()))?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Cmd::Test { args } => test(&args),
        Cmd::LintStructure => structure::run(),
        Cmd::Dist => dist::dist().map(|_| ()),
        Cmd::Install { prefix } => dist::install(&prefix),
        Cmd::Fuzz { target, time } => fuzz::run(&target, time),
        Cmd::Bench { what, flood } => {
            setup::build_tools()?;
            setup::test_tools()?;
            match what.as_str() {
                "xdp" => bench_xdp::run_bench(),
                "parse" => bench_parse::run(),
                "proxy" => bench_proxy::run_bench(),
                "proxy-workers" => bench_workers::run_workers(),
                "cluster" => bench_cluster::run_bench(),
                "keepalive" => bench_keepalive::run(),
                "shards" => bench_shards::run(),
                "soak" => bench_soak::run_bench(&flood),
                "flood" => {
                    if flood.peer.is_some() {
                        setup::kamailio()?;
                    }
                    bench_flood::run_bench(&flood)
                }
                other => bail!("unknown benchmark {other}"),
            }
        }
    }
}

#[cfg(test)]
mod totals_tests {
    use super::Totals;

    #[test]
    fn sums_libtest_result_lines() {
        let mut t = Totals::default();
        t.add("test result: ok. 14 passed; 0 failed; 2 ignored; 0 measured; 3 filtered out; finished in 1.2s");
        t.add("test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out");
        t.add("running 4 tests");
        assert_eq!(
            t,
            Totals {
                passed: 17,
                failed: 1,
                ignored: 2
            }
        );
    }
}
