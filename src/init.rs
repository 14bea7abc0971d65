//! Miniature SD-family models with deterministic random weights, in the diffusers layout:
//! the embedded default for demos and tests (no weights can be downloaded here).
//!
//! The tensor set is whatever the loaders ask for, so a generated model always loads; the
//! VAE decoder is omitted because keypoints never use it.

use crate::error::{Error, Result};
use crate::model::{UNet, UNetConfig, VaeConfig, VaeEncoder};
use crate::ops::rng::Rng;
use crate::tokens::Tokens;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::{Init, VarBuilder};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Architectures `init-model` can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TinyArch {
    /// Miniature SD 1.x layout: conv projections, one head count for every block.
    TinySd1,
    /// Miniature SD 2.x layout: linear projections, per-block head counts.
    TinySd2,
    /// Full-size Stable Diffusion 1.5 architecture (random weights, ~3.4 GB in f32).
    Sd15,
    /// Full-size Stable Diffusion 2.1 architecture (random weights).
    Sd21,
    /// Miniature SDXL base layout (tests/data/tiny-sdxl's): a plain first block, per-block
    /// transformer depth, the `text_time` added embedding.
    TinySdxl,
    /// Full-size SDXL base architecture (random weights, ~10 GB in f32).
    Sdxl,
}

impl std::str::FromStr for TinyArch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tiny-sd1" => Ok(TinyArch::TinySd1),
            "tiny-sd2" => Ok(TinyArch::TinySd2),
            "sd15" => Ok(TinyArch::Sd15),
            "sd21" => Ok(TinyArch::Sd21),
            "tiny-sdxl" => Ok(TinyArch::TinySdxl),
            "sdxl" => Ok(TinyArch::Sdxl),
            _ => Err(Error::Invalid(format!(
                "unknown architecture {s:?} (tiny-sd1, tiny-sd2, sd15, sd21, tiny-sdxl, sdxl)"
            ))),
        }
    }
}

impl TinyArch {
    /// Default square input side for the architecture.
    pub fn input_size(self) -> usize {
        match self {
            TinyArch::TinySd1 | TinyArch::TinySd2 | TinyArch::TinySdxl => TINY_INPUT_SIZE,
            TinyArch::Sd15 | TinyArch::Sd21 => 512,
            TinyArch::Sdxl => 1024,
        }
    }

    fn is_full_size(self) -> bool {
        matches!(self, TinyArch::Sd15 | TinyArch::Sd21 | TinyArch::Sdxl)
    }
}

/// The demo input side for the tiny models (latent 16x16, recorded layers at 4 and 8).
pub const TINY_INPUT_SIZE: usize = 128;

/// SDXL base's `unet/config.json` (full size as published; tiny as tests/data/tiny-sdxl).
fn sdxl_unet_config_json(full: bool) -> Value {
    let mut c = json!({
        "_class_name": "UNet2DConditionModel",
        "act_fn": "silu",
        "addition_embed_type": "text_time",
        "addition_embed_type_num_heads": 64,
        "addition_time_embed_dim": 256,
        "attention_head_dim": [1, 1, 1],
        "block_out_channels": [16, 32, 32],
        "cross_attention_dim": 64,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "downsample_padding": 1,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 8,
        "out_channels": 4,
        "projection_class_embeddings_input_dim": 32 + 6 * 256,
        "sample_size": 16,
        "transformer_layers_per_block": [1, 1, 2],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "use_linear_projection": true
    });
    if full {
        for (k, v) in [
            ("attention_head_dim", json!([5, 10, 20])),
            ("block_out_channels", json!([320, 640, 1280])),
            ("cross_attention_dim", json!(2048)),
            ("layers_per_block", json!(2)),
            ("norm_num_groups", json!(32)),
            ("projection_class_embeddings_input_dim", json!(2816)),
            ("sample_size", json!(128)),
            ("transformer_layers_per_block", json!([1, 2, 10])),
        ] {
            c[k] = v;
        }
    }
    c
}

