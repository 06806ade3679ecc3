//! Shipping sip-firewall: man pages and completions generated from the CLI definition, and
//! the Debian package (`cargo xtask dist`).

use std::{path::Path, process::Command};

use clap::CommandFactory as _;
use sip_firewall_tests::{
    daemon::{TempDir, daemon_bin},
    run_said, skip,
    skip::require_tool,
};

/// Every visible command path below the root, as `["ban", "add"]`.
fn command_paths(cmd: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let mut path = prefix.to_vec();
        path.push(sub.get_name().to_string());
        out.push(path.clone());
        command_paths(sub, &path, out);
    }
}

fn generate(what: &str, dir: &Path) {
    let out = Command::new(daemon_bin())
        .args(["generate", what])
        .arg(dir)
        .output()
        .expect("run sip-firewall generate");
    assert!(
        out.status.success(),
        "generate {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn man_pages_for_every_subcommand_and_man_renders_them() {
    let dir = TempDir::new("man");
    generate("man", &dir.path);
    let cli = sip_firewall::cli::Cli::command();
    let mut paths = Vec::new();
    command_paths(&cli, &[], &mut paths);
    assert!(paths.len() > 10, "{paths:?}");
    assert!(dir.path.join("sip-firewall.1").exists());
    for p in &paths {
        let page = dir.path.join(format!("sip-firewall-{}.1", p.join("-")));
        assert!(page.exists(), "no man page {}", page.display());
    }
    // The hidden packaging command has none.
    assert!(!dir.path.join("sip-firewall-generate.1").exists());
    let root = std::fs::read_to_string(dir.path.join("sip-firewall.1")).unwrap();
    assert!(
        root.starts_with(".ie") || root.contains(".TH sip-firewall 1"),
        "{root}"
    );

    if !require_tool(
        "man_pages_for_every_subcommand_and_man_renders_them",
        "man",
        "apt-get install man-db; cargo xtask setup does",
    ) {
        return;
    }
    let text = stdout_of(
        Command::new("man")
            .arg("-l")
            .arg(dir.path.join("sip-firewall-ban-add.1"))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100"),
    );
    assert!(text.contains("NAME"), "{text}");
    assert!(text.contains("sip-firewall-ban-add"), "{text}");
    assert!(text.contains("--reason"), "{text}");
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    let dir = TempDir::new("completions");
    generate("completions", &dir.path);
    let bash = std::fs::read_to_string(dir.path.join("sip-firewall.bash")).expect("bash");
    let zsh = std::fs::read_to_string(dir.path.join("_sip-firewall")).expect("zsh");
    let fish = std::fs::read_to_string(dir.path.join("sip-firewall.fish")).expect("fish");
    assert!(zsh.starts_with("#compdef sip-firewall"), "{zsh}");
    assert!(fish.contains("complete -c sip-firewall"), "{fish}");
    for sub in ["status", "ban", "allow", "deny", "config", "user", "run"] {
        assert!(bash.contains(sub), "bash completion lacks {sub}");
        assert!(zsh.contains(sub), "zsh completion lacks {sub}");
        assert!(fish.contains(sub), "fish completion lacks {sub}");
    }
    // Bash parses it, and completing `sip-firewall ba` offers `ban`.
    let reply = stdout_of(Command::new("bash").arg("-c")
        .arg(format!(
            "source {} && f=$(complete -p sip-firewall | sed 's/.*-F \\([^ ]*\\).*/\\1/') && COMP_WORDS=(sip-firewall ba) COMP_CWORD=1 && $f sip-firewall ba sip-firewall && echo \"${{COMPREPLY[@]}}\"",
            dir.path.join("sip-firewall.bash").display()
        )));
    assert!(reply.split_whitespace().any(|w| w == "ban"), "{reply:?}");
}

/// What `cmd` wrote to stdout; it must exit 0 (its stderr shown when it does not).
fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The .deb `cargo xtask dist` wrote (`cargo xtask test` builds it first when it can).
fn built_deb() -> Option<std::path::PathBuf> {
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dist");
    std::fs::read_dir(dist)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
}

fn sh(cmd: &str, args: &[&str]) -> (bool, String) {
    run_said(Command::new(cmd).args(args).env("MANPAGER", "cat"))
}

/// Purges the package however the test ends.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["-P", "sip-firewall"]).output();
    }
}

