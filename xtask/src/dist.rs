//! `cargo xtask dist`: the Debian package, and `cargo xtask install`: the binary on PATH.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::{cargo, root, run, setup};

/// Where `dist` writes: the .deb, and the generated man pages and completions in `gen/`.
pub fn dist_dir() -> PathBuf {
    root().join("target/dist")
}

fn release_build() -> anyhow::Result<PathBuf> {
    setup::build_tools()?;
    run(cargo().args(["build", "--release", "--package", "sip-firewall"]))?;
    Ok(root().join("target/release/sip-firewall"))
}

/// Build the release binary, generate man pages and completions from its CLI definition,
/// and package everything with cargo-deb into target/dist/; then lintian, when installed.
pub fn dist() -> anyhow::Result<PathBuf> {
    let deb = build_deb()?;
    lintian(&deb)?;
    Ok(deb)
}

/// The .deb, without judging it.
pub fn build_deb() -> anyhow::Result<PathBuf> {
    setup::packaging_tools()?;
    let bin = release_build()?;
    let generated = dist_dir().join("gen");
    let _ = std::fs::remove_dir_all(&generated);
    for what in ["man", "completions"] {
        run(Command::new(&bin)
            .args(["generate", what])
            .arg(generated.join(what)))?;
    }
    // Old packages of other versions would make "the .deb" ambiguous.
    if let Ok(entries) = std::fs::read_dir(dist_dir()) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "deb") {
                std::fs::remove_file(e.path())?;
            }
        }
    }
    run(cargo()
        .args(["deb", "--package", "sip-firewall", "--no-build", "--output"])
        .arg(dist_dir()))?;
    let deb = std::fs::read_dir(dist_dir())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("cargo deb wrote no .deb")?;
    eprintln!("xtask: package {}", deb.display());
    Ok(deb)
}

fn lintian(deb: &std::path::Path) -> anyhow::Result<()> {
    if Command::new("lintian").arg("--version").output().is_ok() {
        let out = Command::new("lintian")
            .args([
                "--fail-on",
                "error,warning,info",
                "--display-info",
                "--tag-display-limit",
                "0",
            ])
            .arg(deb)
            .output()
            .context("running lintian")?;
        eprint!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            bail!("lintian found problems in {}", deb.display());
        }
        eprintln!("xtask: lintian: clean");
    } else {
        eprintln!("xtask: lintian not installed (cargo xtask setup installs it): not checked");
    }
    Ok(())
}

/// Put the release binary on PATH: `<prefix>/bin/sip-firewall` (default /usr/local), with
/// its man pages and bash completion beside it.
pub fn install(prefix: &std::path::Path) -> anyhow::Result<()> {
    let bin = release_build()?;
    let bindir = prefix.join("bin");
    std::fs::create_dir_all(&bindir)
        .with_context(|| format!("cannot create {}", bindir.display()))?;
    let dest = bindir.join("sip-firewall");
    // Copy to a new file and rename: a running daemon keeps its (old) executable.
    let tmp = bindir.join(".sip-firewall.new");
    std::fs::copy(&bin, &tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &dest).with_context(|| format!("cannot write {}", dest.display()))?;
    eprintln!("xtask: installed {}", dest.display());
    run(Command::new(&dest)
        .args(["generate", "man"])
        .arg(prefix.join("share/man/man1")))?;
    let completions = prefix.join("share/bash-completion/completions");
    let generated = dist_dir().join("gen/install-completions");
    run(Command::new(&dest)
        .args(["generate", "completions"])
        .arg(&generated))?;
    std::fs::create_dir_all(&completions)?;
    std::fs::copy(
        generated.join("sip-firewall.bash"),
        completions.join("sip-firewall"),
    )?;
    eprintln!(
        "xtask: man pages in {}, bash completion in {}",
        prefix.join("share/man/man1").display(),
        completions.display()
    );
    Ok(())
}