pub fn unet_config_json(arch: TinyArch) -> Value {
    let (heads, ctx, linear): (Value, usize, bool) = match arch {
        TinyArch::TinySd1 => (json!(2), 32, false),
        TinyArch::TinySd2 => (json!([2, 2, 4, 4]), 48, true),
        TinyArch::Sd15 => (json!(8), 768, false),
        TinyArch::Sd21 => (json!([5, 10, 20, 20]), 1024, true),
        TinyArch::TinySdxl | TinyArch::Sdxl => return sdxl_unet_config_json(arch.is_full_size()),
    };
    if arch.is_full_size() {
        // As in the published SD 1.5 / 2.1 `unet/config.json`.
        return json!({
            "_class_name": "UNet2DConditionModel",
            "act_fn": "silu",
            "attention_head_dim": heads,
            "block_out_channels": [320, 640, 1280, 1280],
            "center_input_sample": false,
            "cross_attention_dim": ctx,
            "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
            "downsample_padding": 1,
            "flip_sin_to_cos": true,
            "freq_shift": 0,
            "in_channels": 4,
            "layers_per_block": 2,
            "mid_block_scale_factor": 1,
            "norm_eps": 1e-05,
            "norm_num_groups": 32,
            "out_channels": 4,
            "sample_size": if arch == TinyArch::Sd15 { 64 } else { 96 },
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
            "upcast_attention": linear,
            "use_linear_projection": linear
        });
    }
    json!({
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": "0.42.1",
        "act_fn": "silu",
        "attention_head_dim": heads,
        "block_out_channels": [32, 32, 64, 64],
        "cross_attention_dim": ctx,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 1,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 8,
        "out_channels": 4,
        "sample_size": 16,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "upcast_attention": linear,
        "use_linear_projection": linear
    })
}

pub fn vae_config_json(arch: TinyArch) -> Value {
    let mut v = sd_vae_config_json(arch);
    if matches!(arch, TinyArch::TinySdxl | TinyArch::Sdxl) {
        // SDXL's VAE: the SD layout with its own scaling factor.
        v["scaling_factor"] = json!(0.13025);
        v["force_upcast"] = json!(true);
        if arch == TinyArch::TinySdxl {
            v["block_out_channels"] = json!([8, 8, 16, 16]);
        }
    }
    v
}

fn sd_vae_config_json(arch: TinyArch) -> Value {
    if arch.is_full_size() {
        return json!({
            "_class_name": "AutoencoderKL",
            "act_fn": "silu",
            "block_out_channels": [128, 256, 512, 512],
            "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
            "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
            "in_channels": 3,
            "out_channels": 3,
            "latent_channels": 4,
            "layers_per_block": 2,
            "norm_num_groups": 32,
            "sample_size": arch.input_size(),
            "scaling_factor": 0.18215
        });
    }
    json!({
        "_class_name": "AutoencoderKL",
        "_diffusers_version": "0.42.1",
        "act_fn": "silu",
        "block_out_channels": [16, 16, 32, 32],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "sample_size": 128,
        "scaling_factor": 0.18215
    })
}

