//! No module cycles inside any crate of the workspace: for each crate, the references between
//! its top-level modules (`crate::a::...`, `use crate::{a::X, b}`, `super::a` from a top-level
//! module, and names the crate root re-exports from a module) form a graph without cycles.
//! A module's children count as the module; a reference to itself is not an edge.
//!
//! The reading is textual (comments and string literals of a line are dropped first), which is
//! enough for this workspace's plain `use` style; `a_cycle_is_found` checks the reader itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One source file: its module path inside the crate (`["cpu", "tile"]`) and its text.
struct Source {
    module: Vec<String>,
    text: String,
}

/// Top-level module -> the top-level modules it refers to.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The code of a line: without a `//` comment and with string literals emptied.
fn code_of(line: &str) -> String {
    let mut out = String::new();
    let mut in_str = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if in_str {
            if c == '\\' {
                chars.next();
            } else if c == '"' {
                in_str = false;
                out.push('"');
            }
            continue;
        }
        if c == '"' {
            in_str = true;
            out.push('"');
            continue;
        }
        if c == '/' && chars.peek() == Some(&'/') {
            break;
        }
        out.push(c);
    }
    out
}

/// The first path segment of each item of what follows a `crate::` (an identifier, or a
/// `{a::X, b}` group).
fn first_segments(rest: &str) -> Vec<String> {
    let rest = rest.trim_start();
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 1;
        let mut item = String::new();
        let mut items = Vec::new();
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                ',' if depth == 1 => {
                    items.push(std::mem::take(&mut item));
                    continue;
                }
                _ => {}
            }
            item.push(c);
        }
        items.push(item);
        items
            .iter()
            .filter_map(|i| {
                let seg: String = i.trim().chars().take_while(|&c| is_ident_char(c)).collect();
                (!seg.is_empty()).then_some(seg)
            })
            .collect()
    } else {
        let seg: String = rest.chars().take_while(|&c| is_ident_char(c)).collect();
        if seg.is_empty() { vec![] } else { vec![seg] }
    }
}

/// Names the crate root re-exports (`pub use a::{X, Y};`, `pub use a::X;`) -> their module.
fn root_reexports(root: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    // Statements can span lines: join, then split at `;`.
    let code: String = root.lines().map(code_of).collect::<Vec<_>>().join(" ");
    for stmt in code.split(';') {
        let Some(rest) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let rest = rest
            .trim()
            .trim_start_matches("crate::")
            .trim_start_matches("self::");
        let Some((module, names)) = rest.split_once("::") else {
            continue;
        };
        let names = names.trim();
        let names: Vec<&str> = match names.strip_prefix('{') {
            Some(g) => g.trim_end_matches('}').split(',').collect(),
            None => vec![names],
        };
        for n in names {
            let n = n.trim();
            let n = n.rsplit(" as ").next().unwrap_or(n).trim();
            let n = n.rsplit("::").next().unwrap_or(n).trim();
            if !n.is_empty() {
                map.insert(n.to_string(), module.trim().to_string());
            }
        }
    }
    map
}

/// The code lines of `text` (see [`code_of`]) outside `#[cfg(test)] mod ... { }` blocks: a
/// module's unit tests may use any other module without making it depend on it.
fn non_test_code(text: &str) -> Vec<String> {
    let lines: Vec<String> = text.lines().map(code_of).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == "#[cfg(test)]" {
            let next = lines[i + 1..].iter().position(|l| !l.trim().is_empty());
            if let Some(n) = next.map(|n| i + 1 + n) {
                let head = lines[n].trim();
                if (head.starts_with("mod ") || head.starts_with("pub mod ")) && head.contains('{')
                {
                    let mut depth = 0i64;
                    let mut j = n;
                    while j < lines.len() {
                        depth += lines[j].matches('{').count() as i64;
                        depth -= lines[j].matches('}').count() as i64;
                        j += 1;
                        if depth <= 0 {
                            break;
                        }
                    }
                    i = j;
                    continue;
                }
            }
        }
        out.push(lines[i].clone());
        i += 1;
    }
    out
}

fn graph_of(sources: &[Source], root: &str) -> Graph {
    let modules: BTreeSet<String> = sources
        .iter()
        .filter_map(|s| s.module.first().cloned())
        .collect();
    let reexports = root_reexports(root);
    let mut graph = Graph::new();
    for s in sources {
        let Some(top) = s.module.first() else {
            continue;
        };
        let edges = graph.entry(top.clone()).or_default();
        for code in non_test_code(&s.text) {
            let mut targets = Vec::new();
            for (at, _) in code.match_indices("crate::") {
                if at > 0 && code[..at].ends_with(|c: char| is_ident_char(c) || c == ':') {
                    continue; // `$crate::` or `other_crate::`
                }
                targets.extend(first_segments(&code[at + "crate::".len()..]));
            }
            // `super::x` from a top-level module (file `a.rs` or `a/mod.rs`) names the root.
            if s.module.len() == 1 {
                for (at, _) in code.match_indices("super::") {
                    if at > 0 && code[..at].ends_with(|c: char| is_ident_char(c) || c == ':') {
                        continue;
                    }
                    targets.extend(first_segments(&code[at + "super::".len()..]));
                }
            }
            for t in targets {
                let module = if modules.contains(&t) {
                    Some(t)
                } else {
                    reexports.get(&t).cloned()
                };
                if let Some(m) = module
                    && &m != top
                    && modules.contains(&m)
                {
                    edges.insert(m);
                }
            }
        }
    }
    graph
}

