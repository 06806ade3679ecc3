//! Import cycles among the child modules of every module.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use super::tree::{Crate, Edge, edges};
use super::{Finding, rel};

pub fn cycles(krate: &Crate, root: &Path) -> Vec<Finding> {
    let all = edges(krate);
    let mut findings = Vec::new();
    for pm in &krate.modules {
        if pm.children.len() < 2 {
            continue;
        }
        let kids: Vec<usize> = pm.children.values().copied().collect();
        let child_of = |x: usize| kids.iter().position(|&k| krate.is_ancestor(k, x));
        // child index → child index → witnesses.
        let mut graph: BTreeMap<(usize, usize), Vec<&Edge>> = BTreeMap::new();
        for e in &all {
            if let (Some(a), Some(b)) = (child_of(e.0), child_of(e.3))
                && a != b
            {
                graph.entry((a, b)).or_default().push(e);
            }
        }
        for scc in sccs(kids.len(), &graph) {
            let names = |i: usize| {
                krate.modules[kids[i]]
                    .path
                    .last()
                    .cloned()
                    .unwrap_or_default()
            };
            let scope = if pm.path.is_empty() {
                "crate".to_string()
            } else {
                pm.path.join("::")
            };
            let members: Vec<String> = scc.iter().map(|&i| names(i)).collect();
            let key = format!("cycle {} {scope}: {}", krate.name, members.join(" "));
            let chain: Vec<String> = one_cycle(&scc, &graph).iter().map(|&i| names(i)).collect();
            let mut text = format!("{key} (e.g. {})", chain.join(" → "));
            for (&(a, b), es) in &graph {
                if !scc.contains(&a) || !scc.contains(&b) {
                    continue;
                }
                let e = es[0];
                let _ = write!(
                    text,
                    "\n  {} → {}: {}:{} {}",
                    names(a),
                    names(b),
                    rel(root, &krate.modules[e.0].file),
                    e.1,
                    e.2
                );
                if es.len() > 1 {
                    let _ = write!(text, " (+{} more)", es.len() - 1);
                }
            }
            findings.push(Finding { key, text });
        }
    }
    findings
}

/// Strongly connected components of more than one node (Tarjan).
fn sccs(n: usize, graph: &BTreeMap<(usize, usize), Vec<&Edge>>) -> Vec<Vec<usize>> {
    struct T<'g> {
        adj: Vec<Vec<usize>>,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
        _g: std::marker::PhantomData<&'g ()>,
    }
    impl T<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.next);
            self.low[v] = self.next;
            self.next += 1;
            self.stack.push(v);
            self.on[v] = true;
            for w in self.adj[v].clone() {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(iw) if self.on[w] => self.low[v] = self.low[v].min(iw),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on[w] = false;
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort_unstable();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut adj = vec![Vec::new(); n];
    for &(a, b) in graph.keys() {
        adj[a].push(b);
    }
    let mut t = T {
        adj,
        index: vec![None; n],
        low: vec![0; n],
        on: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
        _g: std::marker::PhantomData,
    };
    for v in 0..n {
        if t.index[v].is_none() {
            t.visit(v);
        }
    }
    t.out
}

/// One cycle through the component's first node, as a node list that ends where it starts
/// (breadth-first, so the shortest).
fn one_cycle(scc: &[usize], graph: &BTreeMap<(usize, usize), Vec<&Edge>>) -> Vec<usize> {
    let start = scc[0];
    let mut prev: BTreeMap<usize, usize> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &(a, b) in graph.keys() {
            if a != v || !scc.contains(&b) {
                continue;
            }
            if b == start {
                let mut chain = vec![v];
                let mut c = v;
                while c != start {
                    c = prev[&c];
                    chain.push(c);
                }
                chain.reverse();
                chain.push(start);
                return chain;
            }
            if let std::collections::btree_map::Entry::Vacant(e) = prev.entry(b) {
                e.insert(v);
                queue.push_back(b);
            }
        }
    }
    let mut all = scc.to_vec();
    all.push(start);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crate whose units `a` and `b` name each other through a re-export, and a `c` that
    /// only names `a`: one cycle, `a b`, found with the line of each edge.
    #[test]
    fn finds_a_cycle_through_a_reexport_and_only_it() {
        let dir = std::env::temp_dir().join(format!("xtask-structure-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::write(dir.join("lib.rs"), "mod a;\nmod b;\nmod c;\n").unwrap();
        std::fs::write(dir.join("a/mod.rs"), "mod inner;\npub use inner::Thing;\n").unwrap();
        std::fs::write(
            dir.join("a/inner.rs"),
            "pub struct Thing;\nfn f() { crate::b::g(); }\n",
        )
        .unwrap();
        std::fs::write(dir.join("b.rs"), "use crate::a::Thing;\npub fn g() {}\n").unwrap();
        std::fs::write(dir.join("c.rs"), "use super::a;\nfn h(_: a::Thing) {}\n").unwrap();
        let krate = super::super::tree::load_crate(&dir, "t", &dir.join("lib.rs")).unwrap();
        let found = cycles(&krate, &dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            found.len(),
            1,
            "{:?}",
            found.iter().map(|f| &f.text).collect::<Vec<_>>()
        );
        assert_eq!(found[0].key, "cycle t crate: a b");
        assert!(
            found[0].text.contains("a → b: a/inner.rs:2 b::g"),
            "{}",
            found[0].text
        );
        assert!(
            found[0].text.contains("b → a: b.rs:1 a::Thing"),
            "{}",
            found[0].text
        );
    }
}
