//! The Stable Diffusion pieces StableKeypoints needs: VAE encoder and UNet with the
//! attention recorder, loaded from a diffusers directory.

pub mod blocks;
pub mod capture;
pub mod config;
pub mod hub;
pub mod identity;
pub mod nn;
pub mod single_file;
pub mod transformer;
pub mod unet;
pub mod vae;
pub mod weights;

use crate::error::{Error, Result};
use crate::ops::schedule::DdimSchedule;
use candle_core::{DType, Device, Tensor};
use std::path::{Path, PathBuf};

pub use capture::{LayerSet, MapRecorder};
pub use config::{UNetConfig, VaeConfig};
pub use hub::resolve_model;
pub use identity::ModelIdentity;
pub use transformer::{Context, CrossAttentionHook, Stage};
pub use unet::UNet;
pub use vae::VaeEncoder;

/// The weight files of `dir/sub`: `diffusion_pytorch_model[.fp16].safetensors`, the
/// shards that `diffusion_pytorch_model.safetensors.index[.fp16].json` names (as diffusers
/// saves large models), or a PyTorch `diffusion_pytorch_model[.fp16].bin`.
pub fn weights_files(dir: &Path, sub: &str) -> Result<Vec<PathBuf>> {
    let d = dir.join(sub);
    if !d.is_dir() {
        let what = if dir.is_dir() {
            format!("no `{sub}/` directory (expected a diffusers model directory)")
        } else if dir.exists() {
            "is a file, not a diffusers model directory (unet/ and vae/)".to_string()
        } else {
            "model directory does not exist".to_string()
        };
        return Err(Error::Io {
            path: if dir.is_dir() { d } else { dir.to_path_buf() },
            source: std::io::Error::new(std::io::ErrorKind::NotFound, what),
        });
    }
    // diffusers names a variant's index `<name>.safetensors.index.fp16.json`.
    for (file, index) in [
        (
            "diffusion_pytorch_model.safetensors",
            "diffusion_pytorch_model.safetensors.index.json",
        ),
        (
            "diffusion_pytorch_model.fp16.safetensors",
            "diffusion_pytorch_model.safetensors.index.fp16.json",
        ),
    ] {
        let p = d.join(file);
        if p.is_file() {
            return Ok(vec![p]);
        }
        let index = d.join(index);
        if index.is_file() {
            return shards(&index);
        }
    }
    for name in [
        "diffusion_pytorch_model.bin",
        "diffusion_pytorch_model.fp16.bin",
    ] {
        let p = d.join(name);
        if p.is_file() {
            return Ok(vec![p]);
        }
    }
    Err(Error::Io {
        path: d,
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no diffusion_pytorch_model[.fp16].safetensors, its .index.json, nor a .bin",
        ),
    })
}

/// The shard files an `*.safetensors.index.json` names in its `weight_map`, each once, in
/// order of first mention; each must exist next to the index.
fn shards(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::config(index, e.to_string()))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .filter(|m| !m.is_empty())
        .ok_or_else(|| Error::config(index, "no `weight_map` of tensor names to files"))?;
    let folder = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = Vec::new();
    for (tensor, file) in map {
        let name = file
            .as_str()
            .filter(|f| !f.contains('/') && !f.contains('\\') && !f.starts_with('.'))
            .ok_or_else(|| {
                Error::config(index, format!("`{tensor}` maps to {file}, not a file name"))
            })?;
        let path = folder.join(name);
        if !files.contains(&path) {
            if !path.is_file() {
                return Err(Error::config(
                    index,
                    format!("shard {name} (of `{tensor}`) is missing"),
                ));
            }
            files.push(path);
        }
    }
    Ok(files)
}

