//! The learned-tokens file: safetensors with `embeddings` (f32 [N, context_dim]) and
//! `indices` (i64 [K]), plus string metadata (`input_size`, `map_res`, `num_layers`,
//! `timestep`, `layers`, `augment_degrees`, `augment_scale`, `augment_translate`, and
//! whatever training records). A directory holding the reference's
//! `embedding.pt` and `indices.pt` (as its `main.py` saves them) loads too.

use crate::error::{Error, Result};
use crate::model::LayerSet;
use crate::ops::warp::AugmentRanges;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::BTreeMap;
use std::path::Path;

/// Reference defaults (method.md).
pub const DEFAULT_INPUT_SIZE: usize = 512;
pub const DEFAULT_MAP_RES: usize = 128;
pub const DEFAULT_NUM_LAYERS: usize = 4;
/// The reference's operating point: its `noise_level` -1, the last of its DDIM timesteps
/// 980, 960, ..., 0 (method.md section 1). Files written before this was corrected carry
/// `timestep` "1" in their metadata and keep it.
pub const DEFAULT_TIMESTEP: usize = 0;
/// Largest `input_size` a tokens file may ask for (the element's `input-size` maximum).
pub const MAX_INPUT_SIZE: usize = 4096;
/// Largest `map_res` a tokens file may ask for.
pub const MAX_MAP_RES: usize = 1024;

/// Learned token embeddings and the indices of the K selected keypoint tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct Tokens {
    /// Row-major [N, context_dim].
    pub embeddings: Vec<f32>,
    pub num_tokens: usize,
    pub context_dim: usize,
    /// The K keypoint tokens, in keypoint-id order.
    pub indices: Vec<usize>,
    pub input_size: usize,
    pub map_res: usize,
    /// Observed layers recorded (the reference's 4).
    pub num_layers: usize,
    pub timestep: usize,
    /// The recorded layers averaged (metadata `layers`, `0,1,2,3`; default: all
    /// `num_layers`).
    pub layers: LayerSet,
    /// Ranges of the test-time augmentation warps (metadata `augment_degrees`,
    /// `augment_scale` `lo,hi`, `augment_translate` `x,y`; `train` writes its own training
    /// ranges, as the reference uses one set for both).
    pub augment: AugmentRanges,
    /// Other metadata (training hyper-parameters, model hash, ...), kept verbatim.
    pub extra: BTreeMap<String, String>,
}

const KNOWN: [&str; 4] = ["input_size", "map_res", "num_layers", "timestep"];

/// `a,b` as two numbers.
fn pair(v: &str) -> Option<[f64; 2]> {
    let (a, b) = v.split_once(',')?;
    Some([a.trim().parse().ok()?, b.trim().parse().ok()?])
}

/// The largest magnitude of an embedding value: the text encoder's embeddings are of order 1,
/// and values near 1e19 already overflow `f32` in the attention's products.
pub const MAX_EMBEDDING_ABS: f32 = 1e6;

impl Tokens {
    /// Builds a token set, checking that it is usable.
    pub fn new(
        embeddings: Vec<f32>,
        num_tokens: usize,
        context_dim: usize,
        indices: Vec<usize>,
    ) -> Result<Self> {
        let t = Self {
            embeddings,
            num_tokens,
            context_dim,
            indices,
            input_size: DEFAULT_INPUT_SIZE,
            map_res: DEFAULT_MAP_RES,
            num_layers: DEFAULT_NUM_LAYERS,
            timestep: DEFAULT_TIMESTEP,
            layers: LayerSet::first(DEFAULT_NUM_LAYERS),
            augment: AugmentRanges::default(),
            extra: BTreeMap::new(),
        };
        t.validate().map_err(Error::Invalid)?;
        Ok(t)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        self.validate_embeddings()?;
        self.validate_indices()?;
        self.validate_metadata()
    }

