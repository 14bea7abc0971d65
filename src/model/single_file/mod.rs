//! Single-file checkpoints in the original Stable Diffusion layout (the form of
//! `v1-5-pruned-emaonly.safetensors`, `sd_xl_base_1.0.safetensors` and of the `.ckpt`
//! files most SD tools pass around): the UNet under `model.diffusion_model.*`, the VAE
//! under `first_stage_model.*`, the text encoders under `cond_stage_model.*` (SD) or
//! `conditioner.*` (SDXL), never read, and, in training checkpoints, EMA copies of the UNet
//! under `model_ema.*` with the dots of their names removed.
//!
//! The architecture is read off the tensors' names and shapes ([`arch`]) and becomes the
//! [`UNetConfig`] / [`VaeConfig`] the diffusers folder's `config.json` would give, or is
//! taken from a diffusers folder's configs (as diffusers' `from_single_file(config=...)`)
//! for a file whose heads or group norms differ from its family's convention; the tensors
//! are then read under our (diffusers) names through a table of corresponding module
//! prefixes ([`layout`]), the same table in both directions ([`to_original`] writes the
//! layout back, for tests and tools). The facts of the layout were checked against
//! diffusers' `from_single_file` (tests/reference/make_goldens.py); the code is ours.

mod arch;
mod layout;
mod write;

use super::config::{UNetConfig, VaeConfig};
use super::weights::{open_checkpoint, Backend, Renamed};
use crate::error::{Error, Result};
use arch::{unet_json, unet_layout, vae_json, Shapes};
pub(crate) use layout::diffusers_shape;
use layout::{rename, unet_table, vae_table};
use serde_json::Value;
use std::path::Path;
pub use write::{to_original, write_original};

/// Key prefix of the UNet.
pub const UNET: &str = "model.diffusion_model.";
/// Key prefix of the VAE.
pub const VAE: &str = "first_stage_model.";
/// Key prefix of the UNet's EMA copy (names with their dots removed).
pub const EMA: &str = "model_ema.";
/// The VAE scaling factor of SD 1.x / 2.x checkpoints, and of SDXL's.
const VAE_SCALE: f64 = 0.18215;
const VAE_SCALE_XL: f64 = 0.13025;

/// One tensor of a part: our name, the file's name, the shape as diffusers has it.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub ours: String,
    pub file: String,
    pub shape: Vec<usize>,
}

/// A model part read from a single file.
pub(crate) struct Part {
    pub entries: Vec<Entry>,
    pub backend: Backend,
}

impl Part {
    pub fn var_builder(
        &self,
        dtype: candle_core::DType,
        device: &candle_core::Device,
    ) -> candle_nn::VarBuilder<'static> {
        let names = self
            .entries
            .iter()
            .map(|e| (e.ours.clone(), e.file.clone()))
            .collect();
        candle_nn::VarBuilder::from_backend(
            Box::new(Renamed {
                inner: self.backend.clone(),
                names,
            }),
            dtype,
            device.clone(),
        )
    }
}

/// A single-file checkpoint, opened: its UNet and (when it has one) its VAE.
pub(crate) struct Checkpoint {
    pub unet: Part,
    pub unet_config: UNetConfig,
    pub unet_json: Value,
    /// `None`: the file has no `first_stage_model.*` keys.
    pub vae: Option<(Part, VaeConfig, Value)>,
}

/// A diffusers folder's `<part>/config.json`, parsed and as JSON.
fn folder_config(dir: &Path, part: &str) -> Result<Value> {
    let path = dir.join(part).join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::config(&path, format!("not valid JSON: {e}")))
}

