//! The gateway's layout, held by tests: its modules form no import cycle,
//! and no feature reaches back to the server or the state that assembles it
//! (ARCHITECTURE.md, "A feature is a folder").

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level modules each module's code (tests and comments left out)
/// names through `crate::`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().map(Result::unwrap) {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(&src).unwrap();
            let first = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            let module = first.trim_end_matches(".rs").to_string();
            if module == "lib" || module == "layout_tests" {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            // The code before the file's test module.
            let code = text.split("#[cfg(test)]\nmod ").next().unwrap_or("");
            let out = graph.entry(module.clone()).or_default();
            for line in code.lines() {
                let line = line.split("//").next().unwrap_or("");
                let mut rest = line;
                while let Some(i) = rest.find("crate::") {
                    rest = &rest[i + "crate::".len()..];
                    let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                        group
                            .split('}')
                            .next()
                            .unwrap_or("")
                            .split(',')
                            .map(|n| n.trim().split("::").next().unwrap_or(""))
                            .collect()
                    } else {
                        vec![
                            rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                                .next()
                                .unwrap_or(""),
                        ]
                    };
                    for n in names {
                        if !n.is_empty() && n != module {
                            out.insert(n.to_string());
                        }
                    }
                }
            }
        }
    }
    // Names that are items of lib.rs, not modules, lead nowhere.
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        deps.retain(|d| modules.contains(d));
    }
    graph
}

/// A cycle through `from`, if there is one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    fn walk(
        g: &BTreeMap<String, BTreeSet<String>>,
        at: &str,
        goal: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in g.get(at).into_iter().flatten() {
            if next == goal {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(g, next, goal, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![from.to_string()];
    walk(graph, from, from, &mut path, &mut BTreeSet::new()).then(|| {
        path.push(from.to_string());
        path
    })
}

#[test]
fn the_gateway_s_modules_have_no_import_cycle() {
    let g = imports();
    assert!(
        g.contains_key("pipeline") && g.contains_key("files"),
        "{g:?}"
    );
    for m in g.keys() {
        if let Some(c) = cycle(&g, m) {
            panic!("an import cycle: {}", c.join(" -> "));
        }
    }
}

#[test]
fn features_and_the_request_path_do_not_reach_the_server() {
    let g = imports();
    for m in [
        "files",
        "rag",
        "finetune",
        "responses",
        "web",
        "pipeline",
        "live",
    ] {
        for top in ["server", "state", "app"] {
            assert!(
                !g[m].contains(top),
                "`{m}` imports `{top}`; it should take its own handle"
            );
        }
    }
    // The request path knows no feature.
    for f in ["files", "rag", "finetune", "responses", "web"] {
        assert!(!g["pipeline"].contains(f), "the pipeline imports `{f}`");
    }
}

#[test]
fn the_cycle_finder_finds_one() {
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(cycle(&g, "a").unwrap(), ["a", "b", "c", "a"]);
    assert!(cycle(&g, "d").is_none());
}
