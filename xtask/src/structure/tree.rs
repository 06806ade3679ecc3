//! The module tree of one crate as rustc walks it, with what each module defines, imports
//! and names.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use syn::spanned::Spanned as _;
use syn::visit::Visit;

/// One module: its path from the crate root, the file its items are in, what it defines and
/// imports.
#[derive(Default)]
pub struct Module {
    pub path: Vec<String>,
    pub file: PathBuf,
    pub parent: Option<usize>,
    pub children: BTreeMap<String, usize>,
    /// Names of items defined here (types, functions, traits, consts, statics, macros).
    pub items: BTreeSet<String>,
    /// `use` leaves: the name in scope → the path it names, as written, resolved to absolute
    /// segments from the crate root (None: an external crate).
    pub aliases: HashMap<String, Vec<String>>,
    /// `use a::b::*` of crate-local modules, as absolute paths.
    pub globs: Vec<Vec<String>>,
    /// Paths named here: (line, absolute path).
    pub refs: Vec<(usize, Vec<String>)>,
    /// `pub use` leaves (re-exports, any visibility but private): (line, the path as
    /// written), resolved to absolute segments like `refs`.
    pub reexports: Vec<(usize, Vec<String>)>,
}

pub struct Crate {
    pub name: String,
    pub modules: Vec<Module>,
}

pub fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        if a.path().is_ident("test") {
            return true;
        }
        if !a.path().is_ident("cfg") {
            return false;
        }
        // `#[cfg(test)]` only: `cfg(any(test, fuzzing))` code ships in some build.
        a.parse_args::<syn::Ident>().is_ok_and(|i| i == "test")
    })
}

fn path_attr(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| match &a.meta {
        syn::Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}

fn is_test_file(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with("_tests.rs"))
}

pub fn load_crate(root: &Path, name: &str, file: &Path) -> anyhow::Result<Crate> {
    let mut krate = Crate {
        name: name.to_string(),
        modules: Vec::new(),
    };
    krate.modules.push(Module {
        file: file.to_path_buf(),
        ..Module::default()
    });
    let ast = parse(file)?;
    // A crate root's `mod x;` files live next to it.
    let dir = file.parent().unwrap_or(root).to_path_buf();
    collect(&mut krate, 0, &ast.items, &dir)?;
    resolve_refs(&mut krate);
    Ok(krate)
}

pub fn parse(file: &Path) -> anyhow::Result<syn::File> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    syn::parse_file(&text).with_context(|| format!("cannot parse {}", file.display()))
}

/// Walk the items of module `m`, whose `mod x;` children are looked up in `dir`.
fn collect(krate: &mut Crate, m: usize, items: &[syn::Item], dir: &Path) -> anyhow::Result<()> {
    for item in items {
        match item {
            syn::Item::Mod(im) if !is_cfg_test(&im.attrs) => {
                let name = im.ident.to_string();
                let mut path = krate.modules[m].path.clone();
                path.push(name.clone());
                let id = krate.modules.len();
                match &im.content {
                    Some((_, inner)) => {
                        krate.modules.push(Module {
                            path,
                            file: krate.modules[m].file.clone(),
                            parent: Some(m),
                            ..Module::default()
                        });
                        krate.modules[m].children.insert(name.clone(), id);
                        collect(krate, id, inner, &dir.join(&name))?;
                    }
                    None => {
                        let (file, sub) = match path_attr(&im.attrs) {
                            Some(p) => {
                                let f = dir.join(p);
                                let d = f.parent().unwrap_or(dir).to_path_buf();
                                (f, d)
                            }
                            None => {
                                let flat = dir.join(format!("{name}.rs"));
                                if flat.exists() {
                                    (flat, dir.join(&name))
                                } else {
                                    (dir.join(&name).join("mod.rs"), dir.join(&name))
                                }
                            }
                        };
                        if is_test_file(&file) {
                            continue;
                        }
                        krate.modules.push(Module {
                            path,
                            file: file.clone(),
                            parent: Some(m),
                            ..Module::default()
                        });
                        krate.modules[m].children.insert(name.clone(), id);
                        let ast = parse(&file)?;
                        collect(krate, id, &ast.items, &sub)?;
                    }
                }
            }
            syn::Item::Mod(_) => {}
            other => {
                if item_is_test(other) {
                    continue;
                }
                if let Some(n) = item_name(other) {
                    krate.modules[m].items.insert(n);
                }
                let mut v = Refs {
                    krate,
                    module: m,
                    raw: Vec::new(),
                    reexport: false,
                };
                v.visit_item(other);
                let raw = std::mem::take(&mut v.raw);
                krate.modules[m].refs.extend(raw);
            }
        }
    }
    Ok(())
}

fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    match item {
        syn::Item::Const(i) => &i.attrs,
        syn::Item::Enum(i) => &i.attrs,
        syn::Item::Fn(i) => &i.attrs,
        syn::Item::Impl(i) => &i.attrs,
        syn::Item::Macro(i) => &i.attrs,
        syn::Item::Mod(i) => &i.attrs,
        syn::Item::Static(i) => &i.attrs,
        syn::Item::Struct(i) => &i.attrs,
        syn::Item::Trait(i) => &i.attrs,
        syn::Item::Type(i) => &i.attrs,
        syn::Item::Union(i) => &i.attrs,
        syn::Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

pub fn item_is_test(item: &syn::Item) -> bool {
    is_cfg_test(item_attrs(item))
}

fn item_name(item: &syn::Item) -> Option<String> {
    Some(match item {
        syn::Item::Const(i) => i.ident.to_string(),
        syn::Item::Enum(i) => i.ident.to_string(),
        syn::Item::Fn(i) => i.sig.ident.to_string(),
        syn::Item::Macro(i) => i.ident.as_ref()?.to_string(),
        syn::Item::Static(i) => i.ident.to_string(),
        syn::Item::Struct(i) => i.ident.to_string(),
        syn::Item::Trait(i) => i.ident.to_string(),
        syn::Item::Type(i) => i.ident.to_string(),
        syn::Item::Union(i) => i.ident.to_string(),
        _ => return None,
    })
}

/// Collects the `use` leaves and the paths of one item (raw: resolved after the whole crate is
/// known, since a path may start with a name a later `use` brings in).
struct Refs<'a> {
    krate: &'a mut Crate,
    module: usize,
    raw: Vec<(usize, Vec<String>)>,
    /// Whether the `use` being walked is visible outside its module (a re-export).
    reexport: bool,
}

impl Refs<'_> {
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree, line: usize) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree, line);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut full = prefix.clone();
                let name = n.ident.to_string();
                if name != "self" {
                    full.push(name.clone());
                }
                let alias = if name == "self" {
                    prefix.last().cloned().unwrap_or_default()
                } else {
                    name
                };
                self.leaf(alias, full, line);
            }
            syn::UseTree::Rename(r) => {
                let mut full = prefix.clone();
                if r.ident != "self" {
                    full.push(r.ident.to_string());
                }
                self.leaf(r.rename.to_string(), full, line);
            }
            syn::UseTree::Glob(_) => {
                let m = &mut self.krate.modules[self.module];
                m.globs.push(prefix.clone());
                self.raw.push((line, prefix.clone()));
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t, line);
                }
            }
        }
    }

    fn leaf(&mut self, alias: String, full: Vec<String>, line: usize) {
        if alias != "_" {
            self.krate.modules[self.module]
                .aliases
                .insert(alias, full.clone());
        }
        if self.reexport {
            self.krate.modules[self.module]
                .reexports
                .push((line, full.clone()));
        }
        self.raw.push((line, full));
    }
}

impl<'ast> Visit<'ast> for Refs<'_> {
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        if is_cfg_test(&u.attrs) {
            return;
        }
        let line = u.span().start().line;
        let mut prefix = Vec::new();
        if u.leading_colon.is_some() {
            prefix.push("::".to_string());
        }
        self.reexport = !matches!(u.vis, syn::Visibility::Inherited);
        self.use_tree(&mut prefix, &u.tree, line);
        self.reexport = false;
    }

    fn visit_item_mod(&mut self, _: &'ast syn::ItemMod) {
        // Modules inside functions do not occur in this workspace; modules are walked by
        // `collect`.
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if !is_cfg_test(&f.attrs) {
            syn::visit::visit_item_fn(self, f);
        }
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if !is_cfg_test(&f.attrs) {
            syn::visit::visit_impl_item_fn(self, f);
        }
    }

    fn visit_attribute(&mut self, a: &'ast syn::Attribute) {
        // `#[serde(deserialize_with = "crate::config::duration")]` names a function too.
        if a.path().is_ident("serde") {
            let line = a.span().start().line;
            let _ = a.parse_nested_meta(|meta| {
                if let Ok(v) = meta.value()
                    && let Ok(s) = v.parse::<syn::LitStr>()
                    && let Ok(p) = s.parse::<syn::Path>()
                    && p.segments.len() > 1
                {
                    let segs = p.segments.iter().map(|s| s.ident.to_string()).collect();
                    self.raw.push((line, segs));
                }
                Ok(())
            });
        }
        syn::visit::visit_attribute(self, a);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        if p.leading_colon.is_none() && p.segments.len() > 1 {
            let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
            self.raw.push((p.span().start().line, segs));
        }
        syn::visit::visit_path(self, p);
    }
}

