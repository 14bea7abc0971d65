//! Models named as users have them: a folder, or a Hugging Face hub id
//! (`stable-diffusion-v1-5/stable-diffusion-v1-5`, `@revision` optional) looked up in the
//! local cache that `huggingface-cli download` and diffusers fill. Never the network.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The hub caches to look in, as `huggingface_hub` picks its own: `HF_HUB_CACHE`, else
/// `HF_HOME/hub`, else `XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
pub fn hub_cache() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("HF_HUB_CACHE")
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("huggingface").join("hub")))
        .or_else(|| var("HOME").map(|h| h.join(".cache").join("huggingface").join("hub")))
}

/// `org/name` or `org/name@revision`, when `spec` has that form.
fn hub_id(spec: &str) -> Option<(&str, &str, Option<&str>)> {
    let (id, rev) = match spec.split_once('@') {
        Some((id, rev)) => (id, Some(rev)),
        None => (spec, None),
    };
    let (org, name) = id.split_once('/')?;
    let ok = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    (ok(org) && ok(name) && rev.is_none_or(|r| ok(r) || r.contains('/')))
        .then_some((org, name, rev))
}

/// What `--model` / `model=` names, as a path to load: a hub id that is not a path on
/// disk becomes its snapshot folder in the local cache (or an error that says where it
/// looked and how to download the model); other paths are returned as they are, for the
/// loaders to check.
pub fn resolve_model(spec: &Path) -> Result<PathBuf> {
    resolve_in(spec, hub_cache())
}

fn resolve_in(spec: &Path, cache: Option<PathBuf>) -> Result<PathBuf> {
    let id = spec.to_str().and_then(hub_id);
    let Some((org, name, rev)) = id.filter(|_| !spec.exists()) else {
        return Ok(spec.to_path_buf());
    };
    let Some(cache) = cache else {
        return Err(not_found(
            spec,
            "does not exist, and no hub cache is set (HF_HUB_CACHE, HF_HOME or HOME)".into(),
        ));
    };
    let repo = cache.join(format!("models--{org}--{name}"));
    let download = format!(
        "download it with `huggingface-cli download {org}/{name} --include \"unet/*\" \"vae/*\"{}`",
        rev.map_or(String::new(), |r| format!(" --revision {r}"))
    );
    if !repo.is_dir() {
        return Err(not_found(
            spec,
            format!(
                "is neither a folder nor a model in the hub cache ({} does not exist); {download}",
                repo.display()
            ),
        ));
    }
    let rev = rev.unwrap_or("main");
    // A branch or tag resolves through refs/; a commit hash names its snapshot directly.
    let refs = repo.join("refs").join(rev);
    let commit = match std::fs::read_to_string(&refs) {
        Ok(s) => s.trim().to_string(),
        Err(_) => rev.to_string(),
    };
    let snapshot = repo.join("snapshots").join(&commit);
    if commit.is_empty() || !snapshot.is_dir() {
        return Err(not_found(
            spec,
            format!(
                "revision {rev:?} is not in the hub cache (no {} nor {}); {download}",
                refs.display(),
                snapshot.display()
            ),
        ));
    }
    Ok(snapshot)
}

fn not_found(spec: &Path, why: String) -> Error {
    Error::Io {
        path: spec.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_are_told_from_paths() {
        assert_eq!(
            hub_id("stable-diffusion-v1-5/stable-diffusion-v1-5"),
            Some(("stable-diffusion-v1-5", "stable-diffusion-v1-5", None))
        );
        assert_eq!(hub_id("a/b@fp16"), Some(("a", "b", Some("fp16"))));
        assert_eq!(hub_id("a/b@refs/pr/1"), Some(("a", "b", Some("refs/pr/1"))));
        for path in ["sd15", "/abs/a/b", "a/b/c", "../a", "a/", "./x"] {
            assert_eq!(hub_id(path), None, "{path}");
        }
    }

    #[test]
    fn a_cached_id_resolves_to_its_snapshot_and_a_missing_one_says_where_it_looked() {
        let cache = std::env::temp_dir().join(format!("skp-hub-{}", std::process::id()));
        let repo = cache.join("models--org--model");
        for hash in ["1111", "2222"] {
            std::fs::create_dir_all(repo.join("snapshots").join(hash).join("unet")).unwrap();
        }
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs").join("main"), "2222\n").unwrap();
        std::fs::write(repo.join("refs").join("old"), "1111").unwrap();
        let r = |s: &str| resolve_in(Path::new(s), Some(cache.clone()));
        let snap = |h: &str| repo.join("snapshots").join(h);
        assert_eq!(r("org/model").unwrap(), snap("2222"));
        assert_eq!(r("org/model@old").unwrap(), snap("1111"));
        assert_eq!(r("org/model@1111").unwrap(), snap("1111"));
        let e = r("org/other").unwrap_err().to_string();
        assert!(
            e.contains("models--org--other") && e.contains("huggingface-cli download org/other"),
            "{e}"
        );
        let e = r("org/model@v9").unwrap_err().to_string();
        assert!(
            e.contains("revision \"v9\"") && e.contains("--revision v9"),
            "{e}"
        );
        // Paths are the loaders' to check.
        assert_eq!(r("no-such-folder").unwrap(), Path::new("no-such-folder"));
        let local = cache.join("org").join("model");
        std::fs::create_dir_all(&local).unwrap();
        assert_eq!(r(local.to_str().unwrap()).unwrap(), local);
        std::fs::remove_dir_all(&cache).unwrap();
    }
}
