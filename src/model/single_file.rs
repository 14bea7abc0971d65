//! Single-file checkpoints in the original Stable Diffusion layout (the form of
//! `v1-5-pruned-emaonly.safetensors` and of the `.ckpt` files most SD tools pass around):
//! the UNet under `model.diffusion_model.*`, the VAE under `first_stage_model.*`, the text
//! encoder under `cond_stage_model.*` (not used), and, in training checkpoints, EMA copies
//! of the UNet under `model_ema.*` with the dots of their names removed.
//!
//! The architecture is read off the tensors' names and shapes and becomes the
//! [`UNetConfig`] / [`VaeConfig`] the diffusers folder's `config.json` would give; the
//! tensors are then read under our (diffusers) names through a table of corresponding
//! module prefixes, the same table in both directions ([`to_original`] writes the layout
//! back, for tests and tools). The facts of the layout were checked against diffusers'
//! `convert_from_ckpt.py` (v0.30); the code is ours.

use super::config::{UNetConfig, VaeConfig};
use super::weights::{open_checkpoint, Backend, Renamed};
use crate::error::{Error, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// Key prefix of the UNet.
pub const UNET: &str = "model.diffusion_model.";
/// Key prefix of the VAE.
pub const VAE: &str = "first_stage_model.";
/// Key prefix of the UNet's EMA copy (names with their dots removed).
pub const EMA: &str = "model_ema.";

/// How a block's inner module names differ between the two layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Same,
    UnetResnet,
    VaeResnet,
    VaeAttention,
}

const UNET_RESNET: &[(&str, &str)] = &[
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
];
const VAE_RESNET: &[(&str, &str)] = &[("conv_shortcut", "nin_shortcut")];
const VAE_ATTENTION: &[(&str, &str)] = &[
    ("group_norm", "norm"),
    ("to_q", "q"),
    ("to_k", "k"),
    ("to_v", "v"),
    ("to_out.0", "proj_out"),
];

impl Kind {
    fn inner(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Kind::Same => &[],
            Kind::UnetResnet => UNET_RESNET,
            Kind::VaeResnet => VAE_RESNET,
            Kind::VaeAttention => VAE_ATTENTION,
        }
    }
}

/// Corresponding module prefixes: (ours, the original's, how their insides differ).
type Table = Vec<(String, String, Kind)>;

/// The UNet's table for `n` blocks of `layers` resnets; `up_cross[i]`: up block `i` has
/// attentions (its upsampler then comes third in its last layer, else second).
fn unet_table(n: usize, layers: usize, up_cross: &[bool]) -> Table {
    let mut t: Table = Vec::new();
    let mut add = |ours: String, theirs: String, kind| t.push((ours, theirs, kind));
    add("conv_in".into(), "input_blocks.0.0".into(), Kind::Same);
    add(
        "time_embedding.linear_1".into(),
        "time_embed.0".into(),
        Kind::Same,
    );
    add(
        "time_embedding.linear_2".into(),
        "time_embed.2".into(),
        Kind::Same,
    );
    let per = layers + 1;
    for i in 0..n {
        for j in 0..layers {
            let k = 1 + i * per + j;
            add(
                format!("down_blocks.{i}.resnets.{j}"),
                format!("input_blocks.{k}.0"),
                Kind::UnetResnet,
            );
            add(
                format!("down_blocks.{i}.attentions.{j}"),
                format!("input_blocks.{k}.1"),
                Kind::Same,
            );
        }
        if i + 1 < n {
            add(
                format!("down_blocks.{i}.downsamplers.0.conv"),
                format!("input_blocks.{}.0.op", 1 + i * per + layers),
                Kind::Same,
            );
        }
    }
    add(
        "mid_block.resnets.0".into(),
        "middle_block.0".into(),
        Kind::UnetResnet,
    );
    add(
        "mid_block.attentions.0".into(),
        "middle_block.1".into(),
        Kind::Same,
    );
    add(
        "mid_block.resnets.1".into(),
        "middle_block.2".into(),
        Kind::UnetResnet,
    );
    for i in 0..n {
        for j in 0..per {
            let k = i * per + j;
            add(
                format!("up_blocks.{i}.resnets.{j}"),
                format!("output_blocks.{k}.0"),
                Kind::UnetResnet,
            );
            add(
                format!("up_blocks.{i}.attentions.{j}"),
                format!("output_blocks.{k}.1"),
                Kind::Same,
            );
        }
        if i + 1 < n {
            let at = if up_cross.get(i).copied().unwrap_or(false) {
                2
            } else {
                1
            };
            add(
                format!("up_blocks.{i}.upsamplers.0.conv"),
                format!("output_blocks.{}.{at}.conv", i * per + layers),
                Kind::Same,
            );
        }
    }
    add("conv_norm_out".into(), "out.0".into(), Kind::Same);
    add("conv_out".into(), "out.2".into(), Kind::Same);
    t
}

