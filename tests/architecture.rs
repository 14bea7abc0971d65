//! The architecture that ARCHITECTURE.md describes, held against the code: the core never
//! depends on GStreamer, the kernels (`ops`) never call up into the model, and the table of
//! core modules lists exactly the imports each module has.
//!
//! The imports are read from the source text: `crate::NAME` paths (and `super::` paths that
//! climb to the crate root) outside comments and outside unit tests (a file's trailing
//! `#[cfg(test)] mod tests`, or its `tests.rs` beside it), with the crate root's re-exports (`crate::Error`, ...) counted as
//! their modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `.rs` files under `path` (a file or a folder), sorted.
fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            files.extend(rust_files(&p));
        } else if p.extension().is_some_and(|e| e == "rs") {
            files.push(p);
        }
    }
    files.sort();
    files
}

/// The code of a file without its comment lines.
fn code(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The code of a file without its unit tests (the trailing `#[cfg(test)] mod tests`).
fn code_without_tests(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    code(text)
}

/// The identifiers that follow `prefix` in `code` (`crate::` -> `model`, `Error`, ...).
fn names_after<'a>(code: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut names = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        names.push(&rest[..end]);
    }
    names
}

/// The core's top-level modules: `src/NAME.rs` and `src/NAME/`.
fn core_modules() -> BTreeSet<String> {
    std::fs::read_dir(root().join("src"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            match name.strip_suffix(".rs") {
                Some("lib" | "test_util") => None,
                Some(stem) => Some(stem.to_string()),
                None => p.is_dir().then_some(name),
            }
        })
        .collect()
}

/// The crate root's re-exports: `Error` -> `error`, from `pub use MODULE::{A, B};` lines.
fn reexports() -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in read(&root().join("src/lib.rs")).lines() {
        let Some(rest) = line.strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, names)) = rest.split_once("::") else {
            continue;
        };
        let names = names
            .trim_end_matches(';')
            .trim_matches(|c| c == '{' || c == '}');
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            map.insert(name.to_string(), module.to_string());
        }
    }
    map
}

/// The other core modules that the code of `module` (`src/module.rs` or `src/module/`)
/// imports.
fn imports_of(module: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let reexports = reexports();
    let src = root().join("src");
    // `src/module.rs`, `src/module/` or both (`src/export.rs` with `src/export/coco.rs`).
    let mut files = Vec::new();
    for path in [src.join(format!("{module}.rs")), src.join(module)] {
        if path.exists() {
            files.extend(rust_files(&path));
        }
    }
    let mut found = BTreeSet::new();
    for file in files.into_iter().filter(|f| !f.ends_with("tests.rs")) {
        let code = code_without_tests(&read(&file));
        // How many `super::` lead from this file's module to the crate root.
        let rel = file.strip_prefix(&src).unwrap();
        let depth = rel.components().count() - usize::from(rel.ends_with("mod.rs"));
        let to_root = "super::".repeat(depth);
        for name in names_after(&code, "crate::")
            .into_iter()
            .chain(names_after(&code, &to_root))
        {
            let name = reexports.get(name).map_or(name, String::as_str);
            if modules.contains(name) && name != module {
                found.insert(name.to_string());
            }
        }
    }
    found
}

/// The rows of ARCHITECTURE.md's table of core modules: module -> the modules its imports
/// column names (other words, such as `candle`, are not modules and are left out).
fn table(modules: &BTreeSet<String>) -> BTreeMap<String, BTreeSet<String>> {
    let text = read(&root().join("ARCHITECTURE.md"));
    let start = text
        .find("| module | owns | imports")
        .expect("ARCHITECTURE.md has the table of core modules");
    let mut rows = BTreeMap::new();
    for line in text[start..].lines().skip(2) {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
        assert_eq!(cells.len(), 3, "a row of three cells: {line}");
        let module = cells[0].trim().trim_matches('`').trim_end_matches('/');
        assert!(
            modules.contains(module),
            "ARCHITECTURE.md lists `{module}`, which is no module of src/"
        );
        let imports = cells[2]
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|w| w.trim_end_matches('/').to_string())
            .filter(|w| modules.contains(w))
            .collect();
        rows.insert(module.to_string(), imports);
    }
    rows
}

#[test]
fn the_core_does_not_depend_on_gstreamer() {
    let manifest = read(&root().join("Cargo.toml"));
    let mut section = String::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        // The workspace's shared versions name GStreamer for the plugin and the CLI.
        let ours = !section.starts_with("[workspace")
            && (section.ends_with("dependencies]") || section == "[features]");
        if ours && (line.contains("gst") || line.contains("gstreamer")) {
            panic!("Cargo.toml {section}: `{line}`: the core never depends on GStreamer");
        }
    }
}

#[test]
fn the_kernels_do_not_call_up_into_the_model() {
    for file in rust_files(&root().join("src/ops")) {
        let code = code(&read(&file));
        for up in ["crate::model", "super::super::model"] {
            assert!(
                !code.contains(up),
                "{} uses {up}: `ops` is below `model`; what both need lives in `ops`",
                file.display()
            );
        }
    }
}

#[test]
fn the_module_table_lists_each_modules_imports() {
    let modules = core_modules();
    let rows = table(&modules);
    let mut wrong = Vec::new();
    for module in &modules {
        let Some(listed) = rows.get(module) else {
            wrong.push(format!("`{module}` has no row"));
            continue;
        };
        // `error` is everyone's: the table leaves it out.
        let mut actual = imports_of(module, &modules);
        actual.remove("error");
        let missing: Vec<_> = actual.difference(listed).collect();
        let extra: Vec<_> = listed.difference(&actual).collect();
        if !missing.is_empty() || !extra.is_empty() {
            wrong.push(format!(
                "`{module}`: the code imports {missing:?} that the table does not list, and \
                 the table lists {extra:?} that the code does not import"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "ARCHITECTURE.md's table of core modules is out of date:\n{}",
        wrong.join("\n")
    );
}