impl Checkpoint {
    /// Opens `path` (safetensors or a pickle), refusing what this engine does not run.
    /// `ema`: read the UNet's EMA copy when the file has one. `config`: a diffusers folder
    /// whose `unet/` and `vae/` configs give the architecture instead of the file's shapes.
    pub fn open(path: &Path, ema: bool, config: Option<&Path>) -> Result<Self> {
        let (backend, shapes) = open_checkpoint(path)?;
        check_is_unet(path, &shapes)?;
        let layout = unet_layout(path, &shapes)?;
        let unet_json = match config {
            Some(dir) => folder_config(dir, "unet")?,
            None => unet_json(path, &shapes, &layout)?,
        };
        let map = unet_json
            .as_object()
            .ok_or_else(|| Error::config(path, "the UNet configuration is not a JSON object"))?;
        let unet_config = UNetConfig::from_map(path, map)?;
        let unet = unet_part(path, &backend, &shapes, &layout, ema)?;
        let vae_config = config.map(|d| folder_config(d, "vae")).transpose()?;
        let xl = unet_config.text_time.is_some();
        let vae = vae_part(path, backend, &shapes, VAE, xl, vae_config)?;
        Ok(Self {
            unet,
            unet_config,
            unet_json,
            vae,
        })
    }
}

/// Refuses a file with no UNet in the original layout, naming what it is instead.
fn check_is_unet(path: &Path, shapes: &Shapes) -> Result<()> {
    let conv_in = format!("{UNET}input_blocks.0.0.weight");
    if shapes.contains_key(&conv_in) {
        return Ok(());
    }
    if is_student_header(path) {
        return Err(Error::weights(
            path,
            "is a student file of `stablekeypoints distill`, not a diffusion model \
             (here a diffusers folder or a Stable Diffusion checkpoint is needed)",
        ));
    }
    let example = shapes.keys().next().map_or("none", |k| k.as_str());
    Err(Error::weights(
        path,
        format!(
            "is not a Stable Diffusion checkpoint in the original layout (no `{conv_in}`; \
             its first tensor is `{example}`); diffusers folders go by their folder"
        ),
    ))
}

/// The UNet's tensors under our names (their EMA copies when `ema` and the file has them).
fn unet_part(
    path: &Path,
    backend: &Backend,
    shapes: &Shapes,
    layout: &arch::Layout,
    ema: bool,
) -> Result<Part> {
    let bad = |m: String| Error::weights(path, m);
    let use_ema = ema && shapes.contains_key(&ema_name(&format!("{UNET}input_blocks.0.0.weight")));
    let table = unet_table(layout.n, layout.layers, &layout.up_cross);
    let mut entries = Vec::new();
    for (k, s) in shapes.range(UNET.to_string()..) {
        let Some(rest) = k.strip_prefix(UNET) else {
            break;
        };
        let ours = rename(&table, rest, true).ok_or_else(|| {
            bad(format!(
                "`{k}` is not a tensor of the SD 1.x/2.x/SDXL UNet layout"
            ))
        })?;
        let file = if use_ema {
            let e = ema_name(k);
            if !shapes.contains_key(&e) {
                return Err(bad(format!(
                    "has EMA weights but not `{e}`, the copy of `{k}`; pass --no-ema for the others"
                )));
            }
            e
        } else {
            k.clone()
        };
        entries.push(Entry {
            shape: diffusers_shape(&ours, s),
            ours,
            file,
        });
    }
    Ok(Part {
        entries,
        backend: backend.clone(),
    })
}

/// The VAE under `prefix` in a file (`first_stage_model.` in a whole checkpoint, nothing in
/// a VAE file such as `vae-ft-mse-840000-ema-pruned.safetensors`). `None`: it has none.
/// `xl`: an SDXL checkpoint's; `config`: its configuration instead of the inferred one.
fn vae_part(
    path: &Path,
    backend: Backend,
    shapes: &Shapes,
    prefix: &str,
    xl: bool,
    config: Option<Value>,
) -> Result<Option<(Part, VaeConfig, Value)>> {
    let Some((inferred, n, layers)) = vae_json(path, shapes, prefix, xl)? else {
        return Ok(None);
    };
    let json = config.unwrap_or(inferred);
    let map = json
        .as_object()
        .ok_or_else(|| Error::config(path, "the VAE configuration is not a JSON object"))?;
    let config = VaeConfig::from_map(path, map)?;
    let table = vae_table(n, layers);
    let mut entries = Vec::new();
    for (k, s) in shapes.range(prefix.to_string()..) {
        let Some(rest) = k.strip_prefix(prefix) else {
            break;
        };
        if prefix.is_empty() && !is_vae_key(rest) {
            continue;
        }
        let ours = rename(&table, rest, true).ok_or_else(|| {
            Error::weights(path, format!("`{k}` is not a tensor of the SD VAE layout"))
        })?;
        entries.push(Entry {
            shape: diffusers_shape(&ours, s),
            ours,
            file: k.clone(),
        });
    }
    Ok(Some((Part { entries, backend }, config, json)))
}