/// Where a model's weights come from: a diffusers folder or a single-file checkpoint in
/// the original Stable Diffusion layout (`.safetensors`, `.ckpt`/`.pt`), and optionally the
/// VAE from elsewhere (a diffusers folder, its `vae/` folder, or a single file).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ModelSource {
    pub model: PathBuf,
    /// `--vae` / `vae=`: the VAE from this folder or file instead of the model's.
    pub vae: Option<PathBuf>,
    /// `--no-ema`: a single file's plain UNet weights even when it has EMA copies.
    pub no_ema: bool,
}

impl From<&Path> for ModelSource {
    fn from(model: &Path) -> Self {
        Self {
            model: model.to_path_buf(),
            ..Self::default()
        }
    }
}

impl ModelSource {
    /// Finds both parts and reads their architectures (headers and configs, no tensor),
    /// so that a wrong folder or file is reported before anything loads.
    pub fn check(&self) -> Result<()> {
        Parts::locate(self).map(|_| ())
    }
}

/// Where one part's tensors are: weight files under our names, or a single file's tensors
/// read through the original layout's names.
pub(crate) enum PartFiles {
    Files(Vec<PathBuf>),
    Mapped(single_file::Part, PathBuf),
}

impl PartFiles {
    fn var_builder(&self, dtype: DType, device: &Device) -> Result<candle_nn::VarBuilder<'static>> {
        match self {
            PartFiles::Files(f) => weights::var_builder(f, dtype, device),
            PartFiles::Mapped(p, _) => Ok(p.var_builder(dtype, device)),
        }
    }

    /// The path that errors about this part name.
    fn named(&self) -> PathBuf {
        match self {
            PartFiles::Files(f) => weights::named(f),
            PartFiles::Mapped(_, p) => p.clone(),
        }
    }
}

/// A model's two parts, located and their architectures read; no tensor loaded yet.
pub(crate) struct Parts {
    pub unet: PartFiles,
    pub vae: PartFiles,
    pub unet_config: UNetConfig,
    pub vae_config: VaeConfig,
    /// Each part's configuration as JSON (`config.json`, or the one a single file implies).
    pub configs: [(&'static str, serde_json::Value); 2],
}

fn read_config(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::config(path, format!("not valid JSON: {e}")))
}

/// The VAE named by `--vae`: a single file, a diffusers model folder (its `vae/`), or a
/// VAE folder itself (`config.json` and weights).
/// `xl`: the UNet is SDXL's (a single file's VAE then has SDXL's scaling factor).
fn locate_vae(path: &Path, xl: bool) -> Result<(PartFiles, VaeConfig, serde_json::Value)> {
    if path.is_file() {
        let (part, cfg, json) = single_file::open_vae(path, xl)?;
        return Ok((PartFiles::Mapped(part, path.to_path_buf()), cfg, json));
    }
    let (dir, sub) = if path.join("vae").is_dir() {
        (path.to_path_buf(), std::ffi::OsString::from("vae"))
    } else if path.join("config.json").is_file() {
        let parent = path.parent().map_or_else(PathBuf::new, Path::to_path_buf);
        let name = path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        (parent, name)
    } else {
        return Err(Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "is neither a VAE file, a VAE folder (config.json + weights) nor a model folder with vae/",
            ),
        });
    };
    let sub = sub.to_string_lossy().into_owned();
    let files = weights_files(&dir, &sub)?;
    let config = dir.join(&sub).join("config.json");
    let cfg = VaeConfig::from_file(&config)?;
    Ok((PartFiles::Files(files), cfg, read_config(&config)?))
}

impl Parts {
    pub fn locate(source: &ModelSource) -> Result<Self> {
        Self::locate_as(source, None)
    }

