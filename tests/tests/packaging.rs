//! Shipping sip-firewall: man pages and completions generated from the CLI definition, and
//! the Debian package (`cargo xtask dist`).

use std::{path::Path, process::Command};

use clap::CommandFactory as _;
use sip_firewall_tests::{
    daemon::{TempDir, daemon_bin},
    skip,
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

    if Command::new("man").arg("--version").output().is_err() {
        skip(
            "man_pages_for_every_subcommand_and_man_renders_them",
            "man is missing (apt-get install man-db; cargo xtask setup does)",
        );
        return;
    }
    let out = Command::new("man")
        .arg("-l")
        .arg(dir.path.join("sip-firewall-ban-add.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .expect("man -l");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
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
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && f=$(complete -p sip-firewall | sed 's/.*-F \\([^ ]*\\).*/\\1/') && COMP_WORDS=(sip-firewall ba) COMP_CWORD=1 && $f sip-firewall ba sip-firewall && echo \"${{COMPREPLY[@]}}\"",
            dir.path.join("sip-firewall.bash").display()
        ))
        .output()
        .expect("bash");
    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(reply.split_whitespace().any(|w| w == "ban"), "{reply:?}");
}