impl Crate {
    /// The absolute path (from the crate root) of `segs` as written in module `m`; None when
    /// it names an external crate or something local (a variable, a generic).
    fn absolute(&self, m: usize, segs: &[String], depth: usize) -> Option<Vec<String>> {
        let first = segs.first()?;
        let here = &self.modules[m];
        match first.as_str() {
            "::" => None,
            "crate" => Some(segs[1..].to_vec()),
            "self" => {
                let mut p = here.path.clone();
                p.extend_from_slice(&segs[1..]);
                Some(p)
            }
            "super" => {
                let mut cur = m;
                let mut rest = segs;
                while rest.first().is_some_and(|s| s == "super") {
                    cur = self.modules[cur].parent?;
                    rest = &rest[1..];
                }
                let mut p = self.modules[cur].path.clone();
                p.extend_from_slice(rest);
                Some(p)
            }
            name => {
                if here.children.contains_key(name) || here.items.contains(name) {
                    let mut p = here.path.clone();
                    p.extend_from_slice(segs);
                    return Some(p);
                }
                if depth > 8 {
                    return None;
                }
                let target = here.aliases.get(name)?;
                // The alias's own path is written relative to this module too.
                if target.len() == 1 && target[0] == *name {
                    return None;
                }
                let mut p = self.absolute(m, target, depth + 1)?;
                p.extend_from_slice(&segs[1..]);
                Some(p)
            }
        }
    }

    pub fn is_ancestor(&self, a: usize, mut b: usize) -> bool {
        loop {
            if a == b {
                return true;
            }
            match self.modules[b].parent {
                Some(p) => b = p,
                None => return false,
            }
        }
    }
}

/// Resolved references: (from module, line, path as absolute, to module).
pub type Edge = (usize, usize, String, usize);

fn resolve_refs(krate: &mut Crate) {
    let mut resolved = Vec::new();
    let mut reexports = Vec::new();
    for m in 0..krate.modules.len() {
        for (line, segs) in &krate.modules[m].refs {
            if let Some(abs) = krate.absolute(m, segs, 0) {
                resolved.push((m, *line, abs));
            }
        }
        for (line, segs) in &krate.modules[m].reexports {
            if let Some(abs) = krate.absolute(m, segs, 0) {
                reexports.push((m, *line, abs));
            }
        }
    }
    for m in &mut krate.modules {
        m.refs.clear();
        m.reexports.clear();
    }
    for (m, line, abs) in resolved {
        krate.modules[m].refs.push((line, abs));
    }
    for (m, line, abs) in reexports {
        krate.modules[m].reexports.push((line, abs));
    }
}

/// The imports and paths of every module as written: each edge ends at the module the path
/// names (its longest prefix that is a module), not where a re-export there leads.
pub fn edges(krate: &Crate) -> Vec<Edge> {
    let mut out = Vec::new();
    for (m, module) in krate.modules.iter().enumerate() {
        for (line, abs) in &module.refs {
            let to = krate.written_module(abs);
            if to != m {
                out.push((m, *line, abs.join("::"), to));
            }
        }
    }
    out
}

impl Crate {
    /// The deepest module the absolute path `abs` walks through, as written.
    pub fn written_module(&self, abs: &[String]) -> usize {
        let mut cur = 0;
        for seg in abs {
            match self.modules[cur].children.get(seg) {
                Some(&c) => cur = c,
                None => break,
            }
        }
        cur
    }
}
