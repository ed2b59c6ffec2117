//! The layout shows the architecture: the modules of the `finsync` library use only
//! modules below them (the order `src/lib.rs` lays out), the sandbox crate depends
//! on nothing of finsync's, and `main.rs` only parses and dispatches.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The library's layers, lowest first. A module may use the modules of lower
/// layers only; `webhooks` is two modules on either side of `sync` (the pipeline
/// announces events through `outbound`; `inbound` queues syncs).
const LAYERS: &[&[&str]] = &[
    &["domain"],
    &["fingerprint", "http", "tracecontext"],
    &["vault", "store", "cache", "resilience"],
    &["connectors"],
    &["catalog", "directory", "fx"],
    &["status"],
    &["tokens"],
    &["portfolio"],
    &["webhooks::outbound"],
    &["sync"],
    &["webhooks::inbound"],
    &["api"],
    &["app"],
    &["cli"],
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn layer(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .unwrap_or_else(|| panic!("`{module}` is in no layer of this test: add it"))
}

/// The module a file of `src/` belongs to, as LAYERS names it.
fn module_of(file: &Path) -> Option<String> {
    let relative = file.strip_prefix(root().join("src")).ok()?;
    let mut parts = relative.iter().map(|p| p.to_string_lossy().into_owned());
    let first = parts.next()?;
    let first = first.trim_end_matches(".rs").to_owned();
    if matches!(first.as_str(), "lib" | "main") {
        return None;
    }
    if first == "webhooks" {
        let second = parts.next()?;
        let second = second.trim_end_matches(".rs");
        return (second != "mod").then(|| format!("webhooks::{second}"));
    }
    Some(first)
}

fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// The modules a line of code names as `crate::…` (comments aside).
fn used_modules(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut used = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name == "webhooks" {
            let sub: String = rest["webhooks".len()..]
                .trim_start_matches("::")
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            used.push(format!("webhooks::{sub}"));
        } else if !name.is_empty() {
            used.push(name);
        }
    }
    used
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut wrong = BTreeSet::new();
    for file in &files {
        let Some(module) = module_of(file) else {
            continue;
        };
        let own = layer(&module);
        let text = std::fs::read_to_string(file).unwrap();
        for (number, line) in text.lines().enumerate() {
            for used in used_modules(line) {
                if used != module && layer(&used) >= own {
                    wrong.insert(format!(
                        "{}:{}: `{module}` uses `{used}`",
                        file.strip_prefix(root()).unwrap().display(),
                        number + 1
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "dependencies that point up (see LAYERS):\n{}",
        wrong.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_sandbox_crate_depends_on_nothing_of_finsyncs() {
    let manifest: toml::Table = std::fs::read_to_string(root().join("crates/sandbox/Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    for table in ["dependencies", "dev-dependencies", "build-dependencies"] {
        let Some(dependencies) = manifest.get(table).and_then(|t| t.as_table()) else {
            continue;
        };
        for name in dependencies.keys() {
            assert!(
                !name.starts_with("finsync") && name != "migrations",
                "the sandbox's {table} name `{name}`"
            );
        }
    }
    let mut files = Vec::new();
    rust_files(&root().join("crates/sandbox/src"), &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains("finsync::"),
            "{} uses finsync",
            file.display()
        );
    }
}

#[test]
fn main_only_parses_and_dispatches() {
    let main = std::fs::read_to_string(root().join("src/main.rs")).unwrap();
    assert!(main.lines().count() < 150, "src/main.rs has grown");
    assert!(
        main.contains("finsync::cli::run(") && !main.contains("Command::"),
        "src/main.rs dispatches through finsync::cli::run, not subcommands of its own"
    );
}
