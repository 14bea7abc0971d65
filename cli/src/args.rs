//! Minimal flag parsing and device selection shared by the commands.

use stablekeypoints::Error;

pub use crate::USAGE;

pub struct Args {
    pub flags: Vec<(String, Option<String>)>,
    pub positional: Vec<String>,
}

impl Args {
    pub fn parse(raw: Vec<String>, switches: &[&str], valued: &[&str]) -> Result<Self, Error> {
        let mut flags = Vec::new();
        let mut positional = Vec::new();
        let mut it = raw.into_iter();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                let (name, inline) = match name.split_once('=') {
                    Some((n, v)) => (n.to_string(), Some(v.to_string())),
                    None => (name.to_string(), None),
                };
                if switches.contains(&name.as_str()) {
                    flags.push((name, None));
                } else if valued.contains(&name.as_str()) {
                    let v = match inline {
                        Some(v) => v,
                        None => it
                            .next()
                            .ok_or_else(|| Error::Invalid(format!("--{name} needs a value")))?,
                    };
                    flags.push((name, Some(v)));
                } else {
                    return Err(Error::Invalid(format!(
                        "unknown option --{name}\n\n{USAGE}"
                    )));
                }
            } else {
                positional.push(a);
            }
        }
        Ok(Self { flags, positional })
    }

    pub fn has(&self, name: &str) -> bool {
        self.flags.iter().any(|(n, _)| n == name)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    pub fn required(&self, name: &str) -> Result<&str, Error> {
        self.get(name)
            .ok_or_else(|| Error::Invalid(format!("missing --{name}\n\n{USAGE}")))
    }

    pub fn parse_opt<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, Error> {
        self.get(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| Error::Invalid(format!("--{name}: cannot parse {v:?}")))
            })
            .transpose()
    }
}

/// `cpu` or `cuda[:N]`, with the compute dtype for it (f16 on CUDA).
pub fn device_from_str(s: &str) -> Result<(candle_core::Device, candle_core::DType), Error> {
    use candle_core::{DType, Device};
    if s == "cpu" {
        return Ok((Device::Cpu, DType::F32));
    }
    if let Some(rest) = s.strip_prefix("cuda") {
        let ord = match rest.strip_prefix(':') {
            Some(n) => n
                .parse()
                .map_err(|_| Error::Invalid(format!("bad device {s:?}")))?,
            None if rest.is_empty() => 0,
            None => return Err(Error::Invalid(format!("bad device {s:?}"))),
        };
        let dev = Device::new_cuda(ord).map_err(|e| Error::Invalid(format!("device {s}: {e}")))?;
        return Ok((dev, DType::F16));
    }
    Err(Error::Invalid(format!(
        "unknown device {s:?} (cpu, cuda:N)"
    )))
}

/// Detection flags shared by `detect` and `eval`.
pub fn detect_options(a: &Args) -> Result<stablekeypoints::DetectOptions, Error> {
    Ok(stablekeypoints::DetectOptions {
        input_size: a.parse_opt("size")?,
        map_res: a.parse_opt("map-res")?,
        augmentations: a.parse_opt("augmentations")?.unwrap_or(1),
        seed: a.parse_opt("seed")?.unwrap_or(0),
        noise: !a.has("no-noise"),
        crop: a
            .get("crop")
            .map(str::parse::<stablekeypoints::CropMode>)
            .transpose()?
            .unwrap_or_default(),
        peak: match a.get("peak").unwrap_or("argmax") {
            "argmax" => stablekeypoints::PeakMode::Argmax,
            "weighted" => stablekeypoints::PeakMode::Weighted { radius: 5.0 },
            o => {
                return Err(Error::Invalid(format!(
                    "--peak: unknown mode {o:?} (argmax, weighted)"
                )))
            }
        },
        ..Default::default()
    })
}
