//! A single file's architecture, read off its tensors' names and shapes: the
//! `config.json` a diffusers folder of the same model would have. What shapes do not show
//! follows each family's convention: 32 groups in every group norm; 8 heads in SD 1.x,
//! heads 64 wide in SD 2.x and SDXL (linear projections); SDXL's time ids embedded 256
//! wide; a VAE scaling factor of 0.18215 (SDXL: 0.13025).

use super::{UNET, VAE_SCALE, VAE_SCALE_XL};
use crate::error::{Error, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// Tensor names and shapes of a file.
pub(super) type Shapes = BTreeMap<String, Vec<usize>>;

/// SDXL's `addition_time_embed_dim`, which its shapes do not show.
const XL_TIME_EMBED: usize = 256;

/// The UNet's block structure, as its original names number the blocks.
#[derive(Clone, Debug)]
pub(super) struct Layout {
    pub n: usize,
    pub layers: usize,
    pub up_cross: Vec<bool>,
}

/// `prefix{i}.` for the highest `i` present, plus one (0 when none is).
pub(super) fn count(shapes: &Shapes, prefix: &str) -> usize {
    shapes
        .range(prefix.to_string()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .filter_map(|(k, _)| k[prefix.len()..].split('.').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |m| m + 1)
}

fn shape<'a>(path: &Path, shapes: &'a Shapes, k: &str) -> Result<&'a Vec<usize>> {
    shapes.get(k).ok_or_else(|| {
        Error::weights(
            path,
            format!("has no tensor `{k}` (an incomplete checkpoint)"),
        )
    })
}

/// The UNet's block structure; refuses a file with no UNet or one with other inputs.
pub(super) fn unet_layout(path: &Path, shapes: &Shapes) -> Result<Layout> {
    let bad = |m: String| Error::weights(path, m);
    let has = |k: String| shapes.contains_key(&k);
    let conv_in = format!("{UNET}input_blocks.0.0.weight");
    let in_channels = shape(path, shapes, &conv_in)?.get(1).copied().unwrap_or(0);
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
    let n_input = count(shapes, &format!("{UNET}input_blocks."));
    let first_op = (1..n_input).find(|k| has(format!("{UNET}input_blocks.{k}.0.op.weight")));
    let layers = first_op.map_or(n_input.saturating_sub(1), |k| k - 1);
    if layers == 0 || !n_input.is_multiple_of(layers + 1) {
        return Err(bad(format!(
            "its UNet has {n_input} input blocks, not a layout of equal down blocks"
        )));
    }
    let n = n_input / (layers + 1);
    let up_cross = (0..n)
        .map(|i| {
            has(format!(
                "{UNET}output_blocks.{}.1.proj_in.weight",
                i * (layers + 1)
            ))
        })
        .collect();
    Ok(Layout {
        n,
        layers,
        up_cross,
    })
}

/// Transformer depth of every block (1 where a block has no attention): the down blocks'
/// as found, which the mid block and the up blocks (in reverse) must repeat, as diffusers'
/// `transformer_layers_per_block` describes them.
fn depths(path: &Path, shapes: &Shapes, l: &Layout, down_cross: &[bool]) -> Result<Vec<usize>> {
    let per = l.layers + 1;
    let depth = |module: String| count(shapes, &format!("{UNET}{module}.1.transformer_blocks."));
    let down: Vec<usize> = (0..l.n)
        .map(|i| {
            if down_cross[i] {
                depth(format!("input_blocks.{}", 1 + i * per))
            } else {
                1
            }
        })
        .collect();
    let mut found = vec![("middle_block".to_string(), l.n - 1)];
    for i in (0..l.n).filter(|&i| l.up_cross[i]) {
        found.push((format!("output_blocks.{}", i * per), l.n - 1 - i));
    }
    for (module, block) in found {
        let (want, got) = (down[block], depth(module.clone()));
        if got != want {
            return Err(Error::weights(
                path,
                format!(
                    "its UNet's `{module}` has transformer depth {got} but its down block {block} has {want}; \
                     diffusers' layout has one depth per block"
                ),
            ));
        }
    }
    Ok(down)
}

/// SDXL's added embedding (`label_emb.0`): (`addition_time_embed_dim`,
/// `projection_class_embeddings_input_dim`), or `None` without one. A refiner's (five time
/// ids) and other label embeddings are refused, naming the tensor.
fn text_time(path: &Path, shapes: &Shapes, context: usize) -> Result<Option<(usize, usize)>> {
    let bad = |m: String| Error::weights(path, m);
    let key = format!("{UNET}label_emb.0.0.weight");
    let Some(s) = shapes.get(&key) else {
        return match shapes.keys().find(|k| k.starts_with(&format!("{UNET}label_emb."))) {
            Some(k) => Err(bad(format!(
                "its UNet has a label embedding `{k}` other than SDXL's (label_emb.0.0, label_emb.0.2); \
                 that conditioning is not supported"
            ))),
            None => Ok(None),
        };
    };
    let p = s.get(1).copied().unwrap_or(0);
    let ids = 6 * XL_TIME_EMBED;
    if p <= ids {
        return Err(bad(format!(
            "`{key}` takes {p} inputs, not SDXL's pooled text embedding and 6 time ids of {XL_TIME_EMBED}"
        )));
    }
    if p - 5 * XL_TIME_EMBED == context {
        return Err(bad(format!(
            "`{key}` takes {p} inputs = the context width {context} + 5 time ids of {XL_TIME_EMBED}: \
             an SDXL refiner (aesthetic-score conditioning), which is not supported"
        )));
    }
    Ok(Some((XL_TIME_EMBED, p)))
}

