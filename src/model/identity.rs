//! One identity for a model, whatever holds it: a fingerprint of its weights (each tensor's
//! name, shape and a fixed sample of its values at half precision), not of its files, so
//! the same weights in f32 or f16, or copied to another folder, are the same model for the
//! model cache, tokens files, checkpoints and student files, and new weights under the same
//! path are another model. Only the headers and the sampled values are read.

use super::{ModelSource, PartFiles, Parts};
use crate::error::{Error, Result};
use crate::util::Fnv;
use memmap2::Mmap;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;

/// Values sampled per tensor, evenly spaced (all of a smaller tensor).
const SAMPLES: usize = 16;

/// Metadata key of the weights' fingerprint in the files that record a model.
pub const IDENTITY_KEY: &str = "model_identity";
/// The older key: a hash of the configuration files alone (files written before
/// `model_identity` carry only this one).
pub const CONFIG_HASH_KEY: &str = "model_config_hash";

/// A model's identity as files record it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModelIdentity {
    /// Fingerprint of the weights (`w1-` and 16 hex digits).
    pub weights: String,
    /// Hash of `unet/config.json` and `vae/config.json` ([`model_config_hash`]).
    pub config: String,
}

impl ModelIdentity {
    /// The identity of the model at `path` (a diffusers folder or a single file).
    pub fn of(path: &Path) -> Result<Self> {
        Self::of_source(&ModelSource::from(path))
    }

    /// The identity of the model `source` names: the same weights under our names in the
    /// same order whatever holds them, so a single file is the same model as its folder.
    pub fn of_source(source: &ModelSource) -> Result<Self> {
        Self::of_source_as(source, None)
    }

    /// [`ModelIdentity::of_source`] of a single file read with the architecture of the
    /// diffusers folder `config` (see [`crate::Model::open_as`]).
    pub fn of_source_as(source: &ModelSource, config: Option<&Path>) -> Result<Self> {
        let parts = Parts::locate_as(source, config)?;
        let mut h = Fnv::new();
        for (name, part) in [("unet", &parts.unet), ("vae", &parts.vae)] {
            h.write(name.as_bytes());
            match part {
                PartFiles::Files(files) => fingerprint_files(files, &mut h)?,
                PartFiles::Mapped(p, path) => fingerprint_mapped(p, path, &mut h)?,
            }
        }
        Ok(Self {
            weights: format!("w1-{}", h.hex()),
            config: config_hash(&parts.configs),
        })
    }

    /// The metadata entries that record this identity.
    pub fn entries(&self) -> [(&'static str, String); 2] {
        [
            (IDENTITY_KEY, self.weights.clone()),
            (CONFIG_HASH_KEY, self.config.clone()),
        ]
    }

    /// Whether a file's recorded identity names this model: by the weights' fingerprint
    /// when the file has one, else by the older configuration hash. `None`: it records
    /// neither.
    pub fn matches(&self, meta: &HashMap<String, String>) -> Option<bool> {
        match (meta.get(IDENTITY_KEY), meta.get(CONFIG_HASH_KEY)) {
            (Some(w), _) => Some(*w == self.weights),
            (None, Some(c)) => Some(*c == self.config),
            (None, None) => None,
        }
    }
}

/// One sampled value: floats at half precision (so an f16 copy of f32 weights is the same
/// model), other types as their little-endian bytes.
enum Sample<'a> {
    Float(f32),
    Bytes(&'a [u8]),
}

/// Feeds one tensor to `h`: name, shape and [`SAMPLES`] evenly spaced values of its `n`.
fn feed<'a>(
    h: &mut Fnv,
    name: &str,
    shape: &[usize],
    n: usize,
    value: impl Fn(usize) -> Sample<'a>,
) {
    h.write(name.as_bytes());
    for &d in shape {
        h.write(&(d as u64).to_le_bytes());
    }
    let picks = n.min(SAMPLES);
    for s in 0..picks {
        let i = if picks < SAMPLES {
            s
        } else {
            s * (n - 1) / (SAMPLES - 1)
        };
        match value(i) {
            Sample::Float(v) => h.write(&half::f16::from_f32(v).to_bits().to_le_bytes()),
            Sample::Bytes(b) => h.write(b),
        }
    }
}

