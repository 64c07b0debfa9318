//! The workspace's module graph has no cycles.
//!
//! Dependencies point one way inside a crate as they do between crates: a module may use its
//! descendants and its ancestors, but between siblings (the children of one module) the `use`
//! edges must form no cycle, or the two can neither be read nor changed apart. This test parses
//! every crate's sources, collects the `crate::`, `super::` and `self::` paths each module names
//! (test modules left out: they are leaves by construction), lifts each edge to the level where
//! the two modules are siblings, and fails naming the cycle and one reference per edge.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::{Path, PathBuf},
};

use syn::visit::Visit;

/// A module's path inside its crate: `["settlement", "training"]`; the crate root is empty.
type ModPath = Vec<String>;

/// One crate's modules and the references between them.
struct Crate {
    name: String,
    modules: BTreeSet<ModPath>,
    /// `(from, to)` sibling edges, each with one place that makes it (file and path).
    edges: BTreeMap<(ModPath, ModPath), String>,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `src` folder of the workspace's crates.
fn crate_sources() -> Vec<(String, PathBuf)> {
    let root = workspace_root();
    let mut sources = vec![("bench".to_owned(), root.join("bench/src"))];
    for entry in std::fs::read_dir(root.join("crates")).expect("crates folder") {
        let path = entry.expect("crate folder").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        sources.push((name, path.join("src")));
    }
    sources.retain(|(_, src)| src.is_dir());
    sources.sort();
    sources
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source folder") {
        let path = entry.expect("source entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file defines: `a/b.rs` and `a/b/mod.rs` are `a::b`; `lib.rs` and `main.rs` the root.
fn module_of(src: &Path, file: &Path) -> ModPath {
    let relative = file
        .strip_prefix(src)
        .expect("file under src")
        .with_extension("");
    let mut path: ModPath = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(
        path.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        path.pop();
    }
    path
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .parse_args::<syn::Meta>()
                .is_ok_and(|meta| meta.path().is_ident("test"))
    })
}

/// Collects the crate-relative paths one file names, resolved against the module they appear in.
struct References<'a> {
    module: ModPath,
    /// The module `super::` is relative to: a file's own module, or an inline module inside it.
    found: &'a mut Vec<(ModPath, Vec<String>)>,
    /// Modules declared `#[cfg(test)] mod name;`, whose files are left out.
    test_only: &'a mut BTreeSet<ModPath>,
}

impl References<'_> {
    /// Resolves a path's leading `crate`/`super`/`self` segments; other paths are not crate-local
    /// (or name a child, which can never close a sibling cycle).
    fn record(&mut self, segments: &[String]) {
        let mut base = match segments.first().map(String::as_str) {
            Some("crate") => Vec::new(),
            Some("super" | "self") => self.module.clone(),
            _ => return,
        };
        let mut rest = &segments[usize::from(segments[0] == "crate")..];
        while let Some(first) = rest.first() {
            match first.as_str() {
                "super" => {
                    base.pop();
                }
                "self" => {}
                _ => break,
            }
            rest = &rest[1..];
        }
        base.extend(rest.iter().cloned());
        self.found.push((self.module.clone(), base));
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => self.leaf(prefix, &n.ident),
            syn::UseTree::Rename(r) => self.leaf(prefix, &r.ident),
            syn::UseTree::Glob(_) => self.record(&prefix.clone()),
            syn::UseTree::Group(g) => g.items.iter().for_each(|t| self.use_tree(prefix, t)),
        }
    }

    fn leaf(&mut self, prefix: &mut Vec<String>, ident: &syn::Ident) {
        prefix.push(ident.to_string());
        self.record(&prefix.clone());
        prefix.pop();
    }

    /// Macro bodies are tokens, not syntax: finds `crate :: a :: b` runs in them.
    fn tokens(&mut self, tokens: proc_macro2::TokenStream) {
        let mut run: Vec<String> = Vec::new();
        let mut colons = 0;
        for token in tokens {
            match token {
                proc_macro2::TokenTree::Group(g) => {
                    self.flush(&mut run);
                    self.tokens(g.stream());
                }
                proc_macro2::TokenTree::Ident(i) => {
                    let word = i.to_string();
                    if run.is_empty() || colons != 2 {
                        self.flush(&mut run);
                    }
                    if run.is_empty() && !matches!(word.as_str(), "crate" | "super" | "self") {
                        continue;
                    }
                    run.push(word);
                    colons = 0;
                }
                proc_macro2::TokenTree::Punct(p) if p.as_char() == ':' && !run.is_empty() => {
                    colons += 1;
                }
                _ => self.flush(&mut run),
            }
        }
        self.flush(&mut run);
    }

    fn flush(&mut self, run: &mut Vec<String>) {
        if run.len() > 1 {
            self.record(&run.clone());
        }
        run.clear();
    }
}

impl<'ast> Visit<'ast> for References<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs: &[syn::Attribute] = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Use(u) => &u.attrs,
            _ => &[],
        };
        if !is_test_only(attrs) {
            syn::visit::visit_item(self, item);
        } else if let syn::Item::Mod(m) = item {
            self.test_only
                .insert([self.module.clone(), vec![m.ident.to_string()]].concat());
        }
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        if item.content.is_some() {
            self.module.push(item.ident.to_string());
            syn::visit::visit_item_mod(self, item);
            self.module.pop();
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        self.record(&segments);
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.tokens(mac.tokens.clone());
        syn::visit::visit_macro(self, mac);
    }
}

