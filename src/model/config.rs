//! diffusers `config.json` -> architecture. Mirrors the fields of diffusers'
//! `UNet2DConditionModel` and `AutoencoderKL` that the SD 1.x / 2.x / SDXL family uses.

use crate::error::{Error, Result};
use serde::de::{self, DeserializeOwned, Deserializer};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// UNet architecture (diffusers `unet/config.json`).
#[derive(Clone, Debug, PartialEq)]
pub struct UNetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: Vec<usize>,
    pub transformer_layers_per_block: Vec<usize>,
    pub down_block_types: Vec<DownBlockType>,
    pub up_block_types: Vec<UpBlockType>,
    /// Heads per down block (diffusers calls this `attention_head_dim` unless
    /// `num_attention_heads` is given).
    pub num_attention_heads: Vec<usize>,
    pub cross_attention_dim: usize,
    pub use_linear_projection: bool,
    pub norm_num_groups: usize,
    pub norm_eps: f64,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub downsample_padding: usize,
    pub sample_size: usize,
    /// SDXL's added embedding (`addition_embed_type = "text_time"`); `None` for SD 1.x/2.x.
    pub text_time: Option<TextTime>,
}

/// SDXL's `text_time` added embedding: a pooled text embedding and six time ids (original
/// size, crop top-left, target size), each id through a sinusoidal embedding of
/// `time_embed_dim`, concatenated and fed to `add_embedding` (two linear layers) whose output
/// is added to the timestep embedding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextTime {
    /// `addition_time_embed_dim`: the width of each time id's embedding.
    pub time_embed_dim: usize,
    /// Width of the pooled text embedding: `projection_class_embeddings_input_dim` minus
    /// the six time ids' embeddings.
    pub pooled_dim: usize,
}

impl TextTime {
    /// Time ids SDXL base takes: (original H, W, crop top, crop left, target H, W).
    pub const TIME_IDS: usize = 6;

    /// `projection_class_embeddings_input_dim`.
    pub fn input_dim(&self) -> usize {
        self.pooled_dim + Self::TIME_IDS * self.time_embed_dim
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownBlockType {
    CrossAttn,
    Plain,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpBlockType {
    CrossAttn,
    Plain,
}

/// VAE architecture (diffusers `vae/config.json`); only the encoder is used.
#[derive(Clone, Debug, PartialEq)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub latent_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub norm_num_groups: usize,
    pub scaling_factor: f64,
    pub mid_block_add_attention: bool,
    pub use_quant_conv: bool,
    pub sample_size: usize,
}

/// Most blocks a config may list (SD has 4); keeps the down-sampling factors in range.
pub const MAX_BLOCKS: usize = 8;

/// Parses a JSON object held in memory; `path` only names it in errors.
fn parse_json(path: &Path, bytes: &[u8]) -> Result<Map<String, Value>> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::config(path, "top level is not a JSON object")),
        Err(e) => Err(Error::config(path, format!("not valid JSON: {e}"))),
    }
}

fn read_json(path: &Path) -> Result<Map<String, Value>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_json(path, &bytes)
}

/// Deserialises the raw form of a config, naming the field at fault in errors.
fn from_map<T: DeserializeOwned>(path: &Path, map: &Map<String, Value>) -> Result<T> {
    serde_path_to_error::deserialize(Value::Object(map.clone())).map_err(|e| {
        Error::config(
            path,
            format!("field `{}`: {}", e.path(), one_line(&e.inner().to_string())),
        )
    })
}

fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

fn field_err(path: &Path, key: &str, msg: impl std::fmt::Display) -> Error {
    Error::config(path, format!("field `{key}`: {msg}"))
}

fn as_usize(v: &Value) -> Option<usize> {
    v.as_u64().map(|x| x as usize).or_else(|| {
        // Some exporters write integers as floats (e.g. 8.0).
        v.as_f64()
            .filter(|f| *f >= 0.0 && f.fract() == 0.0)
            .map(|f| f as usize)
    })
}

/// A non-negative integer, also when written as a float (`8.0`).
#[derive(Clone, Copy, Debug)]
struct Count(usize);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        as_usize(&v)
            .map(Count)
            .ok_or_else(|| de::Error::custom(format!("expected a non-negative integer, got {v}")))
    }
}

/// `cross_attention_dim`: one integer (some models give one per block, which we do not run).
#[derive(Clone, Copy, Debug)]
struct ContextDim(usize);