fn is_vae_key(k: &str) -> bool {
    ["encoder.", "decoder.", "quant_conv.", "post_quant_conv."]
        .iter()
        .any(|p| k.starts_with(p))
}

/// A VAE from a file of its own: the original layout with or without the
/// `first_stage_model.` prefix (a whole checkpoint's VAE, or a VAE file).
/// `xl`: for an SDXL UNet (SDXL's scaling factor).
pub(crate) fn open_vae(path: &Path, xl: bool) -> Result<(Part, VaeConfig, Value)> {
    let (backend, shapes) = open_checkpoint(path)?;
    for prefix in [VAE, ""] {
        if let Some(v) = vae_part(path, backend.clone(), &shapes, prefix, xl, None)? {
            return Ok(v);
        }
    }
    Err(Error::weights(
        path,
        "has no VAE in the original layout (no `first_stage_model.encoder.*` nor `encoder.conv_in.weight`)",
    ))
}

/// The EMA key the original layout gives a UNet tensor `model.diffusion_model.X`.
pub fn ema_name(original: &str) -> String {
    format!("{EMA}{}", original["model.".len()..].replace('.', ""))
}

/// Whether `path` is a safetensors file whose header names the student format (the
/// `student` module's `FORMAT`, which this layer below it does not import).
fn is_student_header(path: &Path) -> bool {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut n = [0u8; 8];
    if f.read_exact(&mut n).is_err() {
        return false;
    }
    let n = u64::from_le_bytes(n).min(1 << 20) as usize;
    let mut header = vec![0u8; n];
    f.read_exact(&mut header).is_ok()
        && String::from_utf8_lossy(&header).contains("\"stablekeypoints-student/")
}

#[cfg(test)]
mod tests {
    use super::layout::*;
    use super::*;

    #[test]
    fn names_map_both_ways() {
        let up_cross = [false, true, true, true];
        let t = unet_table(4, 2, &up_cross);
        for (theirs, ours) in [
            ("input_blocks.0.0.weight", "conv_in.weight"),
            ("time_embed.2.bias", "time_embedding.linear_2.bias"),
            (
                "input_blocks.1.0.in_layers.0.weight",
                "down_blocks.0.resnets.0.norm1.weight",
            ),
            (
                "input_blocks.2.1.proj_in.weight",
                "down_blocks.0.attentions.1.proj_in.weight",
            ),
            (
                "input_blocks.3.0.op.bias",
                "down_blocks.0.downsamplers.0.conv.bias",
            ),
            (
                "input_blocks.4.0.skip_connection.weight",
                "down_blocks.1.resnets.0.conv_shortcut.weight",
            ),
            (
                "middle_block.2.emb_layers.1.weight",
                "mid_block.resnets.1.time_emb_proj.weight",
            ),
            (
                "middle_block.1.transformer_blocks.0.attn2.to_out.0.weight",
                "mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0.weight",
            ),
            (
                "output_blocks.2.1.conv.weight",
                "up_blocks.0.upsamplers.0.conv.weight",
            ),
            (
                "output_blocks.5.2.conv.weight",
                "up_blocks.1.upsamplers.0.conv.weight",
            ),
            (
                "output_blocks.5.1.norm.weight",
                "up_blocks.1.attentions.2.norm.weight",
            ),
            (
                "output_blocks.11.0.out_layers.3.bias",
                "up_blocks.3.resnets.2.conv2.bias",
            ),
            ("out.0.weight", "conv_norm_out.weight"),
        ] {
            assert_eq!(rename(&t, theirs, true).as_deref(), Some(ours), "{theirs}");
            assert_eq!(rename(&t, ours, false).as_deref(), Some(theirs), "{ours}");
        }
        let v = vae_table(4, 2);
        for (theirs, ours) in [
            (
                "encoder.down.1.block.0.nin_shortcut.weight",
                "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
            ),
            (
                "encoder.down.0.downsample.conv.weight",
                "encoder.down_blocks.0.downsamplers.0.conv.weight",
            ),
            (
                "encoder.mid.attn_1.proj_out.weight",
                "encoder.mid_block.attentions.0.to_out.0.weight",
            ),
            (
                "encoder.mid.attn_1.norm.bias",
                "encoder.mid_block.attentions.0.group_norm.bias",
            ),
            ("encoder.norm_out.weight", "encoder.conv_norm_out.weight"),
            (
                "decoder.up.3.block.2.conv1.weight",
                "decoder.up_blocks.0.resnets.2.conv1.weight",
            ),
            (
                "decoder.up.1.upsample.conv.weight",
                "decoder.up_blocks.2.upsamplers.0.conv.weight",
            ),
            ("post_quant_conv.bias", "post_quant_conv.bias"),
        ] {
            assert_eq!(rename(&v, theirs, true).as_deref(), Some(ours), "{theirs}");
            assert_eq!(rename(&v, ours, false).as_deref(), Some(theirs), "{ours}");
        }
        assert_eq!(
            rename(&t, "label_emb.0.2.bias", true).as_deref(),
            Some("add_embedding.linear_2.bias")
        );
        assert_eq!(rename(&t, "label_emb.0.weight", true), None);
        assert_eq!(
            ema_name("model.diffusion_model.input_blocks.0.0.weight"),
            "model_ema.diffusion_modelinput_blocks00weight"
        );
    }

