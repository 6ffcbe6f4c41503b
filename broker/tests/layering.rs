//! The broker crate's layering, checked by reading its `crate::` paths: every module may
//! use only the layers below its own, never one beside or above it (the README's
//! "Architecture" section draws the same picture). The log and the record format know
//! nothing of networking.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The top-level modules of `broker/src`, bottom layer first. A module may use the layers
/// before its own; modules of one layer stand side by side and use none of each other.
const LAYERS: &[&[&str]] = &[
    // The record format and the names every layer uses (the crate root's re-exports).
    &[
        "record",
        "topic_partition",
        "TopicPartition",
        "validate_topic_name",
        "now_ms",
    ],
    &["log"],
    &["config"],
    // Metadata types shared by every layer above: snapshot, Acks, NewTopic, partitioner.
    &["metadata"],
    // Wire codecs: gRPC today, the Kafka protocol beside it later; no engine inside.
    &["protocol"],
    // The engine.
    &["controller", "replication"],
    &["group"],
    // What serves the engine over the wire, and what talks to it from outside.
    &["server", "client", "manifest", "process"],
];

/// Crates the log and the record format must not use: they never see a socket.
const NETWORKING: &[&str] = &["tonic", "prost", "hyper", "axum", "tokio::net", "std::net"];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .unwrap_or_else(|| {
            panic!(
                "module `{module}` is in no layer: add it to LAYERS in {}",
                file!()
            )
        })
}

fn source_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("the source directory reads") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            source_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The top-level module of the library a file of `src` belongs to; `None` for the crate
/// root and for the binaries (each a crate of its own over the library's public API).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let first = file.strip_prefix(src).ok()?.components().next()?;
    let name = first.as_os_str().to_str()?.trim_end_matches(".rs");
    (name != "lib" && name != "bin").then(|| name.to_string())
}

/// The code of a file without its comments (doc links are no imports).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules named after each `crate::` in `code`, including every module of
/// a `crate::{a, b::c}` group.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut used = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            used.insert(ident(rest));
            continue;
        };
        let (mut depth, mut start) = (0usize, 0usize);
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    used.insert(ident(&group[start..i]));
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    used.insert(ident(&group[start..i]));
                    start = i + 1;
                }
                _ => {}
            }
        }
    }
    used.retain(|m| !m.is_empty() && m != "self");
    used
}

#[test]
fn no_module_uses_a_layer_beside_or_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let layer = layer_of(&module);
        let text = fs::read_to_string(file).expect("a source file reads");
        for used in crate_paths(&code(&text)) {
            if used != module && layer_of(&used) >= layer {
                wrong.push(format!(
                    "{} ({module}) uses crate::{used}, which is not below it",
                    file.strip_prefix(&src).unwrap_or(file).display()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering (move the shared piece down, or the user up):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_log_and_the_record_format_know_nothing_of_networking() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for module in ["log", "record"] {
        let mut files = Vec::new();
        source_files(&src.join(module), &mut files);
        for file in files {
            let code = code(&fs::read_to_string(&file).expect("a source file reads"));
            for name in NETWORKING {
                if code.contains(&format!("{name}::")) {
                    wrong.push(format!("{} uses {name}", file.display()));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "networking below the engine:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checker_sees_grouped_and_nested_paths() {
    let code = "use crate::{log::Log, metadata::{Acks, NewTopic}, self};\nlet x = crate::now_ms();";
    let used: Vec<String> = crate_paths(code).into_iter().collect();
    assert_eq!(used, ["log", "metadata", "now_ms"]);
}