impl<'de> Deserialize<'de> for ContextDim {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        as_usize(&v).map(ContextDim).ok_or_else(|| {
            de::Error::custom(format!(
                "expected one integer (per-block lists are not supported), got {v}"
            ))
        })
    }
}

/// A per-block value: one number for every block, or a list (its length is checked
/// against the block count afterwards).
#[derive(Clone, Debug)]
enum PerBlock {
    All(usize),
    Each(Vec<usize>),
}

impl<'de> Deserialize<'de> for PerBlock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Array(a) => a
                .iter()
                .map(as_usize)
                .collect::<Option<Vec<_>>>()
                .map(PerBlock::Each)
                .ok_or_else(|| de::Error::custom("expected a list of non-negative integers")),
            v => as_usize(&v).map(PerBlock::All).ok_or_else(|| {
                de::Error::custom(format!("expected an integer or a list, got {v}"))
            }),
        }
    }
}

impl PerBlock {
    fn resolve(self, path: &Path, key: &str, n: usize) -> Result<Vec<usize>> {
        match self {
            PerBlock::All(x) => Ok(vec![x; n]),
            PerBlock::Each(v) if v.len() == n => Ok(v),
            PerBlock::Each(v) => Err(field_err(
                path,
                key,
                format!("has {} entries but there are {n} blocks", v.len()),
            )),
        }
    }
}

/// `block_out_channels`: 1 to [`MAX_BLOCKS`] positive integers.
#[derive(Clone, Debug)]
struct Channels(Vec<usize>);

impl<'de> Deserialize<'de> for Channels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Array(a) if a.len() > MAX_BLOCKS => Err(de::Error::custom(format!(
                "has {} entries (at most {MAX_BLOCKS} are supported)",
                a.len()
            ))),
            Value::Array(a) if !a.is_empty() => a
                .iter()
                .map(|v| as_usize(v).filter(|&x| x > 0))
                .collect::<Option<Vec<_>>>()
                .map(Channels)
                .ok_or_else(|| de::Error::custom("expected positive integers")),
            v => Err(de::Error::custom(format!(
                "expected a non-empty list of integers, got {v}"
            ))),
        }
    }
}

/// Block type names; anything else is an architecture this code does not build.
fn block_type<'de, D: Deserializer<'de>, T>(
    d: D,
    known: &[(&str, T)],
) -> std::result::Result<T, D::Error>
where
    T: Copy,
{
    let s = String::deserialize(d)?;
    known
        .iter()
        .find(|(name, _)| *name == s)
        .map(|(_, t)| *t)
        .ok_or_else(|| de::Error::custom(format!("unsupported block type {s}")))
}

impl<'de> Deserialize<'de> for DownBlockType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        block_type(
            d,
            &[
                ("CrossAttnDownBlock2D", DownBlockType::CrossAttn),
                ("DownBlock2D", DownBlockType::Plain),
            ],
        )
    }
}

impl<'de> Deserialize<'de> for UpBlockType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        block_type(
            d,
            &[
                ("CrossAttnUpBlock2D", UpBlockType::CrossAttn),
                ("UpBlock2D", UpBlockType::Plain),
            ],
        )
    }
}

/// The VAE encoder's only block type.
#[derive(Clone, Copy, Debug)]
struct DownEncoderBlock;

impl<'de> Deserialize<'de> for DownEncoderBlock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        block_type(d, &[("DownEncoderBlock2D", DownEncoderBlock)])
    }
}

fn missing(path: &Path, key: &str) -> Error {
    field_err(path, key, "missing")
}

/// A string field that only one value of is supported.
fn only(path: &Path, key: &str, got: Option<&str>, want: &str) -> Result<()> {
    match got {
        Some(v) if v != want => Err(field_err(
            path,
            key,
            format!("unsupported value {v:?} (only {want:?})"),
        )),
        _ => Ok(()),
    }
}

/// Fields this implementation does not know must be absent or neutral; anything else
/// would silently change the architecture.
fn reject_unknown(
    path: &Path,
    rest: &BTreeMap<String, Value>,
    neutral: &[(&str, Value)],
) -> Result<()> {
    for (k, v) in rest {
        if k.starts_with('_') {
            continue;
        }
        let ok = match neutral.iter().find(|(n, _)| n == k) {
            Some((_, nv)) => v == nv || v.is_null(),
            None => v.is_null() || v == &Value::Bool(false),
        };
        if !ok {
            return Err(field_err(path, k, format!("unsupported value {v}")));
        }
    }
    Ok(())
}