/// The diffusers `unet/config.json` of the file's UNet.
pub(super) fn unet_json(path: &Path, shapes: &Shapes, l: &Layout) -> Result<Value> {
    let per = l.layers + 1;
    let has = |k: String| shapes.contains_key(&k);
    let mut channels = Vec::with_capacity(l.n);
    let mut down_cross = Vec::with_capacity(l.n);
    for i in 0..l.n {
        let k = 1 + i * per;
        let out = format!("{UNET}input_blocks.{k}.0.out_layers.3.weight");
        channels.push(shape(path, shapes, &out)?[0]);
        down_cross.push(has(format!("{UNET}input_blocks.{k}.1.proj_in.weight")));
    }
    let mid = format!("{UNET}middle_block.1.");
    let linear = shape(path, shapes, &format!("{mid}proj_in.weight"))?.len() == 2;
    let context = shape(
        path,
        shapes,
        &format!("{mid}transformer_blocks.0.attn2.to_k.weight"),
    )?[1];
    let depth = depths(path, shapes, l, &down_cross)?;
    let heads: Vec<usize> = if linear {
        channels.iter().map(|c| (c / 64).max(1)).collect()
    } else {
        vec![8; l.n]
    };
    let kind = |cross: bool, a: &'static str, b: &'static str| if cross { a } else { b };
    let down_types: Vec<&str> = down_cross
        .iter()
        .map(|&c| kind(c, "CrossAttnDownBlock2D", "DownBlock2D"))
        .collect();
    let up_types: Vec<&str> = l
        .up_cross
        .iter()
        .map(|&c| kind(c, "CrossAttnUpBlock2D", "UpBlock2D"))
        .collect();
    let text_time = text_time(path, shapes, context)?;
    let mut j = json!({
        "_class_name": "UNet2DConditionModel",
        "act_fn": "silu",
        "attention_head_dim": heads,
        "block_out_channels": channels,
        "cross_attention_dim": context,
        "down_block_types": down_types,
        "downsample_padding": 1,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": l.layers,
        "norm_eps": 1e-5,
        "norm_num_groups": 32,
        "out_channels": shape(path, shapes, &format!("{UNET}out.2.weight"))?[0],
        "sample_size": if text_time.is_some() { 128 } else { 64 },
        "transformer_layers_per_block": depth,
        "up_block_types": up_types,
        "use_linear_projection": linear,
    });
    if let Some((t, p)) = text_time {
        j["addition_embed_type"] = "text_time".into();
        j["addition_time_embed_dim"] = t.into();
        j["projection_class_embeddings_input_dim"] = p.into();
    }
    Ok(j)
}

/// The diffusers `vae/config.json` of the VAE under `prefix`, and its (blocks, layers).
/// `None`: the file has none. `xl`: the VAE of an SDXL checkpoint (another scaling factor).
pub(super) fn vae_json(
    path: &Path,
    shapes: &Shapes,
    prefix: &str,
    xl: bool,
) -> Result<Option<(Value, usize, usize)>> {
    let Some(cin) = shapes.get(&format!("{prefix}encoder.conv_in.weight")) else {
        return Ok(None);
    };
    let vae_shape = |k: String| -> Result<&Vec<usize>> {
        shapes
            .get(&k)
            .ok_or_else(|| Error::weights(path, format!("has no tensor `{k}` (an incomplete VAE)")))
    };
    let n = count(shapes, &format!("{prefix}encoder.down."));
    let layers = count(shapes, &format!("{prefix}encoder.down.0.block."));
    if n == 0 || layers == 0 {
        return Err(Error::weights(path, "its VAE has no encoder blocks"));
    }
    let channels = (0..n)
        .map(|i| Ok(vae_shape(format!("{prefix}encoder.down.{i}.block.0.conv1.weight"))?[0]))
        .collect::<Result<Vec<usize>>>()?;
    let latent = vae_shape(format!("{prefix}encoder.conv_out.weight"))?[0] / 2;
    let json = json!({
        "_class_name": "AutoencoderKL",
        "act_fn": "silu",
        "block_out_channels": channels,
        "down_block_types": vec!["DownEncoderBlock2D"; n],
        "in_channels": cin.get(1).copied().unwrap_or(0),
        "latent_channels": latent,
        "layers_per_block": layers,
        "norm_num_groups": 32,
        "sample_size": if xl { 1024 } else { 512 },
        "scaling_factor": if xl { VAE_SCALE_XL } else { VAE_SCALE },
        "mid_block_add_attention": shapes.contains_key(&format!("{prefix}encoder.mid.attn_1.q.weight")),
        "use_quant_conv": shapes.contains_key(&format!("{prefix}quant_conv.weight")),
    });
    Ok(Some((json, n, layers)))
}