    fn validate_embeddings(&self) -> std::result::Result<(), String> {
        if self.num_tokens == 0 || self.context_dim == 0 {
            return Err(format!(
                "`embeddings` is empty ([{}, {}])",
                self.num_tokens, self.context_dim
            ));
        }
        if self.embeddings.len() != self.num_tokens * self.context_dim {
            return Err("`embeddings` has the wrong number of values".into());
        }
        if let Some(i) = self.embeddings.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "`embeddings` holds a non-finite value at flat index {i}"
            ));
        }
        // Finite but huge values overflow in the model's attention (NaN maps, blamed on the
        // model): they are the file's fault.
        if let Some(i) = self
            .embeddings
            .iter()
            .position(|v| v.abs() > MAX_EMBEDDING_ABS)
        {
            return Err(format!(
                "`embeddings` holds {:e} at flat index {i}, beyond the {MAX_EMBEDDING_ABS:e} a \
                 token embedding may reach (learned embeddings are of order 1): a damaged file",
                self.embeddings[i]
            ));
        }
        Ok(())
    }

    fn validate_indices(&self) -> std::result::Result<(), String> {
        if self.indices.is_empty() {
            return Err("`indices` is empty: no keypoint tokens selected".into());
        }
        let mut seen = std::collections::HashSet::new();
        for &i in &self.indices {
            if i >= self.num_tokens {
                return Err(format!(
                    "`indices` holds {i}, out of range for {} tokens",
                    self.num_tokens
                ));
            }
            if !seen.insert(i) {
                return Err(format!("`indices` holds token {i} twice"));
            }
        }
        Ok(())
    }

    fn validate_metadata(&self) -> std::result::Result<(), String> {
        for (name, v) in [
            ("input_size", self.input_size),
            ("map_res", self.map_res),
            ("num_layers", self.num_layers),
        ] {
            if v == 0 {
                return Err(format!("metadata `{name}` must be positive"));
            }
        }
        for (name, v, max) in [
            ("input_size", self.input_size, MAX_INPUT_SIZE),
            ("map_res", self.map_res, MAX_MAP_RES),
        ] {
            if v > max {
                return Err(format!("metadata `{name}` = {v} is larger than {max}"));
            }
        }
        if self.timestep >= 1000 {
            return Err(format!(
                "metadata `timestep` = {} is outside 0..1000",
                self.timestep
            ));
        }
        if self.num_layers > LayerSet::LIMIT {
            return Err(format!(
                "metadata `num_layers` = {} is larger than {}",
                self.num_layers,
                LayerSet::LIMIT
            ));
        }
        if self.layers.last() >= self.num_layers {
            return Err(format!(
                "metadata `layers` = {} names a layer beyond the {} recorded (`num_layers`)",
                self.layers, self.num_layers
            ));
        }
        self.augment
            .validate()
            .map_err(|e| format!("metadata `augment_*`: {e}"))?;
        Ok(())
    }

    /// Number of keypoints K.
    pub fn num_keypoints(&self) -> usize {
        self.indices.len()
    }

    /// Identity of these tokens: 64-bit FNV-1a of the shape, the embeddings' f32 bits and the
    /// indices (little-endian), as 16 hex digits. Equal for the same tokens whatever file or
    /// directory they were read from; carried in the keypoint metadata so that consumers can
    /// tell which tokens produced keypoints.
    pub fn fingerprint(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        eat(&(self.num_tokens as u64).to_le_bytes());
        eat(&(self.context_dim as u64).to_le_bytes());
        for v in &self.embeddings {
            eat(&v.to_bits().to_le_bytes());
        }
        for &i in &self.indices {
            eat(&(i as u64).to_le_bytes());
        }
        format!("{h:016x}")
    }

    /// A tokens file, or a directory with the reference's `embedding.pt` and `indices.pt`
    /// ([`Self::load_reference`]).
    pub fn load(path: &Path) -> Result<Self> {
        if path.is_dir() {
            return Self::load_reference(path);
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(path, &bytes)
    }

    /// The reference's tokens: `dir/embedding.pt` (`[1, N, D]` or `[N, D]`) and
    /// `dir/indices.pt` (`[K]`), written by `torch.save`. Metadata takes the defaults (the
    /// reference's settings: input 512, map_res 128, 4 layers, t = 0). Errors name the file.
    pub fn load_reference(dir: &Path) -> Result<Self> {
        let emb_path = dir.join("embedding.pt");
        let idx_path = dir.join("indices.pt");
        for p in [&emb_path, &idx_path] {
            if !p.is_file() {
                return Err(Error::tokens(
                    p,
                    "missing: a tokens directory must hold the reference's embedding.pt and indices.pt",
                ));
            }
        }
        let emb = crate::torchfile::read_tensor(&emb_path)?;
        let emb = match emb.dims() {
            [1, _, _] => emb.squeeze(0)?,
            [_, _] => emb,
            d => {
                return Err(Error::tokens(
                    &emb_path,
                    format!("the embedding must be [1, N, D] or [N, D], got shape {d:?}"),
                ))
            }
        };
        let (n, c) = emb.dims2()?;
        let embeddings: Vec<f32> = match emb.dtype() {
            candle_core::DType::F32
            | candle_core::DType::F16
            | candle_core::DType::BF16
            | candle_core::DType::F64 => emb
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1()?,
            d => {
                return Err(Error::tokens(
                    &emb_path,
                    format!("the embedding must hold floats, not {d:?}"),
                ))
            }
        };
        let idx = crate::torchfile::read_tensor(&idx_path)?;
        let idx = match idx.dims() {
            [_] => idx,
            [1, _] => idx.squeeze(0)?,
            d => {
                return Err(Error::tokens(
                    &idx_path,
                    format!("the indices must be [K], got shape {d:?}"),
                ))
            }
        };
        let raw: Vec<i64> = match idx.dtype() {
            candle_core::DType::I64 | candle_core::DType::U32 | candle_core::DType::U8 => {
                idx.to_dtype(candle_core::DType::I64)?.to_vec1()?
            }
            d => {
                return Err(Error::tokens(
                    &idx_path,
                    format!("the indices must be integers, not {d:?}"),
                ))
            }
        };
        let indices = raw
            .iter()
            .map(|&v| usize::try_from(v).ok())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::tokens(&idx_path, "the indices hold a negative value"))?;
        Tokens::new(embeddings, n, c, indices).map_err(|e| match e {
            Error::Invalid(m) => Error::tokens(dir, m),
            e => e,
        })
    }

    /// Parses a tokens file held in memory; `path` only names it in errors.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        Self::parse_bytes(bytes).map_err(|m| Error::tokens(path, m))
    }

    fn parse_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        let (_, meta) = SafeTensors::read_metadata(bytes)
            .map_err(|e| format!("not a safetensors file: {e}"))?;
        let st =
            SafeTensors::deserialize(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
        let (embeddings, num_tokens, context_dim) = read_embeddings(&st)?;
        let mut t = Tokens {
            embeddings,
            num_tokens,
            context_dim,
            indices: read_indices(&st)?,
            input_size: DEFAULT_INPUT_SIZE,
            map_res: DEFAULT_MAP_RES,
            num_layers: DEFAULT_NUM_LAYERS,
            timestep: DEFAULT_TIMESTEP,
            layers: LayerSet::first(DEFAULT_NUM_LAYERS),
            augment: AugmentRanges::default(),
            extra: BTreeMap::new(),
        };
        let mut layers = None;
        for (k, v) in meta.metadata().iter().flatten() {
            t.set_metadata(k, v, &mut layers)?;
        }
        t.layers = layers.unwrap_or(LayerSet::first(t.num_layers));
        t.validate()?;
        Ok(t)
    }

    /// Metadata entry `k` = `v`; `layers` is set apart (its default depends on
    /// `num_layers`, which may come later), unknown keys are kept in `extra`.
    fn set_metadata(
        &mut self,
        k: &str,
        v: &str,
        layers: &mut Option<LayerSet>,
    ) -> std::result::Result<(), String> {
        let slot = match k {
            "input_size" => &mut self.input_size,
            "map_res" => &mut self.map_res,
            "num_layers" => &mut self.num_layers,
            "timestep" => &mut self.timestep,
            "layers" => {
                *layers = Some(
                    v.parse::<LayerSet>()
                        .map_err(|e| format!("metadata `layers` = {v:?}: {e}"))?,
                );
                return Ok(());
            }
            "augment_degrees" => {
                self.augment.degrees = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("metadata `{k}` = {v:?} is not a number"))?;
                return Ok(());
            }
            "augment_scale" | "augment_translate" => {
                let p = pair(v)
                    .ok_or_else(|| format!("metadata `{k}` = {v:?} is not two numbers `a,b`"))?;
                if k == "augment_scale" {
                    self.augment.scale = p;
                } else {
                    self.augment.translate = p;
                }
                return Ok(());
            }
            _ => {
                self.extra.insert(k.to_string(), v.to_string());
                return Ok(());
            }
        };
        *slot = v
            .trim()
            .parse()
            .map_err(|_| format!("metadata `{k}` = {v:?} is not a non-negative integer"))?;
        Ok(())
    }

    /// Writes the file atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        self.validate().map_err(|m| Error::tokens(path, m))?;
        let emb: Vec<u8> = self
            .embeddings
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let idx: Vec<u8> = self
            .indices
            .iter()
            .flat_map(|&v| (v as i64).to_le_bytes())
            .collect();
        let views = vec![
            (
                "embeddings",
                TensorView::new(Dtype::F32, vec![self.num_tokens, self.context_dim], &emb)
                    .expect("sizes match"),
            ),
            (
                "indices",
                TensorView::new(Dtype::I64, vec![self.indices.len()], &idx).expect("sizes match"),
            ),
        ];
        let mut meta: BTreeMap<String, String> = self.extra.clone();
        for (k, v) in KNOWN.iter().zip([
            self.input_size,
            self.map_res,
            self.num_layers,
            self.timestep,
        ]) {
            meta.insert(k.to_string(), v.to_string());
        }
        let a = &self.augment;
        for (k, v) in [
            ("layers", self.layers.to_string()),
            ("augment_degrees", a.degrees.to_string()),
            ("augment_scale", format!("{},{}", a.scale[0], a.scale[1])),
            (
                "augment_translate",
                format!("{},{}", a.translate[0], a.translate[1]),
            ),
        ] {
            meta.insert(k.to_string(), v);
        }
        let bytes =
            crate::util::safetensors_bytes(views, &meta).map_err(|e| Error::tokens(path, e))?;
        crate::util::write_atomic(path, &bytes)
    }
}