/// The VAE's table (encoder, decoder and the two quantisation convolutions) for `n` blocks
/// of `layers` encoder resnets (the decoder has one more per block, in reverse order).
fn vae_table(n: usize, layers: usize) -> Table {
    let mut t: Table = Vec::new();
    let mut add = |ours: String, theirs: String, kind| t.push((ours, theirs, kind));
    for part in ["encoder", "decoder"] {
        add(
            format!("{part}.conv_in"),
            format!("{part}.conv_in"),
            Kind::Same,
        );
        add(
            format!("{part}.mid_block.resnets.0"),
            format!("{part}.mid.block_1"),
            Kind::VaeResnet,
        );
        add(
            format!("{part}.mid_block.attentions.0"),
            format!("{part}.mid.attn_1"),
            Kind::VaeAttention,
        );
        add(
            format!("{part}.mid_block.resnets.1"),
            format!("{part}.mid.block_2"),
            Kind::VaeResnet,
        );
        add(
            format!("{part}.conv_norm_out"),
            format!("{part}.norm_out"),
            Kind::Same,
        );
        add(
            format!("{part}.conv_out"),
            format!("{part}.conv_out"),
            Kind::Same,
        );
    }
    for i in 0..n {
        for j in 0..layers {
            add(
                format!("encoder.down_blocks.{i}.resnets.{j}"),
                format!("encoder.down.{i}.block.{j}"),
                Kind::VaeResnet,
            );
        }
        if i + 1 < n {
            add(
                format!("encoder.down_blocks.{i}.downsamplers.0.conv"),
                format!("encoder.down.{i}.downsample.conv"),
                Kind::Same,
            );
        }
        let r = n - 1 - i;
        for j in 0..=layers {
            add(
                format!("decoder.up_blocks.{i}.resnets.{j}"),
                format!("decoder.up.{r}.block.{j}"),
                Kind::VaeResnet,
            );
        }
        if i + 1 < n {
            add(
                format!("decoder.up_blocks.{i}.upsamplers.0.conv"),
                format!("decoder.up.{r}.upsample.conv"),
                Kind::Same,
            );
        }
    }
    for q in ["quant_conv", "post_quant_conv"] {
        add(q.into(), q.into(), Kind::Same);
    }
    t
}

/// `module.param` -> (`module`, `param`).
fn split_param(key: &str) -> Option<(&str, &str)> {
    key.rsplit_once('.')
}