/// Every cycle found by a depth-first search, each as the modules along it.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        if let Some(pos) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[pos..].to_vec();
            cycle.push(node.to_string());
            found.push(cycle);
            return;
        }
        if done.contains(node) {
            return;
        }
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, stack, done, found);
        }
        stack.pop();
        done.insert(node.to_string());
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, graph, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The sources of the crate whose `src` is `src`, and its root file's text.
fn crate_sources(src: &Path) -> (Vec<Source>, String) {
    let root_file = ["lib.rs", "main.rs"]
        .iter()
        .map(|f| src.join(f))
        .find(|p| p.exists())
        .unwrap();
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut sources = Vec::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap();
        let mut module: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
            .collect();
        if module.last().is_some_and(|m| m == "mod") {
            module.pop();
        }
        if module == ["lib"] || module == ["main"] || rel.starts_with("bin") {
            continue;
        }
        sources.push(Source {
            module,
            text: std::fs::read_to_string(&f).unwrap(),
        });
    }
    (sources, std::fs::read_to_string(root_file).unwrap())
}

/// Cycles allowed for now, each in files another change is editing: `(crate, modules on the
/// cycle)`. The test fails on any cycle not listed here, and on a listed one that is gone (take
/// it off the list). plsc-ckpt's load no longer uses save (`has_bias` is the file layout's,
/// `layout.rs`), and plsc-models' state and pytorch both take the format sniffing from
/// `format.rs`. plsc-core's head storage keeps the type a leaf (`head_storage`) and the kernel's
/// views of stored rows in the kernel (`cpu::stored`), so none is left.
const KNOWN: &[(&str, &[&str])] = &[];

#[test]
fn no_crate_has_a_module_cycle() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut srcs = vec![workspace.join("xtask/src")];
    for entry in std::fs::read_dir(workspace.join("crates")).unwrap() {
        let src = entry.unwrap().path().join("src");
        if src.is_dir() {
            srcs.push(src);
        }
    }
    let mut problems = Vec::new();
    let mut edges = 0;
    let mut known_seen = BTreeSet::new();
    for src in &srcs {
        let name = src.parent().unwrap().file_name().unwrap().to_string_lossy();
        let (sources, root) = crate_sources(src);
        let graph = graph_of(&sources, &root);
        edges += graph.values().map(BTreeSet::len).sum::<usize>();
        for cycle in cycles(&graph) {
            let set: BTreeSet<&str> = cycle.iter().map(String::as_str).collect();
            let known = KNOWN
                .iter()
                .position(|(c, m)| *c == name && m.iter().copied().collect::<BTreeSet<_>>() == set);
            match known {
                Some(k) => {
                    known_seen.insert(k);
                }
                None => problems.push(format!("{}: {}", src.display(), cycle.join(" -> "))),
            }
        }
    }
    for (k, (c, m)) in KNOWN.iter().enumerate() {
        if !known_seen.contains(&k) {
            problems.push(format!(
                "{c}: the listed cycle through {m:?} is gone: take it off KNOWN"
            ));
        }
    }
    assert!(edges > 50, "only {edges} edges read: is the reader broken?");
    assert!(
        problems.is_empty(),
        "module cycles (move the shared item to the module that owns it):\n{}",
        problems.join("\n")
    );
}

#[test]
fn a_cycle_is_found() {
    let source = |module: &[&str], text: &str| Source {
        module: module.iter().map(|m| m.to_string()).collect(),
        text: text.to_string(),
    };
    let root = "mod a;\nmod b;\nmod c;\npub use c::{Thing, Other as O};\n";
    let sources = [
        source(
            &["a"],
            "use crate::{b::X, a::Y}; // crate::c in a comment\n",
        ),
        source(
            &["b", "inner"],
            "let s = \"crate::c\"; fn f() -> crate::Thing {}\n",
        ),
        source(&["c"], "use super::a::Z;\n"),
    ];
    let graph = graph_of(&sources, root);
    assert_eq!(graph["a"], BTreeSet::from(["b".to_string()]));
    assert_eq!(graph["b"], BTreeSet::from(["c".to_string()]));
    assert_eq!(graph["c"], BTreeSet::from(["a".to_string()]));
    let found = cycles(&graph);
    assert_eq!(found, vec![vec!["a", "b", "c", "a"]]);

    // A unit-test module's uses are not edges.
    let sources = [
        source(
            &["a"],
            "use crate::b::X;\n#[cfg(test)]\nmod tests {\n    use crate::c::Y;\n}\n",
        ),
        source(&["b"], "fn f() {}\n"),
        source(&["c"], "use crate::a::Z;\n"),
    ];
    let graph = graph_of(&sources, root);
    assert_eq!(graph["a"], BTreeSet::from(["b".to_string()]));

    // Without c -> a there is none.
    let sources = [
        source(&["a"], "use crate::b::X;\n"),
        source(&["b"], "use crate::c::X;\n"),
        source(&["c"], "use std::fmt;\n"),
    ];
    assert!(cycles(&graph_of(&sources, root)).is_empty());
}
