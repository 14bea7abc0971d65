//! Writing a diffusers folder as one file in the original layout (for tests and tools).

use super::layout::{is_vae_projection, rename, unet_table, vae_table};
use super::{ema_name, EMA, UNET, VAE};
use crate::error::{Error, Result};
use crate::model::config::{UNetConfig, UpBlockType, VaeConfig};
use std::collections::BTreeMap;
use std::path::Path;

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
        .map(|t| *t == UpBlockType::CrossAttn)
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
        let files = crate::model::weights_files(dir, part)?;
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
