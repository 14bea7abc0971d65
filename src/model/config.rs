//! diffusers `config.json` -> architecture. Mirrors the fields of diffusers'
//! `UNet2DConditionModel` and `AutoencoderKL` that the SD 1.x / 2.x family uses.

use crate::error::{Error, Result};
use serde_json::{Map, Value};
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

/// Reads a JSON object, naming the file on failure.
pub(crate) fn read_json(path: &Path) -> Result<Map<String, Value>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_json(path, &bytes)
}

/// Parses a JSON object held in memory; `path` only names it in errors.
fn parse_json(path: &Path, bytes: &[u8]) -> Result<Map<String, Value>> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::config(path, "top level is not a JSON object")),
        Err(e) => Err(Error::config(path, format!("not valid JSON: {e}"))),
    }
}

/// Typed access to config fields with diffusers' defaults; tracks which keys were read.
struct Fields<'a> {
    path: &'a Path,
    map: &'a Map<String, Value>,
    seen: std::cell::RefCell<Vec<&'static str>>,
}

impl<'a> Fields<'a> {
    fn new(path: &'a Path, map: &'a Map<String, Value>) -> Self {
        Self {
            path,
            map,
            seen: Default::default(),
        }
    }

    fn get(&self, key: &'static str) -> Option<&'a Value> {
        self.seen.borrow_mut().push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn err(&self, key: &str, msg: impl std::fmt::Display) -> Error {
        Error::config(self.path, format!("field `{key}`: {msg}"))
    }

    fn usize(&self, key: &'static str, default: Option<usize>) -> Result<usize> {
        match self.get(key) {
            None => default.ok_or_else(|| self.err(key, "missing")),
            Some(v) => as_usize(v)
                .ok_or_else(|| self.err(key, format!("expected a non-negative integer, got {v}"))),
        }
    }

    fn f64(&self, key: &'static str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.err(key, format!("expected a number, got {v}"))),
        }
    }

    fn bool(&self, key: &'static str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(key, format!("expected true/false, got {v}"))),
        }
    }

    fn str(&self, key: &'static str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected a string, got {v}"))),
        }
    }

    /// A number broadcast to `n` entries, or a list of exactly `n`.
    fn per_block(
        &self,
        key: &'static str,
        n: usize,
        default: Option<usize>,
    ) -> Result<Option<Vec<usize>>> {
        match self.get(key) {
            None => Ok(default.map(|d| vec![d; n])),
            Some(Value::Array(a)) => {
                let v: Option<Vec<usize>> = a.iter().map(as_usize).collect();
                let v =
                    v.ok_or_else(|| self.err(key, "expected a list of non-negative integers"))?;
                if v.len() != n {
                    return Err(self.err(
                        key,
                        format!("has {} entries but there are {n} blocks", v.len()),
                    ));
                }
                Ok(Some(v))
            }
            Some(v) => {
                let x = as_usize(v).ok_or_else(|| {
                    self.err(key, format!("expected an integer or a list, got {v}"))
                })?;
                Ok(Some(vec![x; n]))
            }
        }
    }

    fn str_list(&self, key: &'static str) -> Result<Vec<&'a str>> {
        match self.get(key) {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or_else(|| self.err(key, "expected a list of strings"))
                })
                .collect(),
            Some(v) => Err(self.err(key, format!("expected a list of strings, got {v}"))),
            None => Err(self.err(key, "missing")),
        }
    }

    fn usize_list(&self, key: &'static str) -> Result<Vec<usize>> {
        match self.get(key) {
            Some(Value::Array(a)) if a.len() > MAX_BLOCKS => Err(self.err(
                key,
                format!(
                    "has {} entries (at most {MAX_BLOCKS} are supported)",
                    a.len()
                ),
            )),
            Some(Value::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|v| {
                    as_usize(v)
                        .filter(|&x| x > 0)
                        .ok_or_else(|| self.err(key, "expected positive integers"))
                })
                .collect(),
            Some(v) => Err(self.err(
                key,
                format!("expected a non-empty list of integers, got {v}"),
            )),
            None => Err(self.err(key, "missing")),
        }
    }

    /// Fields this implementation does not know must be absent or neutral; anything else
    /// would silently change the architecture.
    fn reject_unknown(&self, neutral: &[(&str, Value)]) -> Result<()> {
        let seen = self.seen.borrow();
        for (k, v) in self.map {
            if k.starts_with('_') || seen.contains(&k.as_str()) {
                continue;
            }
            let ok = match neutral.iter().find(|(n, _)| n == k) {
                Some((_, nv)) => v == nv || v.is_null(),
                None => v.is_null() || v == &Value::Bool(false),
            };
            if !ok {
                return Err(self.err(k, format!("unsupported value {v}")));
            }
        }
        Ok(())
    }
}

