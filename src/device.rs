//! Compute devices by name, as the CLI's `--device` and the element's `device` property take
//! them: `cpu` (f32) or `cuda[:N]` (f16; needs the `cuda` feature).

use crate::error::{Error, Result};
use candle_core::{DType, Device};
use std::fmt;
use std::str::FromStr;

/// A device named by the user; [`DeviceSpec::open`] creates it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    /// CUDA device by ordinal.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = Error;

    /// `cpu` (any case), `cuda` (device 0) or `cuda:N`; surrounding blanks are ignored.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("cpu") {
            return Ok(DeviceSpec::Cpu);
        }
        match s.strip_prefix("cuda") {
            Some("") => Ok(DeviceSpec::Cuda(0)),
            Some(rest) => rest
                .strip_prefix(':')
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| {
                    Error::Invalid(format!("bad device {s:?} (expected cpu or cuda:N)"))
                }),
            None => Err(Error::Invalid(format!(
                "unknown device {s:?} (expected cpu or cuda:N)"
            ))),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// The device and its compute dtype: f32 on the CPU, f16 on CUDA.
    pub fn open(self) -> Result<(Device, DType)> {
        match self {
            DeviceSpec::Cpu => Ok((Device::Cpu, DType::F32)),
            DeviceSpec::Cuda(n) => {
                let dev = Device::new_cuda(n).map_err(|e| {
                    let msg = e.to_string();
                    Error::Invalid(format!(
                        "device {self}: {}",
                        msg.lines().next().unwrap_or("").trim()
                    ))
                })?;
                Ok((dev, DType::F16))
            }
        }
    }
}

/// Parses and opens a device name in one go.
pub fn parse(s: &str) -> Result<(Device, DType)> {
    s.parse::<DeviceSpec>()?.open()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for (s, want) in [
            ("cpu", DeviceSpec::Cpu),
            (" CPU ", DeviceSpec::Cpu),
            ("cuda", DeviceSpec::Cuda(0)),
            ("cuda:3", DeviceSpec::Cuda(3)),
        ] {
            assert_eq!(s.parse::<DeviceSpec>().unwrap(), want, "{s}");
        }
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
        let e = "tpu:0".parse::<DeviceSpec>().unwrap_err().to_string();
        assert!(e.contains("unknown device \"tpu:0\""), "{e}");
        let e = "cuda:x".parse::<DeviceSpec>().unwrap_err().to_string();
        assert!(e.contains("bad device \"cuda:x\""), "{e}");
        assert!("cuda1".parse::<DeviceSpec>().is_err());
        assert_eq!(parse("cpu").unwrap().1, DType::F32);
    }
}