/// A VarBuilder backend that invents every requested tensor from (seed, name) and keeps it.
#[derive(Clone)]
struct Generator {
    seed: u64,
    made: Arc<Mutex<BTreeMap<String, Tensor>>>,
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

impl candle_nn::var_builder::SimpleBackend for Generator {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut made = self.made.lock().expect("generator lock");
        if let Some(t) = made.get(name) {
            return t.to_dtype(dtype)?.to_device(dev);
        }
        let mut rng = Rng::new(self.seed ^ fnv1a(name));
        let n = s.elem_count();
        let dims = s.dims();
        let mut v = vec![0f32; n];
        rng.fill_normal(&mut v);
        let is_norm = name.contains("norm") && dims.len() == 1;
        if name.ends_with("weight") && is_norm {
            v.iter_mut().for_each(|x| *x = 1.0 + 0.1 * *x);
        } else if name.ends_with("weight") {
            // Unit-variance activations through every layer: std 1/sqrt(fan_in).
            let fan_in: usize = dims[1..].iter().product::<usize>().max(1);
            let std = 1.0 / (fan_in as f32).sqrt();
            v.iter_mut().for_each(|x| *x *= std);
        } else {
            v.iter_mut().for_each(|x| *x *= 0.1);
        }
        let t = Tensor::from_vec(v, s, &Device::Cpu)?;
        made.insert(name.to_string(), t.clone());
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        match self.made.lock().expect("generator lock").get(name) {
            Some(t) => t.to_dtype(dtype)?.to_device(dev),
            None => candle_core::bail!("cannot find tensor {name}"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.made.lock().expect("generator lock").contains_key(name)
    }
}

fn generate(
    seed: u64,
    build: impl FnOnce(VarBuilder) -> candle_core::Result<()>,
) -> Result<BTreeMap<String, Tensor>> {
    let g = Generator {
        seed,
        made: Arc::new(Mutex::new(BTreeMap::new())),
    };
    build(VarBuilder::from_backend(
        Box::new(g.clone()),
        DType::F32,
        Device::Cpu,
    ))?;
    let made = std::mem::take(&mut *g.made.lock().expect("generator lock"));
    Ok(made)
}

fn write_model_part(dir: &Path, config: &Value, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let cfg = serde_json::to_string_pretty(config).expect("json");
    crate::util::write_atomic(&dir.join("config.json"), cfg.as_bytes())?;
    let path = dir.join("diffusion_pytorch_model.safetensors");
    let tmp = dir.join(".diffusion_pytorch_model.safetensors.tmp");
    let tensors: std::collections::HashMap<&str, Tensor> = tensors
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    candle_core::safetensors::save(&tensors, &tmp).map_err(|e| Error::weights(&tmp, e))?;
    // The safetensors writer creates owner-only files; models are meant to be shared.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
}

/// Writes `out/unet`, `out/vae` and a matching random `out/tokens.safetensors`
/// (`num_tokens` tokens, the first `num_keypoints` of a seeded permutation selected).
pub fn init_model(
    out: &Path,
    arch: TinyArch,
    seed: u64,
    num_tokens: usize,
    num_keypoints: usize,
) -> Result<()> {
    init_model_from(
        out,
        &unet_config_json(arch),
        &vae_config_json(arch),
        seed,
        (num_tokens, num_keypoints),
        (
            arch.input_size(),
            if arch.is_full_size() { 128 } else { 64 },
        ),
        &format!("init-model {arch:?} seed {seed}"),
    )
}

/// [`init_model`] for any architecture given as its two `config.json` values;
/// `tokens` = (tokens, keypoints), `sizes` = (input size, map resolution) of the tokens file,
/// `generator` its `generator` metadata.
pub fn init_model_from(
    out: &Path,
    unet_json: &Value,
    vae_json: &Value,
    seed: u64,
    (num_tokens, num_keypoints): (usize, usize),
    (input_size, map_res): (usize, usize),
    generator: &str,
) -> Result<()> {
    if num_keypoints == 0 || num_keypoints > num_tokens {
        return Err(Error::Invalid(format!(
            "need 1 <= keypoints ({num_keypoints}) <= tokens ({num_tokens})"
        )));
    }
    let here = Path::new("<generated>");
    let ucfg = UNetConfig::from_map(here, unet_json.as_object().expect("object"))?;
    let vcfg = VaeConfig::from_map(here, vae_json.as_object().expect("object"))?;
    let unet = generate(seed, |vb| UNet::new(vb, &ucfg).map(|_| ()))?;
    let vae = generate(seed.wrapping_add(1), |vb| {
        VaeEncoder::new(vb, &vcfg).map(|_| ())
    })?;
    write_model_part(&out.join("unet"), unet_json, &unet)?;
    write_model_part(&out.join("vae"), vae_json, &vae)?;

    let mut rng = Rng::new(seed.wrapping_add(2));
    let ctx = ucfg.cross_attention_dim;
    let mut emb = vec![0f32; num_tokens * ctx];
    rng.fill_normal(&mut emb);
    let mut perm: Vec<usize> = (0..num_tokens).collect();
    for i in (1..num_tokens).rev() {
        perm.swap(i, rng.below(i + 1));
    }
    let mut tokens = Tokens::new(emb, num_tokens, ctx, perm[..num_keypoints].to_vec())?;
    tokens.input_size = input_size;
    tokens.map_res = map_res;
    tokens
        .extra
        .insert("generator".into(), generator.to_string());
    tokens.save(&out.join("tokens.safetensors"))
}