/// Feeds the tensors of a part's weight files (one safetensors file, its shards, or a
/// PyTorch pickle) to `h`, in name order across the files.
fn fingerprint_files(paths: &[std::path::PathBuf], h: &mut Fnv) -> Result<()> {
    if let [one] = paths {
        if super::weights::is_pickle(one) {
            return fingerprint_pickle(one, h);
        }
    }
    let mut maps = Vec::with_capacity(paths.len());
    for path in paths {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: mapped read-only for the few reads below (the loaders' contract: the
        // file is not modified while it is read).
        maps.push(unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?);
    }
    let mut files = Vec::with_capacity(paths.len());
    for (path, map) in paths.iter().zip(&maps) {
        files.push(
            SafeTensors::deserialize(map)
                .map_err(|e| Error::weights(path, format!("not a valid safetensors file: {e}")))?,
        );
    }
    let mut names: Vec<(&str, usize)> = files
        .iter()
        .enumerate()
        .flat_map(|(i, st)| st.names().into_iter().map(move |n| (n, i)))
        .collect();
    names.sort();
    for (name, i) in names {
        let t = files[i]
            .tensor(name)
            .map_err(|e| Error::weights(&paths[i], e.to_string()))?;
        feed_view(h, name, t.shape(), &t);
    }
    Ok(())
}

/// Feeds a memory-mapped tensor under `name` and `shape`.
fn feed_view(h: &mut Fnv, name: &str, shape: &[usize], t: &TensorView<'_>) {
    // Sub-byte types are sampled by the byte.
    let size = t.dtype().bitsize().div_ceil(8);
    let data = t.data();
    feed(h, name, shape, data.len() / size.max(1), |i| {
        let b = &data[i * size..][..size];
        match t.dtype() {
            Dtype::F32 => Sample::Float(f32::from_le_bytes(b.try_into().expect("4 bytes"))),
            Dtype::F16 => Sample::Float(half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
            Dtype::BF16 => Sample::Float(half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            Dtype::F64 => Sample::Float(f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32),
            _ => Sample::Bytes(b),
        }
    });
}

/// A single file's part under our names and diffusers' shapes, in our names' order.
fn fingerprint_mapped(part: &super::single_file::Part, path: &Path, h: &mut Fnv) -> Result<()> {
    let mut entries: Vec<&super::single_file::Entry> = part.entries.iter().collect();
    entries.sort_by(|a, b| a.ours.cmp(&b.ours));
    if super::weights::is_pickle(path) {
        let bad = |e: candle_core::Error| Error::weights(path, e.to_string());
        for e in entries {
            let t = part
                .backend
                .get_unchecked(&e.file, candle_core::DType::F32, &candle_core::Device::Cpu)
                .map_err(bad)?;
            feed_tensor(h, &e.ours, &e.shape, &t).map_err(bad)?;
        }
        return Ok(());
    }
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: mapped read-only for the few reads below (see `fingerprint_files`).
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&map)
        .map_err(|e| Error::weights(path, format!("not a valid safetensors file: {e}")))?;
    for e in entries {
        let t = st
            .tensor(&e.file)
            .map_err(|err| Error::weights(path, err.to_string()))?;
        feed_view(h, &e.ours, &e.shape, &t);
    }
    Ok(())
}

/// [`fingerprint_files`] for a PyTorch pickle: every tensor is read (no memory map), so a
/// `.bin` costs one extra read of the file at load time.
fn fingerprint_pickle(path: &Path, h: &mut Fnv) -> Result<()> {
    let bad = |e: candle_core::Error| Error::weights(path, e.to_string());
    let pth = candle_core::pickle::PthTensors::new(path, None).map_err(|e| {
        Error::weights(
            path,
            format!("not a PyTorch weights file (torch.save zip): {e}"),
        )
    })?;
    let mut names: Vec<&String> = pth.tensor_infos().keys().collect();
    names.sort();
    for name in names {
        let t = pth.get(name).map_err(bad)?.expect("listed tensor");
        feed_tensor(h, name, t.dims(), &t).map_err(bad)?;
    }
    Ok(())
}

/// Feeds a tensor read into memory under `name` and `shape`.
fn feed_tensor(
    h: &mut Fnv,
    name: &str,
    shape: &[usize],
    t: &candle_core::Tensor,
) -> candle_core::Result<()> {
    use candle_core::DType;
    let flat = t.flatten_all()?;
    let n = flat.elem_count();
    match t.dtype() {
        DType::U8 | DType::U32 | DType::I64 => {
            let bytes: Vec<Vec<u8>> = match t.dtype() {
                DType::U8 => flat.to_vec1::<u8>()?.iter().map(|v| vec![*v]).collect(),
                DType::U32 => flat
                    .to_vec1::<u32>()?
                    .iter()
                    .map(|v| v.to_le_bytes().to_vec())
                    .collect(),
                _ => flat
                    .to_vec1::<i64>()?
                    .iter()
                    .map(|v| v.to_le_bytes().to_vec())
                    .collect(),
            };
            feed(h, name, shape, n, |i| Sample::Bytes(&bytes[i]));
        }
        _ => {
            let v = flat.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            feed(h, name, shape, n, |i| Sample::Float(v[i]));
        }
    }
    Ok(())
}

fn canon(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().filter(|k| !k.starts_with('_')).collect();
            keys.sort();
            out.push('{');
            for k in keys {
                out.push_str(&serde_json::to_string(k).expect("string"));
                out.push(':');
                canon(&m[k], out);
                out.push(',');
            }
            out.push('}');
        }
        serde_json::Value::Array(a) => {
            out.push('[');
            for x in a {
                canon(x, out);
                out.push(',');
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Hash of the model's `unet/config.json` and `vae/config.json` (keys sorted, `_`-prefixed
/// bookkeeping keys such as `_diffusers_version` dropped), recorded in tokens and checkpoints.
pub fn model_config_hash(dir: &Path) -> Result<String> {
    let mut configs = Vec::with_capacity(2);
    for part in ["unet", "vae"] {
        let p = dir.join(part).join("config.json");
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::config(&p, format!("not valid JSON: {e}")))?;
        configs.push((part, v));
    }
    Ok(config_hash(&configs))
}

/// [`model_config_hash`] of the parts' configurations held in memory.
fn config_hash(configs: &[(&str, serde_json::Value)]) -> String {
    let mut h = Fnv::new();
    for (part, v) in configs {
        let mut s = String::new();
        canon(v, &mut s);
        h.write(part.as_bytes());
        h.write(s.as_bytes());
    }
    h.hex()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unet_config(bookkeeping: bool) -> String {
        let mut v = crate::init::unet_config_json(crate::init::TinyArch::TinySd1);
        if bookkeeping {
            v["_x"] = 1.into();
        }
        v.to_string()
    }

    fn vae_config() -> String {
        crate::init::vae_config_json(crate::init::TinyArch::TinySd1).to_string()
    }

    /// A model folder with one tensor per part and the given configs.
    fn folder(dir: &Path, unet: &[f32], f16: bool, unet_config: &str) {
        for (part, values, config) in [
            ("unet", unet, unet_config),
            ("vae", &[0.5f32, -1.0][..], &vae_config()),
        ] {
            std::fs::create_dir_all(dir.join(part)).unwrap();
            std::fs::write(dir.join(part).join("config.json"), config).unwrap();
            let (dtype, bytes): (Dtype, Vec<u8>) = if f16 && part == "unet" {
                let b = values
                    .iter()
                    .flat_map(|&v| half::f16::from_f32(v).to_le_bytes());
                (Dtype::F16, b.collect())
            } else {
                (
                    Dtype::F32,
                    values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                )
            };
            let view =
                safetensors::tensor::TensorView::new(dtype, vec![values.len()], &bytes).unwrap();
            safetensors::serialize_to_file(
                [("w", view)],
                None,
                &dir.join(part).join("diffusion_pytorch_model.safetensors"),
            )
            .unwrap();
        }
    }

    #[test]
    fn the_identity_follows_the_weights_not_the_file() {
        let tmp = std::env::temp_dir().join(format!("skp-identity-{}", std::process::id()));
        let values: Vec<f32> = (0..100).map(|i| i as f32 * 0.25 - 3.0).collect();
        let config = &unet_config(false);
        let id = |name: &str, v: &[f32], f16: bool, c: &str| {
            let d = tmp.join(name);
            folder(&d, v, f16, c);
            ModelIdentity::of(&d).unwrap()
        };
        let a = id("a", &values, false, config);
        // Another folder, the f16 form, a config with other bookkeeping: the same weights.
        assert_eq!(a.weights, id("copy", &values, false, config).weights);
        assert_eq!(a.weights, id("half", &values, true, config).weights);
        let b = id("b", &values, false, &unet_config(true));
        assert_eq!((a.weights.clone(), a.config.clone()), (b.weights, b.config));
        // A sampled value changed (the last one is always sampled): another model.
        let mut other = values.clone();
        other[99] += 1.0;
        let c = id("c", &other, false, config);
        assert_ne!(a.weights, c.weights);
        assert_eq!(a.config, c.config, "the old hash cannot tell them apart");

        // Files recording the fingerprint are matched by it; older ones by the config hash.
        let rec = |k: &str, v: &str| HashMap::from([(k.to_string(), v.to_string())]);
        assert_eq!(a.matches(&rec(IDENTITY_KEY, &a.weights)), Some(true));
        assert_eq!(a.matches(&rec(IDENTITY_KEY, &c.weights)), Some(false));
        assert_eq!(a.matches(&rec(CONFIG_HASH_KEY, &c.config)), Some(true));
        assert_eq!(a.matches(&HashMap::new()), None);
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
