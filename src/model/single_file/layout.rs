//! The correspondence of module names between the original Stable Diffusion layout and
//! diffusers', as tables of module prefixes used in both directions.

/// How a block's inner module names differ between the two layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
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
pub(super) type Table = Vec<(String, String, Kind)>;

fn push(t: &mut Table, ours: impl Into<String>, theirs: impl Into<String>, kind: Kind) {
    t.push((ours.into(), theirs.into(), kind));
}

/// The UNet's table for `n` blocks of `layers` resnets; `up_cross[i]`: up block `i` has
/// attentions (its upsampler then comes third in its last layer, else second). SDXL's
/// added embedding is `label_emb.0` there.
pub(super) fn unet_table(n: usize, layers: usize, up_cross: &[bool]) -> Table {
    let mut t: Table = Vec::new();
    for (ours, theirs) in [
        ("conv_in", "input_blocks.0.0"),
        ("time_embedding.linear_1", "time_embed.0"),
        ("time_embedding.linear_2", "time_embed.2"),
        ("add_embedding.linear_1", "label_emb.0.0"),
        ("add_embedding.linear_2", "label_emb.0.2"),
        ("mid_block.attentions.0", "middle_block.1"),
        ("conv_norm_out", "out.0"),
        ("conv_out", "out.2"),
    ] {
        push(&mut t, ours, theirs, Kind::Same);
    }
    push(
        &mut t,
        "mid_block.resnets.0",
        "middle_block.0",
        Kind::UnetResnet,
    );
    push(
        &mut t,
        "mid_block.resnets.1",
        "middle_block.2",
        Kind::UnetResnet,
    );
    for i in 0..n {
        unet_down(&mut t, i, n, layers);
        unet_up(
            &mut t,
            i,
            n,
            layers,
            up_cross.get(i).copied().unwrap_or(false),
        );
    }
    t
}

/// Down block `i`: `input_blocks.{1 + i (layers + 1) + j}`, its downsampler last.
fn unet_down(t: &mut Table, i: usize, n: usize, layers: usize) {
    let per = layers + 1;
    for j in 0..layers {
        let k = 1 + i * per + j;
        let (ours, theirs) = (format!("down_blocks.{i}"), format!("input_blocks.{k}"));
        resnet_and_attention(t, &ours, j, &theirs);
    }
    if i + 1 < n {
        push(
            t,
            format!("down_blocks.{i}.downsamplers.0.conv"),
            format!("input_blocks.{}.0.op", 1 + i * per + layers),
            Kind::Same,
        );
    }
}

/// Layer `j` of a block (`ours`): its resnet and attention, the original's `theirs.0`, `.1`.
fn resnet_and_attention(t: &mut Table, ours: &str, j: usize, theirs: &str) {
    push(
        t,
        format!("{ours}.resnets.{j}"),
        format!("{theirs}.0"),
        Kind::UnetResnet,
    );
    push(
        t,
        format!("{ours}.attentions.{j}"),
        format!("{theirs}.1"),
        Kind::Same,
    );
}

/// Up block `i`: `output_blocks.{i (layers + 1) + j}`, its upsampler in the last one.
fn unet_up(t: &mut Table, i: usize, n: usize, layers: usize, cross: bool) {
    let per = layers + 1;
    for j in 0..per {
        let k = i * per + j;
        let (ours, theirs) = (format!("up_blocks.{i}"), format!("output_blocks.{k}"));
        resnet_and_attention(t, &ours, j, &theirs);
    }
    if i + 1 < n {
        let at = if cross { 2 } else { 1 };
        push(
            t,
            format!("up_blocks.{i}.upsamplers.0.conv"),
            format!("output_blocks.{}.{at}.conv", i * per + layers),
            Kind::Same,
        );
    }
}

/// The VAE's table (encoder, decoder and the two quantisation convolutions) for `n` blocks
/// of `layers` encoder resnets (the decoder has one more per block, in reverse order).
pub(super) fn vae_table(n: usize, layers: usize) -> Table {
    let mut t: Table = Vec::new();
    for part in ["encoder", "decoder"] {
        for (ours, theirs, kind) in [
            ("conv_in", "conv_in", Kind::Same),
            ("mid_block.resnets.0", "mid.block_1", Kind::VaeResnet),
            ("mid_block.attentions.0", "mid.attn_1", Kind::VaeAttention),
            ("mid_block.resnets.1", "mid.block_2", Kind::VaeResnet),
            ("conv_norm_out", "norm_out", Kind::Same),
            ("conv_out", "conv_out", Kind::Same),
        ] {
            push(
                &mut t,
                format!("{part}.{ours}"),
                format!("{part}.{theirs}"),
                kind,
            );
        }
    }
    for i in 0..n {
        for j in 0..layers {
            push(
                &mut t,
                format!("encoder.down_blocks.{i}.resnets.{j}"),
                format!("encoder.down.{i}.block.{j}"),
                Kind::VaeResnet,
            );
        }
        let r = n - 1 - i;
        for j in 0..=layers {
            push(
                &mut t,
                format!("decoder.up_blocks.{i}.resnets.{j}"),
                format!("decoder.up.{r}.block.{j}"),
                Kind::VaeResnet,
            );
        }
        if i + 1 < n {
            push(
                &mut t,
                format!("encoder.down_blocks.{i}.downsamplers.0.conv"),
                format!("encoder.down.{i}.downsample.conv"),
                Kind::Same,
            );
            push(
                &mut t,
                format!("decoder.up_blocks.{i}.upsamplers.0.conv"),
                format!("decoder.up.{r}.upsample.conv"),
                Kind::Same,
            );
        }
    }
    for q in ["quant_conv", "post_quant_conv"] {
        push(&mut t, q, q, Kind::Same);
    }
    t
}

/// Renames `key` (without its part prefix) from one layout to the other through `table`
/// (`forward`: original -> ours). `None`: no module of the table holds it.
pub(super) fn rename(table: &Table, key: &str, forward: bool) -> Option<String> {
    let (module, param) = key.rsplit_once('.')?;
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
pub(super) fn is_vae_projection(ours: &str) -> bool {
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