/// The `embeddings` tensor [N, context_dim] as f32, with N and context_dim.
fn read_embeddings(st: &SafeTensors) -> std::result::Result<(Vec<f32>, usize, usize), String> {
    let emb = st
        .tensor("embeddings")
        .map_err(|_| "missing tensor `embeddings`".to_string())?;
    let shape = emb.shape();
    if shape.len() != 2 {
        return Err(format!(
            "`embeddings` must be [N, context_dim], got shape {shape:?}"
        ));
    }
    let values = to_f32(&emb)
        .ok_or_else(|| format!("`embeddings` has unsupported dtype {:?}", emb.dtype()))?;
    Ok((values, shape[0], shape[1]))
}

/// The `indices` tensor [K].
fn read_indices(st: &SafeTensors) -> std::result::Result<Vec<usize>, String> {
    let idx = st
        .tensor("indices")
        .map_err(|_| "missing tensor `indices`".to_string())?;
    if idx.shape().len() != 1 {
        return Err(format!(
            "`indices` must be [K], got shape {:?}",
            idx.shape()
        ));
    }
    to_indices(&idx).ok_or_else(|| {
        format!(
            "`indices` must hold non-negative integers (dtype {:?})",
            idx.dtype()
        )
    })
}

fn to_f32(t: &TensorView) -> Option<Vec<f32>> {
    let d = t.data();
    Some(match t.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::F64 => d
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

fn to_indices(t: &TensorView) -> Option<Vec<usize>> {
    let d = t.data();
    let v: Vec<i64> = match t.dtype() {
        Dtype::I64 => d
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::I32 => d
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
            .collect(),
        Dtype::U32 => d
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()) as i64)
            .collect(),
        _ => return None,
    };
    v.into_iter().map(|x| usize::try_from(x).ok()).collect()
}

#[cfg(test)]
mod tests;