fn installed() -> bool {
    sh("dpkg-query", &["-W", "-f=${Status}", "sip-firewall"])
        .1
        .contains("install ok installed")
}

#[test]
fn lintian_is_clean() {
    let test = "lintian_is_clean";
    let Some(deb) = built_deb() else {
        skip(test, "no .deb in target/dist: run `cargo xtask dist`");
        return;
    };
    if !require_tool(test, "lintian", "cargo xtask setup installs it") {
        return;
    }
    let (ok, said) = sh(
        "lintian",
        &[
            "--fail-on",
            "error,warning,info",
            "--tag-display-limit",
            "0",
            "--display-info",
            &deb.display().to_string(),
        ],
    );
    eprintln!("lintian {}:\n{said}", deb.display());
    assert!(ok, "lintian:\n{said}");
}

#[test]
fn deb_installs_works_and_removes_cleanly() {
    let test = "deb_installs_works_and_removes_cleanly";
    if !sip_firewall_tests::require_root(test) {
        return;
    }
    let Some(deb) = built_deb() else {
        skip(test, "no .deb in target/dist: run `cargo xtask dist`");
        return;
    };
    if installed() {
        skip(
            test,
            "sip-firewall is installed on this machine already: not touching it",
        );
        return;
    }
    let _purge = Purge;
    let (ok, said) = sh("dpkg", &["-i", &deb.display().to_string()]);
    assert!(ok, "dpkg -i:\n{said}");
    assert!(installed());

    // The installed conffile is the documented default config, and it checks.
    let conf = "/etc/sip-firewall/sip-firewall.toml";
    let (ok, said) = sh("/usr/bin/sip-firewall", &["config", "check", conf]);
    assert!(ok && said.contains("ok"), "config check:\n{said}");
    let (_, conffiles) = sh("dpkg-query", &["-W", "-f=${Conffiles}", "sip-firewall"]);
    assert!(conffiles.contains(conf), "conffiles: {conffiles}");
    assert_eq!(
        std::fs::read_to_string(conf).unwrap(),
        sip_firewall::config::DEFAULT_FILE
    );

    // Man pages, found by man; completions; dashboard and rules; the unit verifies.
    let (ok, said) = sh("man", &["-w", "sip-firewall"]);
    assert!(
        ok && said.contains("/usr/share/man/man1/sip-firewall.1"),
        "man -w: {said}"
    );
    let (ok, said) = sh("man", &["-w", "sip-firewall-ban-add"]);
    assert!(ok, "man -w sip-firewall-ban-add: {said}");
    for f in [
        "/usr/share/bash-completion/completions/sip-firewall",
        "/usr/share/zsh/vendor-completions/_sip-firewall",
        "/usr/share/fish/vendor_completions.d/sip-firewall.fish",
        "/usr/share/sip-firewall/grafana/sip-firewall.json",
        "/usr/share/sip-firewall/prometheus/alerts.yml",
    ] {
        assert!(Path::new(f).exists(), "{f} missing");
    }
    let (_, files) = sh("dpkg", &["-L", "sip-firewall"]);
    let unit = files
        .lines()
        .find(|l| l.ends_with("/systemd/system/sip-firewall.service"))
        .unwrap_or_else(|| panic!("no unit in the package:\n{files}"))
        .to_string();
    let (ok, said) = sh("systemd-analyze", &["verify", &unit]);
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify {unit}:\n{said}"
    );

    // Remove: the program goes, the conffile stays (Debian policy); purge: it goes too.
    let (ok, said) = sh("dpkg", &["-r", "sip-firewall"]);
    assert!(ok, "dpkg -r:\n{said}");
    assert!(!Path::new("/usr/bin/sip-firewall").exists());
    assert!(!Path::new(&unit).exists());
    assert!(Path::new(conf).exists(), "dpkg -r keeps the conffile");
    let (ok, said) = sh("dpkg", &["-P", "sip-firewall"]);
    assert!(ok, "dpkg -P:\n{said}");
    assert!(!Path::new(conf).exists(), "dpkg -P removes the conffile");
    assert!(
        !Path::new("/etc/sip-firewall").exists(),
        "and its directory"
    );
    assert!(!Path::new("/usr/share/sip-firewall").exists());
    let (_, status) = sh("dpkg-query", &["-W", "-f=${Status}", "sip-firewall"]);
    assert!(
        !status.contains("installed") || status.contains("not-installed"),
        "{status}"
    );
}
