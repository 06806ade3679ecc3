//! `cargo xtask lint-structure`: the project's structural bar, measured.
//!
//! For every crate root of the workspace it walks the module tree the way rustc does (`mod x;`
//! → `x.rs` or `x/mod.rs`, `#[path]`, inline `mod x { }`), leaving out what only exists under
//! test (`#[cfg(test)]` items and modules, `#[test]` functions, files named `*_tests.rs`), and
//! reports:
//!
//! - **import cycles**: for each module, its child modules form a graph, with an edge `a → b`
//!   when anything in `a`'s subtree names anything in `b`'s (a `use`, or a path in code starting
//!   with `crate`, `super`, `self`, a child module or an imported module), read as written: the
//!   edge ends at the module the path names, whatever a re-export there points to. A cycle among siblings is reported with the file, line and
//!   path of each edge. A parent and its own children are not a cycle (`mod.rs` re-exporting a
//!   child that uses its parent's items is how Rust modules are built), but two of its children
//!   naming each other are, at every level (crate units, files of a unit);
//! - **aliases**: a `pub use` of a name owned outside the re-exporting module's subtree (a
//!   second home for the name; import it from its owner);
//! - **files over 500 lines**, counting the lines of test-only items out;
//! - **functions over 80 lines** (free functions, methods, trait default methods).
//!
//! A finding on the exception list below (with the reason written next to it) is printed but
//! does not fail; an exception that no longer matches fails, so the list only shrinks.
//! `cargo xtask test` runs it before the tests.

mod aliases;
mod cycles;
mod sizes;
mod tree;

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::bail;

/// Crate roots: (crate name as printed, root file relative to the workspace).
const ROOTS: &[(&str, &str)] = &[
    ("sip-firewall", "sip-firewall/src/lib.rs"),
    ("sip-firewall (bin)", "sip-firewall/src/main.rs"),
    ("sip-firewall-common", "sip-firewall-common/src/lib.rs"),
    ("sip-firewall-ebpf", "sip-firewall-ebpf/src/main.rs"),
    (
        "sip-firewall-ebpf (bench)",
        "sip-firewall-ebpf/src/bench.rs",
    ),
    ("sip-firewall-sip", "sip-firewall-sip/src/lib.rs"),
    ("sip-firewall-netns", "netns/src/lib.rs"),
    ("sip-firewall-tests", "tests/src/lib.rs"),
    ("bench-xdp", "tests/src/bin/bench_xdp/main.rs"),
    ("xtask", "xtask/src/main.rs"),
];

/// Findings accepted for now, each with why. The key is the finding's first line as printed
/// (`cycle <crate>: a → b → a`, `file <path> <n> lines`, `fn <path>::<name> <n> lines`) up to
/// the line count, i.e. `file <path>` or `fn <path>::<name>` or the cycle line.
const EXCEPTIONS: &[(&str, &str)] = &[];

/// A finding of the check.
struct Finding {
    key: String,
    text: String,
}

pub fn run() -> anyhow::Result<()> {
    let root = crate::root();
    let mut findings = Vec::new();
    for (name, file) in ROOTS {
        let krate = tree::load_crate(&root, name, &root.join(file))?;
        findings.extend(aliases::aliases(&krate, &root));
        findings.extend(cycles::cycles(&krate, &root));
        findings.extend(sizes::sizes(&krate, &root)?);
    }
    let mut failed = 0;
    let mut used = BTreeSet::new();
    for f in &findings {
        match EXCEPTIONS.iter().find(|(k, _)| *k == f.key) {
            Some((k, why)) => {
                used.insert(*k);
                println!("excepted: {}\n  (why: {why})", f.text);
            }
            None => {
                failed += 1;
                println!("{}", f.text);
            }
        }
    }
    let stale: Vec<_> = EXCEPTIONS
        .iter()
        .filter(|(k, _)| !used.contains(k))
        .map(|(k, _)| *k)
        .collect();
    for k in &stale {
        println!("stale exception (no longer found, remove it): {k}");
    }
    println!(
        "lint-structure: {} findings, {} excepted, {failed} not excepted, {} stale exceptions",
        findings.len(),
        findings.len() - failed,
        stale.len()
    );
    if failed > 0 || !stale.is_empty() {
        bail!("the structure check failed (findings and exceptions: xtask/src/structure/mod.rs)");
    }
    Ok(())
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}
