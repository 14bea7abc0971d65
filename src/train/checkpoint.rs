//! Checkpoints: embeddings, Adam moments and step, written atomically; resuming refuses a
//! checkpoint made with other settings, another model or other data.

use super::config::TrainConfig;
use super::Trainer;
use crate::error::{Error, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

const CHECKPOINT_FORMAT: &str = "stablekeypoints-train-checkpoint/1";

impl Trainer<'_> {
    /// Writes embeddings, Adam state and step atomically (temporary file + rename).
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        let (n, c) = (self.cfg.num_tokens, self.model.context_dim());
        let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let (e, m, v) = (
            bytes(&self.embeddings),
            bytes(&self.adam.m),
            bytes(&self.adam.v),
        );
        fn view(d: &[u8], n: usize, c: usize) -> TensorView<'_> {
            TensorView::new(Dtype::F32, vec![n, c], d).expect("sizes match")
        }
        let views = vec![
            ("embeddings", view(&e, n, c)),
            ("adam_m", view(&m, n, c)),
            ("adam_v", view(&v, n, c)),
        ];
        let meta: BTreeMap<String, String> = self
            .model_id
            .entries()
            .into_iter()
            .chain([
                ("format", CHECKPOINT_FORMAT.to_string()),
                ("step", self.step.to_string()),
                ("adam_step", self.adam.step.to_string()),
                (
                    "config",
                    serde_json::to_string(&self.cfg).expect("config serialises"),
                ),
                ("data_fingerprint", self.data.fingerprint()),
                (
                    "data_items",
                    serde_json::to_string(&self.data.items()).expect("strings serialise"),
                ),
            ])
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let out = crate::util::safetensors_bytes(views, &meta)
            .map_err(|e| Error::checkpoint(path, format!("cannot serialise: {e}")))?;
        crate::util::write_atomic(path, &out)
    }

    /// Restores a checkpoint written with the same settings (all but `steps` must match,
    /// and the model and data must be the same).
    pub fn load_checkpoint(&mut self, path: &Path) -> Result<()> {
        let bad = |m: String| Error::checkpoint(path, m);
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (_, header) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        self.check_resumable(&meta).map_err(bad)?;
        let parse = |k: &str| -> Result<u64> {
            meta_get(&meta, k)
                .map_err(bad)?
                .parse()
                .map_err(|_| bad(format!("`{k}` is not an integer")))
        };
        let step = parse("step")? as usize;
        let adam_step = parse("adam_step")?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let len = self.embeddings.len();
        let read = |name: &str| read_f32s(&st, name, len).map_err(bad);
        let embeddings = read("embeddings")?;
        let m = read("adam_m")?;
        let v = read("adam_v")?;
        if embeddings.iter().any(|x| !x.is_finite()) {
            return Err(bad("embeddings hold non-finite values".into()));
        }
        self.embeddings = embeddings;
        self.adam.m = m;
        self.adam.v = v;
        self.adam.step = adam_step;
        self.step = step;
        Ok(())
    }

    /// Whether a checkpoint with metadata `meta` continues this run: the same format,
    /// settings, model and training data.
    fn check_resumable(&self, meta: &HashMap<String, String>) -> std::result::Result<(), String> {
        let get = |k: &str| meta_get(meta, k);
        if get("format")? != CHECKPOINT_FORMAT {
            return Err(format!("unknown format {:?}", get("format")?));
        }
        let cfg: TrainConfig =
            serde_json::from_str(get("config")?).map_err(|e| format!("bad config: {e}"))?;
        if cfg.resume_key() != self.cfg.resume_key() {
            let a = serde_json::to_value(cfg.resume_key()).expect("json");
            let b = serde_json::to_value(self.cfg.resume_key()).expect("json");
            let diff: Vec<String> = a
                .as_object()
                .expect("object")
                .iter()
                .filter(|(k, v)| b.get(k.as_str()) != Some(v))
                .map(|(k, v)| format!("{k} = {v} there, {} now", b[k.as_str()]))
                .collect();
            return Err(format!(
                "made with different settings ({}); rerun with the same settings or without --resume",
                diff.join(", ")
            ));
        }
        match self.model_id.matches(meta) {
            Some(true) => {}
            Some(false) => {
                return Err("made with a different model (its weights' identity differs)".into())
            }
            None => return Err("missing `model_identity`".into()),
        }
        if get("data_fingerprint")? != &self.data.fingerprint() {
            let there: Vec<String> = meta
                .get("data_items")
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default();
            return Err(format!(
                "made with different training data ({} there, {} now{})",
                get("data_fingerprint")?,
                self.data.fingerprint(),
                items_diff(&there, &self.data.items())
            ));
        }
        Ok(())
    }
}