/// Renames `key` (without its part prefix) from one layout to the other through `table`
/// (`forward`: original -> ours). `None`: no module of the table holds it.
fn rename(table: &Table, key: &str, forward: bool) -> Option<String> {
    let (module, param) = split_param(key)?;
    let (from, to, kind) = table
        .iter()
        .map(|(ours, theirs, k)| {
            if forward {
                (theirs, ours, *k)
            } else {
                (ours, theirs, *k)
            }
        })
        .filter(|(from, _, _)| {
            module == from.as_str()
                || (module.starts_with(from.as_str()) && module[from.len()..].starts_with('.'))
        })
        .max_by_key(|(from, _, _)| from.len())?;
    let inner = module[from.len()..].trim_start_matches('.');
    let inner = kind
        .inner()
        .iter()
        .find_map(|(ours, theirs)| {
            let (a, b) = if forward {
                (theirs, ours)
            } else {
                (ours, theirs)
            };
            (inner == *a).then_some(*b)
        })
        .unwrap_or(inner);
    Some(if inner.is_empty() {
        format!("{to}.{param}")
    } else {
        format!("{to}.{inner}.{param}")
    })
}

/// Whether `ours` is a VAE attention projection, stored as a 1x1 convolution in the
/// original layout and as a linear weight in diffusers'.
fn is_vae_projection(ours: &str) -> bool {
    ours.contains("mid_block.attentions.0.to_") && ours.ends_with(".weight")
}

/// The shape diffusers gives a tensor (VAE attention projections as matrices), so that the
/// same weights have the same identity in either layout.
pub(crate) fn diffusers_shape(ours: &str, shape: &[usize]) -> Vec<usize> {
    match shape {
        [a, b, 1, 1] if is_vae_projection(ours) => vec![*a, *b],
        s => s.to_vec(),
    }
}

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