    /// The architecture read off the committed tiny SDXL `.ckpt` (written by PyTorch, read
    /// back by diffusers) is its diffusers folder's, up to the conventions shapes do not
    /// show (group norms, heads, sample size).
    #[test]
    fn sdxl_architecture_is_read_off_the_shapes() {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let file = data.join("forms/tiny-sdxl/tiny-sdxl.ckpt");
        let (_, shapes) = open_checkpoint(&file).unwrap();
        let layout = unet_layout(&file, &shapes).unwrap();
        let got = unet_json(&file, &shapes, &layout).unwrap();
        let want: Value = serde_json::from_slice(
            &std::fs::read(data.join("tiny-sdxl/unet/config.json")).unwrap(),
        )
        .unwrap();
        for key in [
            "block_out_channels",
            "cross_attention_dim",
            "down_block_types",
            "up_block_types",
            "transformer_layers_per_block",
            "layers_per_block",
            "use_linear_projection",
            "addition_embed_type",
            "addition_time_embed_dim",
            "projection_class_embeddings_input_dim",
            "in_channels",
            "out_channels",
        ] {
            assert_eq!(got[key], want[key], "{key}");
        }
        assert_eq!(got["attention_head_dim"], serde_json::json!([1, 1, 1]));
        let (vae, _, _) = arch::vae_json(&file, &shapes, VAE, true).unwrap().unwrap();
        assert_eq!(vae["scaling_factor"], serde_json::json!(VAE_SCALE_XL));
        // A refiner's added embedding (the context width + 5 time ids) is refused by name.
        let mut refiner = shapes.clone();
        let to_k = format!("{UNET}middle_block.1.transformer_blocks.0.attn2.to_k.weight");
        refiner.insert(to_k, vec![32, 1280]);
        refiner.insert(
            format!("{UNET}label_emb.0.0.weight"),
            vec![64, 1280 + 5 * 256],
        );
        let e = unet_json(&file, &refiner, &layout).unwrap_err().to_string();
        assert!(
            e.contains("SDXL refiner") && e.contains("tiny-sdxl.ckpt"),
            "{e}"
        );
        let mut class = shapes.clone();
        class.retain(|k, _| !k.contains("label_emb"));
        class.insert(format!("{UNET}label_emb.0.weight"), vec![10, 64]);
        let e = unet_json(&file, &class, &layout).unwrap_err().to_string();
        assert!(e.contains("label_emb.0.weight"), "{e}");
    }
}