/// `unet/config.json` as written; `None` = absent or null (diffusers' default).
#[derive(Deserialize)]
struct UNetJson {
    #[serde(rename = "_class_name")]
    class_name: Option<String>,
    block_out_channels: Option<Channels>,
    down_block_types: Option<Vec<DownBlockType>>,
    up_block_types: Option<Vec<UpBlockType>>,
    layers_per_block: Option<PerBlock>,
    transformer_layers_per_block: Option<PerBlock>,
    /// diffusers' naming quirk: the number of heads unless `num_attention_heads` is set.
    attention_head_dim: Option<PerBlock>,
    num_attention_heads: Option<PerBlock>,
    cross_attention_dim: Option<ContextDim>,
    in_channels: Option<Count>,
    out_channels: Option<Count>,
    use_linear_projection: Option<bool>,
    norm_num_groups: Option<Count>,
    norm_eps: Option<f64>,
    flip_sin_to_cos: Option<bool>,
    freq_shift: Option<f64>,
    downsample_padding: Option<Count>,
    sample_size: Option<Count>,
    // Read for validation only.
    act_fn: Option<String>,
    resnet_time_scale_shift: Option<String>,
    time_embedding_type: Option<String>,
    attention_type: Option<String>,
    mid_block_type: Option<String>,
    addition_embed_type: Option<String>,
    addition_time_embed_dim: Option<Count>,
    projection_class_embeddings_input_dim: Option<Count>,
    /// A precision hint only.
    #[serde(rename = "upcast_attention")]
    _upcast_attention: Option<bool>,
    #[serde(rename = "dropout")]
    _dropout: Option<f64>,
    #[serde(flatten)]
    rest: BTreeMap<String, Value>,
}

/// `vae/config.json` as written (only the encoder's fields matter).
#[derive(Deserialize)]
struct VaeJson {
    #[serde(rename = "_class_name")]
    class_name: Option<String>,
    block_out_channels: Option<Channels>,
    down_block_types: Option<Vec<DownEncoderBlock>>,
    in_channels: Option<Count>,
    latent_channels: Option<Count>,
    layers_per_block: Option<Count>,
    norm_num_groups: Option<Count>,
    scaling_factor: Option<f64>,
    mid_block_add_attention: Option<bool>,
    use_quant_conv: Option<bool>,
    sample_size: Option<Count>,
    act_fn: Option<String>,
    // The decoder's; named so that they are not "unknown".
    #[serde(rename = "up_block_types")]
    _up_block_types: Option<Value>,
    #[serde(rename = "out_channels")]
    _out_channels: Option<Value>,
    #[serde(rename = "force_upcast")]
    _force_upcast: Option<bool>,
    #[serde(rename = "use_post_quant_conv")]
    _use_post_quant_conv: Option<bool>,
    #[serde(flatten)]
    rest: BTreeMap<String, Value>,
}

/// `_class_name`, when given, must be `want`.
fn check_class(path: &Path, got: Option<&str>, want: &str) -> Result<()> {
    match got {
        Some(class) if class != want => Err(field_err(
            path,
            "_class_name",
            format!("expected {want}, got {class}"),
        )),
        _ => Ok(()),
    }
}

/// The UNet fields that only one value of is supported, and unknown fields.
fn check_unet_fields(path: &Path, j: &UNetJson) -> Result<()> {
    for (key, got, want) in [
        ("act_fn", &j.act_fn, "silu"),
        (
            "resnet_time_scale_shift",
            &j.resnet_time_scale_shift,
            "default",
        ),
        ("time_embedding_type", &j.time_embedding_type, "positional"),
        ("attention_type", &j.attention_type, "default"),
    ] {
        only(path, key, got.as_deref(), want)?;
    }
    if let Some(v) = j.mid_block_type.as_deref() {
        if v != "UNetMidBlock2DCrossAttn" {
            return Err(field_err(
                path,
                "mid_block_type",
                format!("unsupported value {v:?}"),
            ));
        }
    }
    reject_unknown(
        path,
        &j.rest,
        &[
            ("conv_in_kernel", Value::from(3)),
            ("conv_out_kernel", Value::from(3)),
            ("mid_block_scale_factor", Value::from(1)),
            ("resnet_out_scale_factor", Value::from(1.0)),
            ("center_input_sample", Value::Bool(false)),
            ("addition_embed_type_num_heads", Value::from(64)),
        ],
    )
}

