//! SIPVicious for the tests: its virtualenv (a loud skip when missing), `svmap` and
//! `svcrack` run from namespace a at the edge in namespace b, and any of its tools under a
//! User-Agent of the test's choosing.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{
    daemon::DaemonDirs,
    domain::BOB_PASSWORD,
    netns::Pair,
    said,
    sipp::{in_netns, wait_bounded},
};

/// Where `cargo xtask setup` puts the SIPVicious virtualenv: `target/sipvicious-venv`, or
/// `$SIPFW_SIPVICIOUS_VENV`.
pub fn venv() -> PathBuf {
    if let Some(v) = std::env::var_os("SIPFW_SIPVICIOUS_VENV") {
        return v.into();
    }
    // target/debug/deps/<test> -> target/sipvicious-venv
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .nth(3)
        .expect("target dir")
        .join("sipvicious-venv")
}

/// The path of a SIPVicious command (`sipvicious_svmap`...), or None after saying loudly why
/// `test` skips.
pub fn command(test: &str, command: &str) -> Option<PathBuf> {
    let bin = venv().join("bin").join(command);
    if bin.exists() {
        Some(bin)
    } else {
        crate::skip(
            test,
            &format!(
                "{} missing: `cargo xtask setup` installs SIPVicious 0.3.8 into that \
                 virtualenv (or set SIPFW_SIPVICIOUS_VENV)",
                bin.display()
            ),
        );
        None
    }
}

/// `svmap` from namespace a at the proxy's port, telling it our address (its default is the
/// host name's, meaningless in a namespace): its output.
pub fn svmap(pair: &Pair, bin: &Path, targets: &[String]) -> String {
    let child = in_netns(&pair.ns_a, bin)
        .args(["-p", "5060", "-x", &pair.a4.to_string(), "-t", "0.05"])
        .args(targets)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn svmap");
    let (out, killed) = wait_bounded(child, Duration::from_secs(30));
    assert!(!killed, "svmap did not end within 30 s");
    said(&out)
}

/// svcrack from namespace a (198.51.100.1) against bob at the edge, with `wrong_first` wrong
/// words, then bob's password, then a few more; --maximumtime 3: it gives up 3 s after the
/// last answer (then drains its socket for up to 10 s).
pub fn spawn_svcrack(pair: &Pair, bin: &Path, d: &DaemonDirs, wrong_first: usize) -> Child {
    let mut words: Vec<String> = (0..wrong_first).map(|i| format!("guess-{i}")).collect();
    words.push(BOB_PASSWORD.to_string());
    words.extend((0..3).map(|i| format!("later-{i}")));
    let list = d.dir.path.join("words.txt");
    std::fs::write(&list, words.join("\n") + "\n").expect("svcrack's word list");
    in_netns(&pair.ns_a, bin)
        .args(["-u", "bob", "--domain", "example.com", "-d"])
        .arg(&list)
        .args([
            "-x",
            &pair.a4.to_string(),
            "-p",
            "5060",
            "--maximumtime",
            "3",
        ])
        .arg(pair.b4.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn svcrack")
}

/// What svcrack reply (stdout and stderr) once it ended, within 40 s.
pub fn svcrack_output(child: Child) -> String {
    let (out, killed) = wait_bounded(child, Duration::from_secs(40));
    let reply = said(&out);
    assert!(!killed, "svcrack did not end within 40 s:\n{reply}");
    reply
}

/// A SIPVicious tool (`svwar`, `svmap`...: the module of `sipvicious`) run by the
/// virtualenv's Python in namespace a with the User-Agent `user_agent` in place of its
/// built-in `friendly-scanner` (SIPVicious has no option for it; one line of its source
/// changes it, as an attacker does): the command, to which the tool's arguments are added.
/// None, after a loud skip, when the virtualenv is missing.
pub fn with_user_agent(test: &str, pair: &Pair, tool: &str, user_agent: &str) -> Option<Command> {
    let python = command(test, "python3")?;
    // makeRequest's keyword default is the one place the User-Agent is written.
    let script = format!(
        "import sys\n\
         from sipvicious.libs import svhelper\n\
         d = list(svhelper.makeRequest.__defaults__)\n\
         d[d.index('friendly-scanner')] = {user_agent:?}\n\
         svhelper.makeRequest.__defaults__ = tuple(d)\n\
         from sipvicious.{tool} import main\n\
         sys.argv[0] = {tool:?}\n\
         sys.exit(main())\n"
    );
    let mut cmd = in_netns(&pair.ns_a, python);
    cmd.arg("-c").arg(script);
    Some(cmd)
}
