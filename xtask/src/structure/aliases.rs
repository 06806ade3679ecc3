//! Re-exports that point elsewhere: a `pub use` (of any visibility but private) of a name
//! defined outside the re-exporting module's own subtree. Such an alias gives a name a
//! second home, so that an import can name a unit that does not own it and the text of the
//! imports stops telling who depends on whom. A module re-exporting its own children's
//! items (`pub use maps::XdpMaps` in `xdp/mod.rs`) is how a unit shows its API, and is fine.

use super::tree::Crate;
use super::{Finding, rel};

pub fn aliases(krate: &Crate, root: &std::path::Path) -> Vec<Finding> {
    let mut out = Vec::new();
    for (m, module) in krate.modules.iter().enumerate() {
        for (line, abs) in &module.reexports {
            let to = krate.written_module(abs);
            if krate.is_ancestor(m, to) {
                continue;
            }
            let here = if module.path.is_empty() {
                "crate".to_string()
            } else {
                module.path.join("::")
            };
            let key = format!("alias {} {here}: {}", krate.name, abs.join("::"));
            let text = format!(
                "{key} (a re-export of a name owned elsewhere: import it from its owner)\n  {}:{line}",
                rel(root, &module.file)
            );
            out.push(Finding { key, text });
        }
    }
    out
}