/// `prefix{i}.` for the highest `i` present, plus one (0 when none is).
fn count(shapes: &BTreeMap<String, Vec<usize>>, prefix: &str) -> usize {
    shapes
        .range(prefix.to_string()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .filter_map(|(k, _)| k[prefix.len()..].split('.').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |m| m + 1)
}

impl Checkpoint {
    /// Opens `path` (safetensors or a pickle), refusing what this engine does not run.
    /// `ema`: read the UNet's EMA copy when the file has one.
    pub fn open(path: &Path, ema: bool) -> Result<Self> {
        let (backend, shapes) = open_checkpoint(path)?;
        Self::from_shapes(path, backend, &shapes, ema)
    }

    fn from_shapes(
        path: &Path,
        backend: Backend,
        shapes: &BTreeMap<String, Vec<usize>>,
        ema: bool,
    ) -> Result<Self> {
        let bad = |m: String| Error::weights(path, m);
        let has = |k: &str| shapes.contains_key(k);
        let shape = |k: &str| -> Result<&Vec<usize>> {
            shapes
                .get(k)
                .ok_or_else(|| bad(format!("has no tensor `{k}` (an incomplete checkpoint)")))
        };
        let sdxl: Vec<&str> = ["conditioner.embedders.", "model.diffusion_model.label_emb."]
            .into_iter()
            .filter(|p| shapes.keys().any(|k| k.starts_with(p)))
            .collect();
        if !sdxl.is_empty() {
            let found: Vec<String> = sdxl.iter().map(|p| format!("{p}*")).collect();
            return Err(bad(format!(
                "is an SDXL checkpoint ({} found); SDXL is not supported yet",
                found.join(", ")
            )));
        }
        let conv_in = format!("{UNET}input_blocks.0.0.weight");
        if !has(&conv_in) {
            let example = shapes
                .keys()
                .next()
                .map_or("none".to_string(), |k| k.clone());
            if is_student_header(path) {
                return Err(bad(
                    "is a student file of `stablekeypoints distill`, not a diffusion model \
                     (here a diffusers folder or a Stable Diffusion checkpoint is needed)"
                        .into(),
                ));
            }
            return Err(bad(format!(
                "is not a Stable Diffusion checkpoint in the original layout (no `{conv_in}`; \
                 its first tensor is `{example}`); diffusers folders go by their folder"
            )));
        }
        let in_channels = shape(&conv_in)?.get(1).copied().unwrap_or(0);
        if in_channels != 4 {
            let what = if in_channels == 9 {
                " (an inpainting UNet)"
            } else {
                ""
            };
            return Err(bad(format!(
                "the UNet takes {in_channels} input channels{what}; only 4-channel text-to-image UNets are supported"
            )));
        }

        // UNet architecture.
        let n_input = count(shapes, &format!("{UNET}input_blocks."));
        let first_op = (1..n_input).find(|k| has(&format!("{UNET}input_blocks.{k}.0.op.weight")));
        let layers = first_op.map_or(n_input.saturating_sub(1), |k| k - 1);
        if layers == 0 || !n_input.is_multiple_of(layers + 1) {
            return Err(bad(format!(
                "its UNet has {n_input} input blocks, not a layout of equal down blocks"
            )));
        }
        let n = n_input / (layers + 1);
        let per = layers + 1;
        let mut channels = Vec::with_capacity(n);
        let mut down_cross = Vec::with_capacity(n);
        let mut up_cross = Vec::with_capacity(n);
        for i in 0..n {
            let k = 1 + i * per;
            channels.push(shape(&format!("{UNET}input_blocks.{k}.0.out_layers.3.weight"))?[0]);
            down_cross.push(has(&format!("{UNET}input_blocks.{k}.1.proj_in.weight")));
            up_cross.push(has(&format!(
                "{UNET}output_blocks.{}.1.proj_in.weight",
                i * per
            )));
        }
        let mid = format!("{UNET}middle_block.1.");
        let proj_in = shape(&format!("{mid}proj_in.weight"))?;
        let linear = proj_in.len() == 2;
        let context = shape(&format!("{mid}transformer_blocks.0.attn2.to_k.weight"))?[1];
        let depth = shapes
            .keys()
            .filter_map(|k| {
                let (_, rest) = k.split_once(".transformer_blocks.")?;
                rest.split('.').next()?.parse::<usize>().ok()
            })
            .max()
            .map_or(1, |d| d + 1);
        if depth > 1 {
            return Err(bad(format!(
                "its UNet has transformer depth {depth} (an SDXL-style UNet); SDXL is not supported yet"
            )));
        }
        // SD 1.x: 8 heads everywhere; SD 2.x (linear projections): heads of width 64.
        let heads: Vec<usize> = if linear {
            channels.iter().map(|c| (c / 64).max(1)).collect()
        } else {
            vec![8; n]
        };
        let down_types: Vec<&str> = down_cross
            .iter()
            .map(|&c| {
                if c {
                    "CrossAttnDownBlock2D"
                } else {
                    "DownBlock2D"
                }
            })
            .collect();
        let up_types: Vec<&str> = up_cross
            .iter()
            .map(|&c| if c { "CrossAttnUpBlock2D" } else { "UpBlock2D" })
            .collect();
        let unet_json = json!({
            "_class_name": "UNet2DConditionModel",
            "act_fn": "silu",
            "attention_head_dim": heads,
            "block_out_channels": channels,
            "cross_attention_dim": context,
            "down_block_types": down_types,
            "downsample_padding": 1,
            "flip_sin_to_cos": true,
            "freq_shift": 0,
            "in_channels": in_channels,
            "layers_per_block": layers,
            "norm_eps": 1e-5,
            "norm_num_groups": 32,
            "out_channels": shape(&format!("{UNET}out.2.weight"))?[0],
            "sample_size": 64,
            "up_block_types": up_types,
            "use_linear_projection": linear,
        });
        let unet_config =
            UNetConfig::from_map(path, unet_json.as_object().expect("a JSON object"))?;

        let use_ema = ema && has(&ema_name(&conv_in));
        let table = unet_table(n, layers, &up_cross);
        let mut entries = Vec::new();
        for (k, s) in shapes.range(UNET.to_string()..) {
            let Some(rest) = k.strip_prefix(UNET) else {
                break;
            };
            let ours = rename(&table, rest, true).ok_or_else(|| {
                bad(format!(
                    "`{k}` is not a tensor of the SD 1.x/2.x UNet layout"
                ))
            })?;
            let file = if use_ema {
                let e = ema_name(k);
                if !has(&e) {
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
        let unet = Part {
            entries,
            backend: backend.clone(),
        };
        let vae = vae_part(path, backend, shapes, VAE)?;
        Ok(Self {
            unet,
            unet_config,
            unet_json,
            vae,
        })
    }
}

/// The VAE under `prefix` in a file (`first_stage_model.` in a whole checkpoint, nothing in
/// a VAE file such as `vae-ft-mse-840000-ema-pruned.safetensors`). `None`: it has none.
fn vae_part(
    path: &Path,
    backend: Backend,
    shapes: &BTreeMap<String, Vec<usize>>,
    prefix: &str,
) -> Result<Option<(Part, VaeConfig, Value)>> {
    let bad = |m: String| Error::weights(path, m);
    let conv_in = format!("{prefix}encoder.conv_in.weight");
    let Some(cin) = shapes.get(&conv_in) else {
        return Ok(None);
    };
    let shape = |k: String| -> Result<&Vec<usize>> {
        shapes
            .get(&k)
            .ok_or_else(|| bad(format!("has no tensor `{k}` (an incomplete VAE)")))
    };
    let n = count(shapes, &format!("{prefix}encoder.down."));
    let layers = count(shapes, &format!("{prefix}encoder.down.0.block."));
    if n == 0 || layers == 0 {
        return Err(bad("its VAE has no encoder blocks".into()));
    }
    let channels = (0..n)
        .map(|i| Ok(shape(format!("{prefix}encoder.down.{i}.block.0.conv1.weight"))?[0]))
        .collect::<Result<Vec<usize>>>()?;
    let latent = shape(format!("{prefix}encoder.conv_out.weight"))?[0] / 2;
    let json = json!({
        "_class_name": "AutoencoderKL",
        "act_fn": "silu",
        "block_out_channels": channels,
        "down_block_types": vec!["DownEncoderBlock2D"; n],
        "in_channels": cin.get(1).copied().unwrap_or(0),
        "latent_channels": latent,
        "layers_per_block": layers,
        "norm_num_groups": 32,
        "sample_size": 512,
        "scaling_factor": 0.18215,
        "mid_block_add_attention": shapes.contains_key(&format!("{prefix}encoder.mid.attn_1.q.weight")),
        "use_quant_conv": shapes.contains_key(&format!("{prefix}quant_conv.weight")),
    });
    let config = VaeConfig::from_map(path, json.as_object().expect("a JSON object"))?;
    let table = vae_table(n, layers);
    let mut entries = Vec::new();
    for (k, s) in shapes.range(prefix.to_string()..) {
        let Some(rest) = k.strip_prefix(prefix) else {
            break;
        };
        if prefix.is_empty() && !is_vae_key(rest) {
            continue;
        }
        let ours = rename(&table, rest, true)
            .ok_or_else(|| bad(format!("`{k}` is not a tensor of the SD VAE layout")))?;
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
pub(crate) fn open_vae(path: &Path) -> Result<(Part, VaeConfig, Value)> {
    let (backend, shapes) = open_checkpoint(path)?;
    for prefix in [VAE, ""] {
        if let Some(v) = vae_part(path, backend.clone(), &shapes, prefix)? {
            return Ok(v);
        }
    }
    Err(Error::weights(
        path,
        "has no VAE in the original layout (no `first_stage_model.encoder.*` nor `encoder.conv_in.weight`)",
    ))
}

/// Names and shapes of a diffusers UNet and VAE in the original single-file layout (the
/// inverse of what [`Checkpoint::open`] reads): `unet` and `vae` map our names to tensors'
/// shapes; the result maps each of our names to its name in a single file. VAE attention
/// projections must be stored as `[c, c, 1, 1]` there. Used to write such files.
pub fn to_original(
    unet: &UNetConfig,
    unet_names: &[String],
    vae: &VaeConfig,
    vae_names: &[String],
) -> Result<Vec<(String, String)>> {
    let n = unet.block_out_channels.len();
    let layers = unet.layers_per_block[0];
    if unet.layers_per_block.iter().any(|&l| l != layers) {
        return Err(Error::Invalid(
            "the original layout has one layers_per_block for every block".into(),
        ));
    }
    let up_cross: Vec<bool> = unet
        .up_block_types
        .iter()
        .map(|t| *t == super::config::UpBlockType::CrossAttn)
        .collect();
    let ut = unet_table(n, layers, &up_cross);
    let vt = vae_table(vae.block_out_channels.len(), vae.layers_per_block);
    let mut out = Vec::new();
    for (names, table, prefix) in [(unet_names, &ut, UNET), (vae_names, &vt, VAE)] {
        for name in names {
            let theirs = rename(table, name, false)
                .ok_or_else(|| Error::Invalid(format!("no original name for `{name}`")))?;
            out.push((name.clone(), format!("{prefix}{theirs}")));
        }
    }
    Ok(out)
}

/// Writes the diffusers folder `dir` (safetensors parts) as one file in the original
/// layout at `out`, with a stand-in text encoder tensor and the schedule's `betas` as real
/// files have them. `ema`: also store EMA copies (`model_ema.*`, with `decay` and
/// `num_updates`) holding the folder's UNet weights, the plain UNet weights then being
/// those halved, so that the two are different models. For tests and tools.
pub fn write_original(dir: &Path, out: &Path, ema: bool) -> Result<()> {
    use candle_core::{Device, Tensor};
    let load = |part: &str| -> Result<(BTreeMap<String, Tensor>, std::path::PathBuf)> {
        let files = super::weights_files(dir, part)?;
        let [file] = files.as_slice() else {
            return Err(Error::Invalid(format!(
                "{}: write_original takes one safetensors file per part",
                dir.display()
            )));
        };
        let t = candle_core::safetensors::load(file, &Device::Cpu)
            .map_err(|e| Error::weights(file, e))?;
        Ok((t.into_iter().collect(), dir.join(part).join("config.json")))
    };
    let (unet, unet_config) = load("unet")?;
    let (vae, vae_config) = load("vae")?;
    let unet_config = UNetConfig::from_file(&unet_config)?;
    let vae_config = VaeConfig::from_file(&vae_config)?;
    let names = to_original(
        &unet_config,
        &unet.keys().cloned().collect::<Vec<_>>(),
        &vae_config,
        &vae.keys().cloned().collect::<Vec<_>>(),
    )?;
    let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
    let err = |e: candle_core::Error| Error::weights(out, e);
    for (ours, theirs) in names {
        if let Some(t) = unet.get(&ours) {
            if ema {
                tensors.insert(ema_name(&theirs), t.clone());
                tensors.insert(theirs, (t * 0.5).map_err(err)?);
            } else {
                tensors.insert(theirs, t.clone());
            }
        } else {
            let t = &vae[&ours];
            let t = match t.dims() {
                &[a, b] if is_vae_projection(&ours) => t.reshape((a, b, 1, 1)).map_err(err)?,
                _ => t.clone(),
            };
            tensors.insert(theirs, t);
        }
    }
    let extra = |v: Vec<f32>| Tensor::new(v, &Device::Cpu).map_err(err);
    tensors.insert(
        "cond_stage_model.transformer.text_model.final_layer_norm.weight".into(),
        extra(vec![1.0; 4])?,
    );
    tensors.insert("betas".into(), extra(vec![0.00085, 0.012])?);
    if ema {
        tensors.insert(format!("{EMA}decay"), extra(vec![0.9999])?);
        tensors.insert(format!("{EMA}num_updates"), extra(vec![1000.0])?);
    }
    let map: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
    candle_core::safetensors::save(&map, out).map_err(err)
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
        assert_eq!(rename(&t, "label_emb.0.0.weight", true), None);
        assert_eq!(
            ema_name("model.diffusion_model.input_blocks.0.0.weight"),
            "model_ema.diffusion_modelinput_blocks00weight"
        );
    }
}