/// Both block type lists, one entry per block.
fn block_types(
    path: &Path,
    down: Option<Vec<DownBlockType>>,
    up: Option<Vec<UpBlockType>>,
    n: usize,
) -> Result<(Vec<DownBlockType>, Vec<UpBlockType>)> {
    let down = down.ok_or_else(|| missing(path, "down_block_types"))?;
    let up = up.ok_or_else(|| missing(path, "up_block_types"))?;
    if down.len() != n || up.len() != n {
        return Err(Error::config(
            path,
            format!(
                "block_out_channels has {n} entries but down_block_types has {} and up_block_types {}",
                down.len(),
                up.len()
            ),
        ));
    }
    Ok((down, up))
}

/// The added embedding: none, or SDXL base's `text_time` (six time ids). SDXL refiner's
/// (five time ids: sizes, crop and an aesthetic score; its pooled width equals its context
/// width) and other kinds are refused, naming the field.
fn text_time(
    path: &Path,
    kind: Option<&str>,
    time_dim: Option<usize>,
    input_dim: Option<usize>,
    context: usize,
) -> Result<Option<TextTime>> {
    let key = "addition_embed_type";
    match kind {
        None => return Ok(None),
        Some("text_time") => {}
        Some(v) => {
            return Err(field_err(
                path,
                key,
                format!("unsupported value {v:?} (only \"text_time\", SDXL's)"),
            ))
        }
    }
    let (Some(t), Some(p)) = (time_dim, input_dim) else {
        return Err(field_err(
            path,
            key,
            "\"text_time\" needs addition_time_embed_dim and projection_class_embeddings_input_dim",
        ));
    };
    let ids = TextTime::TIME_IDS * t;
    if t == 0 || !t.is_multiple_of(2) || p <= ids {
        return Err(field_err(
            path,
            "projection_class_embeddings_input_dim",
            format!("{p} does not hold 6 time ids of addition_time_embed_dim {t} and a pooled text embedding"),
        ));
    }
    if p.checked_sub(5 * t) == Some(context) {
        return Err(field_err(
            path,
            "projection_class_embeddings_input_dim",
            format!(
                "{p} = cross_attention_dim {context} + 5 time ids of {t}: an SDXL refiner \
                 (aesthetic-score conditioning), which is not supported; SDXL base has 6 time ids"
            ),
        ));
    }
    Ok(Some(TextTime {
        time_embed_dim: t,
        pooled_dim: p - ids,
    }))
}

fn count(v: Option<Count>, default: usize) -> usize {
    v.map_or(default, |c| c.0)
}