    /// `config`: a diffusers folder whose `unet/` and `vae/` configs give a single file's
    /// architecture (diffusers' `from_single_file(config=...)`); ignored for folders.
    pub fn locate_as(source: &ModelSource, config: Option<&Path>) -> Result<Self> {
        let dir = &source.model;
        let (unet, unet_config, unet_json, own_vae) = if dir.is_file() {
            let ckpt = single_file::Checkpoint::open(dir, !source.no_ema, config)?;
            let own_vae = ckpt
                .vae
                .map(|(p, c, j)| (PartFiles::Mapped(p, dir.clone()), c, j));
            (
                PartFiles::Mapped(ckpt.unet, dir.clone()),
                ckpt.unet_config,
                ckpt.unet_json,
                own_vae,
            )
        } else {
            let files = weights_files(dir, "unet")?;
            let config = dir.join("unet").join("config.json");
            let cfg = UNetConfig::from_file(&config)?;
            let json = read_config(&config)?;
            let own_vae = match &source.vae {
                Some(_) => None,
                None => {
                    let files = weights_files(dir, "vae")?;
                    let config = dir.join("vae").join("config.json");
                    let cfg = VaeConfig::from_file(&config)?;
                    Some((PartFiles::Files(files), cfg, read_config(&config)?))
                }
            };
            (PartFiles::Files(files), cfg, json, own_vae)
        };
        let (vae, vae_config, vae_json) = match (&source.vae, own_vae) {
            (Some(v), _) => locate_vae(v, unet_config.text_time.is_some())?,
            (None, Some(own)) => own,
            (None, None) => {
                return Err(Error::weights(
                    dir,
                    "has no VAE (no first_stage_model.* tensors); pass --vae (the element: vae=) with a VAE folder or file",
                ))
            }
        };
        if vae_config.latent_channels != unet_config.in_channels {
            return Err(Error::config(
                &vae.named(),
                format!(
                    "the VAE has latent_channels = {} but the UNet's in_channels = {}",
                    vae_config.latent_channels, unet_config.in_channels
                ),
            ));
        }
        Ok(Self {
            unet,
            vae,
            unet_config,
            vae_config,
            configs: [("unet", unet_json), ("vae", vae_json)],
        })
    }
}

/// What to record: DDIM timestep, the observed layers averaged, map resolution R.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSpec {
    pub timestep: usize,
    pub layers: LayerSet,
    pub map_res: usize,
}

/// A loaded Stable Diffusion backbone (VAE encoder + UNet).
#[derive(Debug)]
pub struct Model {
    /// The model path (`source.model`).
    pub dir: PathBuf,
    pub source: ModelSource,
    pub unet: UNet,
    pub vae: VaeEncoder,
    pub unet_config: UNetConfig,
    pub vae_config: VaeConfig,
    pub schedule: DdimSchedule,
    pub device: Device,
    pub dtype: DType,
    /// The VAE's compute dtype: `dtype`, except f32 for SDXL's VAE where `dtype` is f16.
    pub vae_dtype: DType,
}

/// SDXL's VAE overflows f16 (diffusers marks it `force_upcast`), so it runs in f32 when
/// the model computes in f16; its latents are then converted to f16.
fn vae_dtype(unet: &UNetConfig, dtype: DType) -> DType {
    if unet.text_time.is_some() && dtype == DType::F16 {
        DType::F32
    } else {
        dtype
    }
}