fn parse_crate(name: &str, src: &Path) -> Crate {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut modules = BTreeSet::new();
    let mut found = Vec::new();
    let mut origin = Vec::new();
    let mut test_only = BTreeSet::new();
    for file in &files {
        let module = module_of(src, file);
        modules.insert(module.clone());
        let text = std::fs::read_to_string(file).expect("readable source");
        let syntax = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let before = found.len();
        References {
            module,
            found: &mut found,
            test_only: &mut test_only,
        }
        .visit_file(&syntax);
        let shown = file
            .strip_prefix(workspace_root())
            .unwrap_or(file)
            .display()
            .to_string();
        origin.extend(std::iter::repeat_n(shown, found.len() - before));
    }
    let mut edges = BTreeMap::new();
    for ((from, target), file) in found.into_iter().zip(origin) {
        if test_only.iter().any(|t| from.starts_with(t)) {
            continue;
        }
        let Some(to) = (0..=target.len())
            .rev()
            .map(|n| target[..n].to_vec())
            .find(|prefix| modules.contains(prefix))
        else {
            continue;
        };
        let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
        if common == from.len() || common == to.len() {
            continue;
        }
        let edge = (from[..=common].to_vec(), to[..=common].to_vec());
        edges
            .entry(edge)
            .or_insert_with(|| format!("{file} names {}", target.join("::")));
    }
    Crate {
        name: name.to_owned(),
        modules,
        edges,
    }
}

/// Strongly connected components of more than one module (Tarjan's algorithm).
fn cycles(krate: &Crate) -> Vec<Vec<ModPath>> {
    struct Tarjan<'a> {
        next: BTreeMap<&'a ModPath, Vec<&'a ModPath>>,
        index: BTreeMap<&'a ModPath, (usize, usize)>,
        stack: Vec<&'a ModPath>,
        found: Vec<Vec<ModPath>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a ModPath) {
            let n = self.index.len();
            self.index.insert(v, (n, n));
            self.stack.push(v);
            for w in self.next.get(v).cloned().unwrap_or_default() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.index[w].1.min(self.index[v].1);
                    self.index.get_mut(v).unwrap().1 = low;
                } else if self.stack.contains(&w) {
                    let low = self.index[w].0.min(self.index[v].1);
                    self.index.get_mut(v).unwrap().1 = low;
                }
            }
            if self.index[v].0 == self.index[v].1 {
                let at = self.stack.iter().rposition(|m| *m == v).unwrap();
                let component: Vec<ModPath> = self.stack.drain(at..).cloned().collect();
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut tarjan = Tarjan {
        next: BTreeMap::new(),
        index: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for (from, to) in krate.edges.keys() {
        tarjan.next.entry(from).or_default().push(to);
    }
    for module in &krate.modules {
        if !tarjan.index.contains_key(module) {
            tarjan.visit(module);
        }
    }
    tarjan.found
}

#[test]
fn no_module_cycles() {
    let mut report = String::new();
    let mut crates = 0;
    for (name, src) in crate_sources() {
        let krate = parse_crate(&name, &src);
        assert!(
            krate.modules.len() > 1 || name == "primitives",
            "{name}: no modules found"
        );
        crates += 1;
        for mut component in cycles(&krate) {
            component.sort();
            let names: Vec<String> = component.iter().map(|m| m.join("::")).collect();
            writeln!(report, "{}: {}", krate.name, names.join(" <-> ")).unwrap();
            for ((from, to), place) in &krate.edges {
                if component.contains(from) && component.contains(to) {
                    writeln!(
                        report,
                        "    {} -> {}: {place}",
                        from.join("::"),
                        to.join("::")
                    )
                    .unwrap();
                }
            }
        }
    }
    assert!(crates >= 10, "found only {crates} crates");
    assert!(report.is_empty(), "module cycles:\n{report}");
}

/// The checker itself finds a cycle, and ignores parent-child references and test modules.
#[test]
fn the_checker_sees_sibling_cycles_only() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir(src.join("a")).unwrap();
    let files = [
        ("lib.rs", "mod a; mod b; mod c; mod d; use crate::a::X;"),
        (
            "a/mod.rs",
            "mod inner; pub struct X; fn f() -> super::b::Y { todo!() }",
        ),
        ("a/inner.rs", "use super::X; use crate::c::Z;"),
        (
            "b.rs",
            "pub struct Y; fn g() { let _ = crate::a::inner::f; }",
        ),
        (
            "c.rs",
            "pub struct Z; #[cfg(test)] mod tests { use crate::a::X; }",
        ),
        ("d.rs", "fn h() { json!(crate::b::Y); }"),
    ];
    for (path, text) in files {
        std::fs::write(src.join(path), text).unwrap();
    }
    let krate = parse_crate("example", src);
    let found: Vec<Vec<String>> = cycles(&krate)
        .into_iter()
        .map(|c| c.into_iter().map(|m| m.join("::")).collect())
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    let mut component = found[0].clone();
    component.sort();
    assert_eq!(component, ["a", "b"]);
    assert!(
        krate
            .edges
            .contains_key(&(vec!["a".into()], vec!["c".into()]))
    );
    assert!(
        krate
            .edges
            .contains_key(&(vec!["d".into()], vec!["b".into()]))
    );
    assert!(
        !krate
            .edges
            .contains_key(&(vec!["c".into()], vec!["a".into()]))
    );
}
