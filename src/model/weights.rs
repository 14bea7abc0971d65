//! Weights straight from a memory-mapped safetensors file.
//!
//! Each tensor is converted to the compute dtype on request and its pages are then released
//! (`MADV_DONTNEED`; they are file-backed and read-only), so loading needs the model's memory
//! once instead of once for the mapping plus once for the tensors.

use crate::error::{Error, Result};
use candle_core::safetensors::Load;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::{Init, VarBuilder};
use memmap2::{Mmap, UncheckedAdvice};
use safetensors::tensor::{Metadata, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

struct MmapWeights {
    mmap: Mmap,
    meta: Metadata,
    data_start: usize,
}

impl MmapWeights {
    fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: mapped read-only; the file must not be modified while the model loads
        // (the same contract as candle's and diffusers' loaders).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        // Full validation (header, offsets, sizes) catches truncated files up front.
        SafeTensors::deserialize(&mmap)
            .map_err(|e| Error::weights(path, format!("not a valid safetensors file: {e}")))?;
        let (n, meta) = SafeTensors::read_metadata(&mmap).map_err(|e| Error::weights(path, e))?;
        Ok(Self {
            mmap,
            meta,
            data_start: 8 + n,
        })
    }

    fn view(&self, name: &str) -> candle_core::Result<(TensorView<'_>, usize, usize)> {
        let info = self
            .meta
            .info(name)
            .ok_or_else(|| candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            })?;
        let (a, b) = info.data_offsets;
        let (a, b) = (self.data_start + a, self.data_start + b);
        let view = TensorView::new(info.dtype, info.shape.clone(), &self.mmap[a..b])
            .map_err(candle_core::Error::wrap)?;
        Ok((view, a, b - a))
    }
}

impl candle_nn::var_builder::SimpleBackend for MmapWeights {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.get_unchecked(name, dtype, dev)?;
        if t.shape() != &s {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: s,
                got: t.shape().clone(),
            });
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let (view, offset, len) = self.view(name)?;
        let t = view.load(dev)?.to_dtype(dtype)?;
        // The tensor now owns a copy; drop the mapped pages so they do not count twice.
        // SAFETY: read-only file mapping; released pages are re-read from the file if touched.
        unsafe {
            let _ = self
                .mmap
                .unchecked_advise_range(UncheckedAdvice::DontNeed, offset, len);
        }
        Ok(t)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.meta.info(name).is_some()
    }
}

/// The weights of a model part in one file or in shards: each tensor from the file that
/// holds it.
struct Shards(Vec<MmapWeights>);

impl Shards {
    fn holder(&self, name: &str) -> candle_core::Result<&MmapWeights> {
        self.0
            .iter()
            .find(|w| w.meta.info(name).is_some())
            .ok_or_else(|| candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            })
    }
}

impl candle_nn::var_builder::SimpleBackend for Shards {
    fn get(
        &self,
        s: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.holder(name)?.get(s, name, init, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.holder(name)?.get_unchecked(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.iter().any(|w| w.contains_tensor(name))
    }
}

/// Whether `path` is a PyTorch pickle (`.bin`, `.pt`, `.pth`, `.ckpt`) rather than safetensors.
pub fn is_pickle(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e, "bin" | "pt" | "pth" | "ckpt"))
}

/// A VarBuilder over memory-mapped safetensors files (one, or the shards of one part), or
/// over a PyTorch pickle (`torch.save`'s zip format), read without PyTorch.
pub fn var_builder(
    paths: &[std::path::PathBuf],
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>> {
    let backend: Box<dyn candle_nn::var_builder::SimpleBackend> = match paths {
        [one] if is_pickle(one) => Box::new(
            candle_core::pickle::PthTensors::new(one, None).map_err(|e| {
                Error::weights(
                    one,
                    format!("not a PyTorch weights file (torch.save zip): {e}"),
                )
            })?,
        ),
        [one] => Box::new(MmapWeights::open(one)?),
        many => Box::new(Shards(
            many.iter()
                .map(|p| MmapWeights::open(p))
                .collect::<Result<_>>()?,
        )),
    };
    Ok(VarBuilder::from_backend(backend, dtype, device.clone()))
}

/// A whole checkpoint file's tensors: a memory-mapped safetensors file, or a PyTorch pickle
/// (`.ckpt`/`.pt`/`.bin`) whose `state_dict` entry (or top level, for a bare state dict)
/// holds the tensors. Only the names and shapes are read here; a pickle's other entries
/// (optimizer states, ...) are never read into memory.
pub(crate) type Backend = std::sync::Arc<dyn candle_nn::var_builder::SimpleBackend>;

pub(crate) fn open_checkpoint(path: &Path) -> Result<(Backend, BTreeMap<String, Vec<usize>>)> {
    if is_pickle(path) {
        let not = |e: candle_core::Error| {
            Error::weights(
                path,
                format!(
                    "not a PyTorch checkpoint (torch.save zip): {}",
                    one_line(&e)
                ),
            )
        };
        let pth = match candle_core::pickle::PthTensors::new(path, Some("state_dict")) {
            Ok(p) => p,
            Err(_) => candle_core::pickle::PthTensors::new(path, None).map_err(not)?,
        };
        let shapes = pth
            .tensor_infos()
            .iter()
            .map(|(k, t)| (k.clone(), t.layout.shape().dims().to_vec()))
            .collect();
        return Ok((std::sync::Arc::new(pth), shapes));
    }
    let w = MmapWeights::open(path)?;
    let shapes = w
        .meta
        .tensors()
        .into_iter()
        .map(|(k, t)| (k, t.shape.clone()))
        .collect();
    Ok((std::sync::Arc::new(w), shapes))
}

fn one_line(e: &impl std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or("").to_string()
}

/// Tensors asked for by our (diffusers) names, read under the names a checkpoint file
/// gives them.
pub(crate) struct Renamed {
    pub inner: Backend,
    /// Our name -> the file's name.
    pub names: HashMap<String, String>,
}

impl Renamed {
    fn name<'a>(&'a self, name: &'a str) -> candle_core::Result<&'a str> {
        self.names.get(name).map(String::as_str).ok_or_else(|| {
            candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            }
        })
    }
}

impl candle_nn::var_builder::SimpleBackend for Renamed {
    fn get(
        &self,
        s: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.inner.get(s, self.name(name)?, init, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.inner.get_unchecked(self.name(name)?, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }
}

/// The path that errors about these weights name: the file, or the shards' folder.
pub fn named(paths: &[std::path::PathBuf]) -> std::path::PathBuf {
    match paths {
        [one] => one.clone(),
        many => many
            .first()
            .and_then(|p| p.parent())
            .map_or_else(Default::default, Path::to_path_buf),
    }
}