impl Model {
    /// Loads a diffusers directory (`unet/` and `vae/`) or a single-file checkpoint.
    /// `dtype` is the compute dtype; f16/bf16/f32 files are converted to it.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        Self::open(&ModelSource::from(dir), device, dtype)
    }

    /// Loads the model `source` names (see [`ModelSource`]).
    pub fn open(source: &ModelSource, device: &Device, dtype: DType) -> Result<Self> {
        Self::open_as(source, None, device, dtype)
    }

    /// Loads a single file with the architecture of the diffusers folder `config` (its
    /// `unet/` and `vae/` configs) instead of the one inferred from the file's shapes, as
    /// diffusers' `from_single_file(config=...)`: for files whose head counts or group norms
    /// differ from their family's convention. `None`, or a folder `source`: [`Model::open`].
    pub fn open_as(
        source: &ModelSource,
        config: Option<&Path>,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let parts = Parts::locate_as(source, config)?;
        let mut unet = UNet::new(parts.unet.var_builder(dtype, device)?, &parts.unet_config)
            .map_err(|e| Error::weights(&parts.unet.named(), e))?;
        unet.set_pixels_per_latent(parts.vae_config.downscale());
        let vae_dtype = vae_dtype(&parts.unet_config, dtype);
        let vae = VaeEncoder::new(parts.vae.var_builder(vae_dtype, device)?, &parts.vae_config)
            .map_err(|e| Error::weights(&parts.vae.named(), e))?;
        Ok(Self {
            dir: source.model.clone(),
            source: source.clone(),
            unet,
            vae,
            unet_config: parts.unet_config,
            vae_config: parts.vae_config,
            schedule: DdimSchedule::stable_diffusion(),
            device: device.clone(),
            dtype,
            vae_dtype,
        })
    }

    pub fn context_dim(&self) -> usize {
        self.unet_config.cross_attention_dim
    }

    /// The input side must be a multiple of this.
    pub fn size_multiple(&self) -> usize {
        self.vae_config.downscale() * self.unet_config.downscale()
    }

    /// Checks that `size` is usable as the square input side.
    pub fn check_input_size(&self, size: usize) -> Result<()> {
        let m = self.size_multiple();
        if size == 0 || !size.is_multiple_of(m) {
            return Err(Error::Invalid(format!(
                "input size {size} must be a positive multiple of {m} for this model"
            )));
        }
        Ok(())
    }

    /// Keys/values of `embeddings` [N, context_dim] for every cross-attention layer.
    pub fn prepare_context(&self, embeddings: &Tensor) -> Result<Context> {
        let (_, c) = embeddings.dims2()?;
        if c != self.context_dim() {
            return Err(Error::Invalid(format!(
                "token embeddings have width {c} but the model's cross_attention_dim is {}",
                self.context_dim()
            )));
        }
        Ok(self
            .unet
            .prepare_context(&embeddings.to_dtype(self.dtype)?)?)
    }

    /// Scaled VAE latent mean of images in [0, 1], [B, 3, S, S].
    pub fn encode(&self, images01: &Tensor) -> Result<Tensor> {
        let z = self.vae.encode(&images01.to_dtype(self.vae_dtype)?)?;
        Ok(z.to_dtype(self.dtype)?)
    }

    /// Averaged attention maps [B, K or N, R, R] for latents `z`:
    /// `z_t = sqrt(abar_t) z + sqrt(1 - abar_t) noise` (`noise` None = zero noise).
    pub fn maps_from_latent(
        &self,
        z: &Tensor,
        noise: Option<&Tensor>,
        ctx: &Context,
        spec: &MapSpec,
        select: Option<&Tensor>,
    ) -> Result<Tensor> {
        let rec = self.record_maps(z, noise, ctx, spec, select, false)?;
        Ok(rec.finish()?)
    }

    /// As [`Self::maps_from_latent`], returning the recorder, which `timed` makes measure its
    /// own share (its time and FLOPs) of the UNet pass.
    pub fn record_maps(
        &self,
        z: &Tensor,
        noise: Option<&Tensor>,
        ctx: &Context,
        spec: &MapSpec,
        select: Option<&Tensor>,
        timed: bool,
    ) -> Result<MapRecorder> {
        let MapSpec {
            timestep: t,
            layers,
            map_res,
        } = *spec;
        let (a, s) = self.schedule.noise_coefficients(t);
        let zt = match noise {
            Some(n) => ((z * a)? + (n.to_dtype(z.dtype())? * s)?)?,
            None => (z * a)?,
        };
        let side = z.dim(2)?;
        let mut rec = MapRecorder::new(side / 2, layers, map_res, select.cloned());
        if timed {
            rec = rec.with_timing();
        }
        self.unet.record(&zt, t as f64, ctx, &mut rec)?;
        Ok(rec)
    }
}