fn as_usize(v: &Value) -> Option<usize> {
    v.as_u64().map(|x| x as usize).or_else(|| {
        // Some exporters write integers as floats (e.g. 8.0).
        v.as_f64()
            .filter(|f| *f >= 0.0 && f.fract() == 0.0)
            .map(|f| f as usize)
    })
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
        let f = Fields::new(path, map);
        if let Some(class) = f.str("_class_name")? {
            if class != "UNet2DConditionModel" {
                return Err(f.err(
                    "_class_name",
                    format!("expected UNet2DConditionModel, got {class}"),
                ));
            }
        }
        let block_out_channels = f.usize_list("block_out_channels")?;
        let n = block_out_channels.len();
        let down_block_types = f
            .str_list("down_block_types")?
            .into_iter()
            .map(|s| match s {
                "CrossAttnDownBlock2D" => Ok(DownBlockType::CrossAttn),
                "DownBlock2D" => Ok(DownBlockType::Plain),
                other => Err(f.err(
                    "down_block_types",
                    format!("unsupported block type {other}"),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        let up_block_types = f
            .str_list("up_block_types")?
            .into_iter()
            .map(|s| match s {
                "CrossAttnUpBlock2D" => Ok(UpBlockType::CrossAttn),
                "UpBlock2D" => Ok(UpBlockType::Plain),
                other => Err(f.err("up_block_types", format!("unsupported block type {other}"))),
            })
            .collect::<Result<Vec<_>>>()?;
        if down_block_types.len() != n || up_block_types.len() != n {
            return Err(Error::config(
                path,
                format!(
                    "block_out_channels has {n} entries but down_block_types has {} and up_block_types {}",
                    down_block_types.len(),
                    up_block_types.len()
                ),
            ));
        }
        let layers_per_block = f
            .per_block("layers_per_block", n, Some(2))?
            .unwrap_or_default();
        let transformer_layers_per_block = f
            .per_block("transformer_layers_per_block", n, Some(1))?
            .unwrap_or_default();
        // diffusers' naming quirk: `attention_head_dim` holds the number of heads unless
        // `num_attention_heads` is set.
        let head_dim = f
            .per_block("attention_head_dim", n, Some(8))?
            .unwrap_or_default();
        let num_attention_heads = f
            .per_block("num_attention_heads", n, None)?
            .unwrap_or(head_dim);
        let cross_attention_dim = match f.get("cross_attention_dim") {
            None => 1280,
            Some(v) => as_usize(v).ok_or_else(|| {
                f.err(
                    "cross_attention_dim",
                    format!("expected one integer (per-block lists are not supported), got {v}"),
                )
            })?,
        };
        let cfg = UNetConfig {
            in_channels: f.usize("in_channels", Some(4))?,
            out_channels: f.usize("out_channels", Some(4))?,
            block_out_channels,
            layers_per_block,
            transformer_layers_per_block,
            down_block_types,
            up_block_types,
            num_attention_heads,
            cross_attention_dim,
            use_linear_projection: f.bool("use_linear_projection", false)?,
            norm_num_groups: f.usize("norm_num_groups", Some(32))?,
            norm_eps: f.f64("norm_eps", 1e-5)?,
            flip_sin_to_cos: f.bool("flip_sin_to_cos", true)?,
            freq_shift: f.f64("freq_shift", 0.0)?,
            downsample_padding: f.usize("downsample_padding", Some(1))?,
            sample_size: f.usize("sample_size", Some(64))?,
        };
        // Fields read for validation only.
        for (key, want) in [
            ("act_fn", "silu"),
            ("resnet_time_scale_shift", "default"),
            ("time_embedding_type", "positional"),
            ("attention_type", "default"),
        ] {
            if let Some(v) = f.str(key)? {
                if v != want {
                    return Err(f.err(key, format!("unsupported value {v:?} (only {want:?})")));
                }
            }
        }
        if let Some(v) = f.str("mid_block_type")? {
            if v != "UNetMidBlock2DCrossAttn" {
                return Err(f.err("mid_block_type", format!("unsupported value {v:?}")));
            }
        }
        let _ = f.bool("upcast_attention", false)?; // precision hint only
        let _ = f.f64("dropout", 0.0)?;
        f.reject_unknown(&[
            ("conv_in_kernel", Value::from(3)),
            ("conv_out_kernel", Value::from(3)),
            ("mid_block_scale_factor", Value::from(1)),
            ("resnet_out_scale_factor", Value::from(1.0)),
            ("center_input_sample", Value::Bool(false)),
            ("addition_embed_type_num_heads", Value::from(64)),
        ])?;
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
        let f = Fields::new(path, map);
        if let Some(class) = f.str("_class_name")? {
            if class != "AutoencoderKL" {
                return Err(f.err(
                    "_class_name",
                    format!("expected AutoencoderKL, got {class}"),
                ));
            }
        }
        let block_out_channels = f.usize_list("block_out_channels")?;
        let down = f.str_list("down_block_types")?;
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
        if let Some(bad) = down.iter().find(|s| **s != "DownEncoderBlock2D") {
            return Err(f.err("down_block_types", format!("unsupported block type {bad}")));
        }
        let _ = f.get("up_block_types"); // decoder only
        let _ = f.get("out_channels");
        let _ = f.bool("force_upcast", true)?;
        let _ = f.bool("use_post_quant_conv", true)?;
        if let Some(v) = f.str("act_fn")? {
            if v != "silu" {
                return Err(f.err("act_fn", format!("unsupported value {v:?}")));
            }
        }
        let cfg = VaeConfig {
            in_channels: f.usize("in_channels", Some(3))?,
            latent_channels: f.usize("latent_channels", Some(4))?,
            block_out_channels,
            layers_per_block: f.usize("layers_per_block", Some(1))?,
            norm_num_groups: f.usize("norm_num_groups", Some(32))?,
            scaling_factor: f.f64("scaling_factor", 0.18215)?,
            mid_block_add_attention: f.bool("mid_block_add_attention", true)?,
            use_quant_conv: f.bool("use_quant_conv", true)?,
            sample_size: f.usize("sample_size", Some(512))?,
        };
        f.reject_unknown(&[])?;
        if cfg.in_channels != 3 {
            return Err(f.err(
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
mod tests {
    use super::*;

    fn unet_json(extra: &str) -> Map<String, Value> {
        let s = format!(
            r#"{{"_class_name":"UNet2DConditionModel","block_out_channels":[320,640,1280,1280],
            "down_block_types":["CrossAttnDownBlock2D","CrossAttnDownBlock2D","CrossAttnDownBlock2D","DownBlock2D"],
            "up_block_types":["UpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D"],
            "cross_attention_dim":768,"attention_head_dim":8,"layers_per_block":2{extra}}}"#
        );
        serde_json::from_str(&s).unwrap()
    }

    #[test]
    fn sd15_heads_and_defaults() {
        let c = UNetConfig::from_map(Path::new("u.json"), &unet_json("")).unwrap();
        assert_eq!(c.num_attention_heads, vec![8; 4]);
        assert_eq!(c.norm_num_groups, 32);
        assert_eq!(c.layers_per_block, vec![2; 4]);
        assert_eq!(c.downscale(), 8);
    }

    #[test]
    fn sd21_head_list_is_reversed_on_the_way_up() {
        let c = UNetConfig::from_map(
            Path::new("u.json"),
            &unet_json(r#","attention_head_dim":[5,10,20,20],"use_linear_projection":true,"cross_attention_dim":1024"#),
        )
        .unwrap();
        assert_eq!(c.num_attention_heads, vec![5, 10, 20, 20]);
        assert_eq!(c.up_heads(0), 20);
        assert_eq!(c.up_heads(3), 5);
        assert!(c.use_linear_projection);
        // num_attention_heads wins over attention_head_dim.
        let c = UNetConfig::from_map(
            Path::new("u.json"),
            &unet_json(r#","num_attention_heads":[4,4,4,4]"#),
        )
        .unwrap();
        assert_eq!(c.num_attention_heads, vec![4; 4]);
    }

    #[test]
    fn contradictions_and_unknown_fields_are_named() {
        let e = UNetConfig::from_map(Path::new("x/u.json"), &unet_json(r#","norm_num_groups":7"#))
            .unwrap_err();
        assert!(
            e.to_string().contains("x/u.json") && e.to_string().contains("norm_num_groups"),
            "{e}"
        );
        let e = UNetConfig::from_map(
            Path::new("u.json"),
            &unet_json(r#","attention_head_dim":[8,8]"#),
        )
        .unwrap_err();
        assert!(e.to_string().contains("attention_head_dim"), "{e}");
        let e = UNetConfig::from_map(
            Path::new("u.json"),
            &unet_json(r#","addition_embed_type":"text_time""#),
        )
        .unwrap_err();
        assert!(e.to_string().contains("addition_embed_type"), "{e}");
        // Neutral unknown fields pass.
        UNetConfig::from_map(
            Path::new("u.json"),
            &unet_json(r#","class_embed_type":null,"dual_cross_attention":false"#),
        )
        .unwrap();
        let e = UNetConfig::from_map(
            Path::new("u.json"),
            &unet_json(r#","down_block_types":["CrossAttnDownBlock2D"]"#),
        )
        .unwrap_err();
        assert!(e.to_string().contains("down_block_types has 1"), "{e}");
    }

    #[test]
    fn too_many_blocks_is_an_error_not_an_overflow() {
        // Regression (fuzz target `config_json`): 65+ blocks passed the parser and
        // `downscale()` then shifted 1 by 64 or more.
        let n = 70;
        let extra = format!(
            r#","block_out_channels":{:?},"down_block_types":{:?},"up_block_types":{:?}"#,
            vec![32; n],
            vec!["DownBlock2D"; n],
            vec!["UpBlock2D"; n]
        );
        let e = UNetConfig::from_map(Path::new("u.json"), &unet_json(&extra)).unwrap_err();
        assert!(e.to_string().contains("at most 8"), "{e}");
        let vae = format!(
            r#"{{"block_out_channels":{:?},"down_block_types":{:?}}}"#,
            vec![32; n],
            vec!["DownEncoderBlock2D"; n]
        );
        let e = VaeConfig::from_json_bytes(Path::new("v.json"), vae.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("at most 8"), "{e}");
        // Bytes that are not JSON (or not UTF-8) name the file too.
        let e = UNetConfig::from_json_bytes(Path::new("u.json"), b"\xff{").unwrap_err();
        assert!(
            e.to_string()
                .contains("u.json: invalid config: not valid JSON"),
            "{e}"
        );
    }

    /// Stable stand-in for the `config_json` fuzz target (fuzz/): seeded structural
    /// mutations of SD-style configs either parse into a self-consistent architecture or
    /// give an error naming the file.
    #[test]
    fn mutated_configs_give_errors_not_panics() {
        use crate::ops::rng::Rng;
        let unet = Value::Object(unet_json(""));
        let vae: Value = serde_json::from_str(
            r#"{"_class_name":"AutoencoderKL","block_out_channels":[128,256,512,512],
            "down_block_types":["DownEncoderBlock2D","DownEncoderBlock2D","DownEncoderBlock2D","DownEncoderBlock2D"],
            "latent_channels":4,"norm_num_groups":32,"layers_per_block":2}"#,
        )
        .unwrap();
        let mut rng = Rng::new(5);
        let value = |rng: &mut Rng| -> Value {
            match rng.below(12) {
                0 => Value::Null,
                1 => Value::Bool(rng.below(2) == 0),
                2 => (rng.next_u64() as i64).into(),
                3 => (rng.below(70) as i64 - 2).into(),
                4 => (rng.uniform_range(-1e3, 1e3)).into(),
                5 => 1e300.into(),
                6 => "DownBlock2D".into(),
                7 => "CrossAttnUpBlock2D".into(),
                8 => Value::Array(
                    (0..rng.below(12))
                        .map(|_| (rng.below(9) * 8).into())
                        .collect(),
                ),
                9 => Value::Array(vec!["UpBlock2D".into(); rng.below(12)]),
                10 => Value::Object(Default::default()),
                _ => "x".into(),
            }
        };
        let (mut ok, mut err) = (0, 0);
        for i in 0..4000 {
            let is_unet = i % 2 == 0;
            let mut v = if is_unet { unet.clone() } else { vae.clone() };
            let m = v.as_object_mut().unwrap();
            for _ in 0..1 + rng.below(3) {
                let keys: Vec<String> = m.keys().cloned().collect();
                let key = match rng.below(5) {
                    0 => "unknown_field".to_string(),
                    _ => keys[rng.below(keys.len())].clone(),
                };
                match rng.below(4) {
                    0 => {
                        m.remove(&key);
                    }
                    _ => {
                        m.insert(key, value(&mut rng));
                    }
                }
            }
            let mut bytes = serde_json::to_vec(&v).unwrap();
            if rng.below(10) == 0 {
                bytes.truncate(rng.below(bytes.len()));
            }
            let path = Path::new("mutant/config.json");
            let res = if is_unet {
                UNetConfig::from_json_bytes(path, &bytes).map(|c| {
                    let n = c.block_out_channels.len();
                    assert!(c.downscale() >= 1);
                    assert!((0..n).all(|i| c.up_heads(i) > 0));
                })
            } else {
                VaeConfig::from_json_bytes(path, &bytes).map(|c| assert!(c.downscale() >= 1))
            };
            match res {
                Ok(()) => ok += 1,
                Err(e) => {
                    err += 1;
                    assert!(e.to_string().contains("mutant/config.json"), "{e}");
                }
            }
        }
        assert!(ok > 0 && err > 0, "ok {ok}, err {err}");
    }
}
