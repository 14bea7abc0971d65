//! Value parsers of the flags: each checks its value once, where it enters, and its error
//! names the range or the form expected (clap adds the flag and the value).

#[cfg(feature = "video")]
use crate::corpus::shard::Shard;
use stablekeypoints::device::DeviceSpec;
use stablekeypoints::limits;
use stablekeypoints::model::LayerSet;
use stablekeypoints::options::NoiseLevel;
use stablekeypoints::CropMode;
use std::path::PathBuf;

/// Counts with bounds (`stablekeypoints::limits`, the element's too): the error names the
/// range, and clap adds the flag and the value.
pub(super) fn bounded(min: usize, max: usize) -> impl Fn(&str) -> Result<usize, String> + Clone {
    move |s: &str| {
        let n = s.trim().parse::<usize>().map_err(|e| e.to_string())?;
        limits::check(n, min, max)
    }
}

/// A model argument: a hub id becomes its snapshot folder in the local cache.
pub(super) fn model_path(s: &str) -> Result<PathBuf, String> {
    stablekeypoints::model::resolve_model(std::path::Path::new(s)).map_err(|e| e.to_string())
}

pub(super) fn device(s: &str) -> Result<DeviceSpec, String> {
    s.parse().map_err(|e: stablekeypoints::Error| e.to_string())
}

/// `--noise-level`: an index into the 50 DDIM timesteps, checked here (once).
pub(super) fn noise_level(s: &str) -> Result<NoiseLevel, String> {
    let i: isize = s.trim().parse().map_err(|e| format!("{e}"))?;
    NoiseLevel::new(i).map_err(|e| e.to_string())
}

pub(super) fn layer_set(s: &str) -> Result<LayerSet, String> {
    s.parse()
}

/// `A,B`: two numbers.
pub(super) fn number_pair(s: &str) -> Result<[f64; 2], String> {
    let bad = || format!("expected two numbers A,B, got {s:?}");
    let (a, b) = s.split_once(',').ok_or_else(bad)?;
    Ok([
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    ])
}

/// `--crop`: the core's crop modes by their names (and aliases).
pub(super) fn crop_mode() -> impl clap::builder::TypedValueParser<Value = CropMode> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(CropMode::ALL.map(|m| {
        PossibleValue::new(m.name())
            .help(m.summary())
            .aliases(m.aliases().iter().copied())
    }))
    .map(|s| s.parse::<CropMode>().expect("one of the possible values"))
}

/// `--object-margin`: as the element's `object-margin`, 0 to 2.
pub(super) fn object_margin(s: &str) -> Result<f64, String> {
    let m: f64 = s.trim().parse().map_err(|e| format!("{e}"))?;
    if (0.0..=2.0).contains(&m) {
        Ok(m)
    } else {
        Err("must be between 0 and 2".into())
    }
}

/// `A,B` (eyes) or `A:B` (flip pairs): two landmark indices.
fn index_pair(s: &str, sep: char) -> Result<(usize, usize), String> {
    let bad = || format!("expected two landmark indices A{sep}B, got {s:?}");
    let (a, b) = s.split_once(sep).ok_or_else(bad)?;
    Ok((
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    ))
}

pub(super) fn eye_pair(s: &str) -> Result<(usize, usize), String> {
    index_pair(s, ',')
}

pub(super) fn flip_pair(s: &str) -> Result<(usize, usize), String> {
    index_pair(s, ':')
}

#[cfg(feature = "video")]
pub(super) fn shard(s: &str) -> Result<Shard, String> {
    s.parse()
}

/// `a,b,c,d`: the student's four stage widths.
pub(super) fn widths(s: &str) -> Result<[usize; 4], String> {
    let v = s
        .split(',')
        .map(|x| x.trim().parse::<usize>().map_err(|e| format!("{x:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let w: [usize; 4] = v
        .try_into()
        .map_err(|_| "four widths, e.g. 16,32,64,128".to_string())?;
    match w
        .iter()
        .find(|&&x| x == 0 || x > stablekeypoints::student::MAX_WIDTH)
    {
        Some(x) => Err(format!(
            "width {x}: each must be 1..={}",
            stablekeypoints::student::MAX_WIDTH
        )),
        None => Ok(w),
    }
}