fn meta_get<'a>(
    meta: &'a HashMap<String, String>,
    k: &str,
) -> std::result::Result<&'a String, String> {
    meta.get(k).ok_or_else(|| format!("missing `{k}`"))
}

/// The f32 tensor `name` of `len` values.
fn read_f32s(st: &SafeTensors, name: &str, len: usize) -> std::result::Result<Vec<f32>, String> {
    let t = st
        .tensor(name)
        .map_err(|_| format!("missing tensor `{name}`"))?;
    if t.dtype() != Dtype::F32 || t.shape().iter().product::<usize>() != len {
        return Err(format!("tensor `{name}` has the wrong dtype or shape"));
    }
    Ok(t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect())
}

/// Refuses to start a new run (no `--resume`) over the checkpoint at `path` when it holds an
/// unfinished one (fewer steps done than it was started for): the new run would replace it
/// at its first checkpoint. A finished or unreadable checkpoint may be replaced.
pub fn refuse_unfinished(path: &Path) -> Result<()> {
    let Ok(bytes) = std::fs::read(path) else {
        return Ok(());
    };
    let Ok((_, header)) = SafeTensors::read_metadata(&bytes) else {
        return Ok(());
    };
    let meta = header.metadata().clone().unwrap_or_default();
    let step = meta.get("step").and_then(|s| s.parse::<usize>().ok());
    let steps = meta
        .get("config")
        .and_then(|c| serde_json::from_str::<TrainConfig>(c).ok())
        .map(|c| c.steps);
    match (step, steps) {
        (Some(step), Some(steps)) if step < steps => Err(Error::checkpoint(
            path,
            format!(
                "holds an unfinished run (step {step} of {steps}); continue it with --resume, \
                 or remove the file to train anew"
            ),
        )),
        _ => Ok(()),
    }
}

/// `; not used there: a, b; new: c` for two lists of data items (empty when either list is
/// unknown or they only differ in content).
fn items_diff(there: &[String], now: &[String]) -> String {
    if there.is_empty() || now.is_empty() {
        return String::new();
    }
    let list = |v: Vec<&String>| {
        let mut s: Vec<&str> = v.iter().take(5).map(|s| s.as_str()).collect();
        if v.len() > 5 {
            s.push("...");
        }
        s.join(", ")
    };
    let gone: Vec<&String> = there.iter().filter(|i| !now.contains(i)).collect();
    let new: Vec<&String> = now.iter().filter(|i| !there.contains(i)).collect();
    let mut out = String::new();
    if !gone.is_empty() {
        out += &format!("; not used now: {}", list(gone));
    }
    if !new.is_empty() {
        out += &format!("; new now: {}", list(new));
    }
    out
}

/// Where `train` keeps its checkpoint for an output file: `tokens.safetensors` ->
/// `tokens.ckpt.safetensors` in the same directory.
pub fn checkpoint_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tokens".into());
    out.with_file_name(format!("{stem}.ckpt.safetensors"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_path_is_next_to_output() {
        assert_eq!(
            checkpoint_path(Path::new("/a/b/tokens.safetensors")),
            PathBuf::from("/a/b/tokens.ckpt.safetensors")
        );
        assert_eq!(
            checkpoint_path(Path::new("out")),
            PathBuf::from("out.ckpt.safetensors")
        );
    }
}
