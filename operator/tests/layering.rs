//! The runtime's shape, kept by a test: the modules of `operator/src` import each other in one
//! direction only (no cycle), and the gRPC wire types stay at the edge.
//!
//! The check reads the sources: every `crate::<top>::<module>` path (and `super::<module>` in a
//! direct child of `runtime/`) is an arrow from the file's module to that module. A cycle fails
//! the test with the modules on it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir)
        .expect("the source directory")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a source file belongs to: `runtime::<m>` for files under `runtime/`, else the
/// top-level module (`cli`, `http`, `telemetry`, `rbac`, `runtime` for runtime.rs itself).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let parts: Vec<String> = rel
        .components()
        .map(|c| {
            c.as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_owned()
        })
        .collect();
    match parts.as_slice() {
        [one] if one == "lib" || one == "main" => None,
        [one] => Some(one.clone()),
        [runtime, m, ..] if runtime == "runtime" => Some(format!("runtime::{m}")),
        [top, ..] => Some(top.clone()),
        [] => None,
    }
}

/// The modules a file's code names (test modules included: a test importing upwards is a cycle
/// in the making too).
fn arrows(text: &str, this: &str, super_is_runtime: bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let tops = ["cli", "http", "telemetry", "rbac"];
    let bytes = text.as_bytes();
    let mut find = |needle: &str, prefix: &str| {
        let mut from = 0;
        while let Some(i) = text[from..].find(needle) {
            let start = from + i + needle.len();
            let end = start
                + text[start..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(text.len() - start);
            let name = &text[start..end];
            // Only whole path segments: `crate::runtime::x` not `crate::runtimes`.
            let before = from + i;
            let whole = before == 0
                || !(bytes[before - 1].is_ascii_alphanumeric() || bytes[before - 1] == b'_');
            if whole && !name.is_empty() {
                out.insert(format!("{prefix}{name}"));
            }
            from = end.max(start);
        }
    };
    find("crate::runtime::", "runtime::");
    if super_is_runtime {
        find("super::", "runtime::");
    }
    for top in tops {
        if text.contains(&format!("crate::{top}::")) || text.contains(&format!("crate::{top};")) {
            out.insert(top.to_owned());
        }
    }
    out.remove(this);
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("a readable source file");
        // `super::` in `runtime/<m>.rs` names a sibling module; deeper down, `<m>`'s own parts.
        let depth = file
            .strip_prefix(&src)
            .map_or(0, |r| r.components().count());
        let super_is_runtime = module.starts_with("runtime::") && depth == 2;
        let to = arrows(&text, &module, super_is_runtime);
        graph.entry(module).or_default().extend(to);
    }
    // Arrows to modules that are not files of ours (e.g. `crate::runtime::Foo` items) are dropped.
    let known: BTreeSet<String> = graph.keys().cloned().collect();
    for to in graph.values_mut() {
        to.retain(|m| known.contains(m));
    }
    graph
}

/// A cycle through the graph, if there is one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_owned(), Mark::Open);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match marks.get(next).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let at = path.iter().position(|p| p == next).unwrap_or(0);
                    let mut found = path[at..].to_vec();
                    found.push(next.clone());
                    return Some(found);
                }
                Mark::New => {
                    if let Some(found) = visit(next, graph, marks, path) {
                        return Some(found);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if marks.get(node).copied().unwrap_or(Mark::New) == Mark::New
            && let Some(found) = visit(node, graph, &mut marks, &mut Vec::new())
        {
            return Some(found);
        }
    }
    None
}

#[test]
fn the_modules_import_each_other_in_one_direction_only() {
    let graph = graph();
    assert!(
        graph.contains_key("runtime::engine") && graph.contains_key("runtime::processing"),
        "the source walk found the runtime: {:?}",
        graph.keys().collect::<Vec<_>>()
    );
    if let Some(found) = cycle(&graph) {
        panic!("an import cycle: {}", found.join(" -> "));
    }
}