impl UNetConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let map = read_json(path)?;
        Self::from_map(path, &map)
    }

    /// Parses `config.json` bytes held in memory; `path` only names the file in errors.
    pub fn from_json_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        Self::from_map(path, &parse_json(path, bytes)?)
    }

    pub(crate) fn from_map(path: &Path, map: &Map<String, Value>) -> Result<Self> {
        let j: UNetJson = from_map(path, map)?;
        check_class(path, j.class_name.as_deref(), "UNet2DConditionModel")?;
        check_unet_fields(path, &j)?;
        let block_out_channels = j
            .block_out_channels
            .ok_or_else(|| missing(path, "block_out_channels"))?
            .0;
        let n = block_out_channels.len();
        let (down_block_types, up_block_types) =
            block_types(path, j.down_block_types, j.up_block_types, n)?;
        let per_block = |v: Option<PerBlock>, key: &str, default: usize| {
            v.unwrap_or(PerBlock::All(default)).resolve(path, key, n)
        };
        let head_dim = per_block(j.attention_head_dim, "attention_head_dim", 8)?;
        let num_attention_heads = match j.num_attention_heads {
            Some(h) => h.resolve(path, "num_attention_heads", n)?,
            None => head_dim,
        };
        let cross_attention_dim = j.cross_attention_dim.map_or(1280, |c| c.0);
        let cfg = UNetConfig {
            in_channels: count(j.in_channels, 4),
            out_channels: count(j.out_channels, 4),
            block_out_channels,
            layers_per_block: per_block(j.layers_per_block, "layers_per_block", 2)?,
            transformer_layers_per_block: per_block(
                j.transformer_layers_per_block,
                "transformer_layers_per_block",
                1,
            )?,
            down_block_types,
            up_block_types,
            num_attention_heads,
            cross_attention_dim,
            use_linear_projection: j.use_linear_projection.unwrap_or(false),
            norm_num_groups: count(j.norm_num_groups, 32),
            norm_eps: j.norm_eps.unwrap_or(1e-5),
            flip_sin_to_cos: j.flip_sin_to_cos.unwrap_or(true),
            freq_shift: j.freq_shift.unwrap_or(0.0),
            downsample_padding: count(j.downsample_padding, 1),
            sample_size: count(j.sample_size, 64),
            text_time: text_time(
                path,
                j.addition_embed_type.as_deref(),
                j.addition_time_embed_dim.map(|c| c.0),
                j.projection_class_embeddings_input_dim.map(|c| c.0),
                cross_attention_dim,
            )?,
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |m: String| Err(Error::config(path, m));
        let g = self.norm_num_groups;
        if g == 0 {
            return bad("norm_num_groups must be positive".into());
        }
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            if c % g != 0 {
                return bad(format!(
                    "block_out_channels[{i}] = {c} is not divisible by norm_num_groups = {g}"
                ));
            }
            let h = self.num_attention_heads[i];
            if h == 0 || c % h != 0 {
                return bad(format!(
                    "block_out_channels[{i}] = {c} is not divisible by its {h} attention heads"
                ));
            }
        }
        if self.layers_per_block.contains(&0) {
            return bad("layers_per_block must be positive".into());
        }
        if self.transformer_layers_per_block.contains(&0) {
            return bad("transformer_layers_per_block must be positive".into());
        }
        if !self.block_out_channels[0].is_multiple_of(2) {
            return bad("block_out_channels[0] must be even (timestep embedding)".into());
        }
        Ok(())
    }

    /// Heads of up block `i` (diffusers reverses the per-block list for the up path).
    pub fn up_heads(&self, i: usize) -> usize {
        self.num_attention_heads[self.num_attention_heads.len() - 1 - i]
    }

    /// Total spatial down-sampling factor of the UNet.
    pub fn downscale(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

impl VaeConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let map = read_json(path)?;
        Self::from_map(path, &map)
    }

    /// Parses `config.json` bytes held in memory; `path` only names the file in errors.
    pub fn from_json_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        Self::from_map(path, &parse_json(path, bytes)?)
    }

    pub(crate) fn from_map(path: &Path, map: &Map<String, Value>) -> Result<Self> {
        let j: VaeJson = from_map(path, map)?;
        check_class(path, j.class_name.as_deref(), "AutoencoderKL")?;
        let block_out_channels = j
            .block_out_channels
            .ok_or_else(|| missing(path, "block_out_channels"))?
            .0;
        let down = j
            .down_block_types
            .ok_or_else(|| missing(path, "down_block_types"))?;
        if down.len() != block_out_channels.len() {
            return Err(Error::config(
                path,
                format!(
                    "block_out_channels has {} entries but down_block_types has {}",
                    block_out_channels.len(),
                    down.len()
                ),
            ));
        }
        only(path, "act_fn", j.act_fn.as_deref(), "silu")?;
        reject_unknown(path, &j.rest, &[])?;
        let cfg = VaeConfig {
            in_channels: count(j.in_channels, 3),
            latent_channels: count(j.latent_channels, 4),
            block_out_channels,
            layers_per_block: count(j.layers_per_block, 1),
            norm_num_groups: count(j.norm_num_groups, 32),
            scaling_factor: j.scaling_factor.unwrap_or(0.18215),
            mid_block_add_attention: j.mid_block_add_attention.unwrap_or(true),
            use_quant_conv: j.use_quant_conv.unwrap_or(true),
            sample_size: count(j.sample_size, 512),
        };
        if cfg.in_channels != 3 {
            return Err(field_err(
                path,
                "in_channels",
                format!("expected 3 (RGB), got {}", cfg.in_channels),
            ));
        }
        for (i, &c) in cfg.block_out_channels.iter().enumerate() {
            if cfg.norm_num_groups == 0 || c % cfg.norm_num_groups != 0 {
                return Err(Error::config(
                    path,
                    format!(
                        "block_out_channels[{i}] = {c} is not divisible by norm_num_groups = {}",
                        cfg.norm_num_groups
                    ),
                ));
            }
        }
        if cfg.layers_per_block == 0 || cfg.latent_channels == 0 {
            return Err(Error::config(
                path,
                "layers_per_block and latent_channels must be positive",
            ));
        }
        Ok(cfg)
    }

    /// Spatial down-sampling factor image -> latent.
    pub fn downscale(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

#[cfg(test)]
mod tests;
