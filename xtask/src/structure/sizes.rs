//! Files and functions over their line limits.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use syn::spanned::Spanned as _;
use syn::visit::Visit;

use super::tree::{Crate, is_cfg_test, item_is_test, parse};
use super::{Finding, rel};

/// The limits: files, functions, cycles.
const MAX_FILE_LINES: usize = 500;
const MAX_FN_LINES: usize = 80;

/// Files over the line limit and functions over theirs.
pub fn sizes(krate: &Crate, root: &Path) -> anyhow::Result<Vec<Finding>> {
    let mut findings = Vec::new();
    let files: BTreeSet<&PathBuf> = krate.modules.iter().map(|m| &m.file).collect();
    for file in files {
        let ast = parse(file)?;
        let text = std::fs::read_to_string(file)?;
        let total = text.lines().count();
        let mut sz = Sizes {
            test_lines: 0,
            fns: Vec::new(),
            prefix: Vec::new(),
        };
        sz.visit_file(&ast);
        let lines = total.saturating_sub(sz.test_lines);
        let name = rel(root, file);
        if lines > MAX_FILE_LINES {
            let key = format!("file {name}");
            findings.push(Finding {
                text: format!(
                    "{key} {lines} lines (limit {MAX_FILE_LINES}, test items not counted)"
                ),
                key,
            });
        }
        for (f, n) in sz.fns {
            if n > MAX_FN_LINES {
                let key = format!("fn {name}::{f}");
                findings.push(Finding {
                    text: format!("{key} {n} lines (limit {MAX_FN_LINES})"),
                    key,
                });
            }
        }
    }
    Ok(findings)
}

struct Sizes {
    test_lines: usize,
    fns: Vec<(String, usize)>,
    prefix: Vec<String>,
}

fn lines_of(s: proc_macro2::Span) -> usize {
    s.end().line.saturating_sub(s.start().line) + 1
}

impl Sizes {
    fn qualified(&self, name: &str) -> String {
        let mut p = self.prefix.clone();
        p.push(name.to_string());
        p.join("::")
    }
}

impl<'ast> Visit<'ast> for Sizes {
    fn visit_item(&mut self, i: &'ast syn::Item) {
        if item_is_test(i) {
            self.test_lines += lines_of(i.span());
            return;
        }
        syn::visit::visit_item(self, i);
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        self.prefix.push(m.ident.to_string());
        syn::visit::visit_item_mod(self, m);
        self.prefix.pop();
    }

    fn visit_item_impl(&mut self, i: &'ast syn::ItemImpl) {
        let ty = match &*i.self_ty {
            syn::Type::Path(p) => p
                .path
                .segments
                .last()
                .map(|s| s.ident.to_string())
                .unwrap_or_default(),
            _ => "impl".to_string(),
        };
        self.prefix.push(ty);
        syn::visit::visit_item_impl(self, i);
        self.prefix.pop();
    }

    fn visit_item_trait(&mut self, t: &'ast syn::ItemTrait) {
        self.prefix.push(t.ident.to_string());
        syn::visit::visit_item_trait(self, t);
        self.prefix.pop();
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        let n = lines_of(f.sig.span().join(f.block.span()).unwrap_or(f.block.span()));
        self.fns.push((self.qualified(&f.sig.ident.to_string()), n));
        syn::visit::visit_item_fn(self, f);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if is_cfg_test(&f.attrs) {
            self.test_lines += lines_of(f.span());
            return;
        }
        let n = lines_of(f.sig.span().join(f.block.span()).unwrap_or(f.block.span()));
        self.fns.push((self.qualified(&f.sig.ident.to_string()), n));
        syn::visit::visit_impl_item_fn(self, f);
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if let Some(b) = &f.default {
            let n = lines_of(f.sig.span().join(b.span()).unwrap_or(b.span()));
            self.fns.push((self.qualified(&f.sig.ident.to_string()), n));
        }
        syn::visit::visit_trait_item_fn(self, f);
    }
}