/// The layers, bottom up: a module imports only modules of its own layer or below (and within a
/// layer, without cycles). `operon_core` (pure decisions) is below them all: its own crate.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "edges: the kube kit, the ports and their gRPC adapter, shared state, writing",
        &[
            "runtime::kit",
            "runtime::signals",
            "runtime::context",
            "runtime::leadership",
            "runtime::sharding",
            "runtime::discovery",
            "runtime::ports",
            "runtime::grpc",
            "runtime::metrics",
            "runtime::readmodel",
            "runtime::locks",
            "runtime::patching",
            "runtime::events",
            "runtime::watching",
            "telemetry",
            "rbac",
        ],
    ),
    (
        "controllers: change handling, timers, daemons, indexes, syncs, tasks, hooks, admission",
        &[
            "runtime::processing",
            "runtime::calls",
            "runtime::queue",
            "runtime::timers",
            "runtime::daemons",
            "runtime::indexing",
            "runtime::sync",
            "runtime::tasks",
            "runtime::shutdown",
            "runtime::admission",
            "runtime::outbox",
            "runtime::login",
            "runtime::selecting",
        ],
    ),
    (
        "the listener: what it serves and how",
        &["runtime::serving", "http"],
    ),
    (
        "the modes: the engine (operon run) and the observer (operon dashboard)",
        &["runtime::engine", "runtime::observer"],
    ),
    ("the command line", &["cli", "runtime"]),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

#[test]
fn no_module_imports_a_layer_above_its_own() {
    let graph = graph();
    let mut unplaced = Vec::new();
    let mut upward = Vec::new();
    for (module, imports) in &graph {
        let Some(layer) = layer_of(module) else {
            unplaced.push(module.clone());
            continue;
        };
        for to in imports {
            if let Some(target) = layer_of(to)
                && target > layer
            {
                upward.push(format!(
                    "{module} ({}) -> {to} ({})",
                    LAYERS[layer].0, LAYERS[target].0
                ));
            }
        }
    }
    assert!(
        unplaced.is_empty(),
        "every module has a layer (add these to LAYERS): {unplaced:?}"
    );
    assert!(
        upward.is_empty(),
        "imports up the layers:\n{}",
        upward.join("\n")
    );
}

/// The gRPC wire types (`operon_proto`) appear only in the adapter, `runtime/grpc/`: everything
/// else speaks the ports' domain types.
#[test]
fn the_wire_stays_in_the_grpc_adapter() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let adapter = src.join("runtime").join("grpc");
    let leaks: Vec<String> = files
        .iter()
        .filter(|f| !f.starts_with(&adapter))
        .filter_map(|f| {
            let text = std::fs::read_to_string(f).ok()?;
            let code = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .any(|l| l.contains("operon_proto"));
            code.then(|| f.strip_prefix(&src).unwrap_or(f).display().to_string())
        })
        .collect();
    assert!(
        leaks.is_empty(),
        "operon_proto outside runtime/grpc: {leaks:?}"
    );
}

/// Files a reader can hold in mind: no source file of the runtime (tests aside) is over 600 lines.
#[test]
fn no_runtime_file_is_over_600_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let long: Vec<String> = files
        .iter()
        .filter(|f| {
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name != "tests.rs" && !f.components().any(|c| c.as_os_str() == "tests")
        })
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).ok()?.lines().count();
            (lines > 600)
                .then(|| format!("{} ({lines})", f.strip_prefix(&src).unwrap_or(f).display()))
        })
        .collect();
    assert!(long.is_empty(), "over 600 lines: {long:?}");
}

#[test]
fn the_cycle_check_finds_a_planted_cycle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    graph.entry("c".into()).or_default().insert("a".into());
    graph.entry("d".into()).or_default().insert("a".into());
    assert_eq!(cycle(&graph).map(|c| c.len()), Some(4));
    graph.get_mut("c").unwrap().clear();
    assert_eq!(cycle(&graph), None);
    // Arrows are read from paths, whole segments only.
    let found = arrows(
        "use crate::runtime::kit::meta;\nuse super::queue;\nlet x = crate::runtimes::y; crate::http::bind();",
        "runtime::engine",
        true,
    );
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        ["http", "runtime::kit", "runtime::queue"]
    );
}
