//! Identities recorded in tokens files and checkpoints: a small hash, and the hash of a
//! model's configuration.

use crate::error::{Error, Result};
use std::path::Path;

pub use crate::util::Fnv;

/// Hash of the model's `unet/config.json` and `vae/config.json` (keys sorted, `_`-prefixed
/// bookkeeping keys such as `_diffusers_version` dropped), recorded in tokens and checkpoints.
pub fn model_config_hash(dir: &Path) -> Result<String> {
    fn canon(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().filter(|k| !k.starts_with('_')).collect();
                keys.sort();
                out.push('{');
                for k in keys {
                    out.push_str(&serde_json::to_string(k).expect("string"));
                    out.push(':');
                    canon(&m[k], out);
                    out.push(',');
                }
                out.push('}');
            }
            serde_json::Value::Array(a) => {
                out.push('[');
                for x in a {
                    canon(x, out);
                    out.push(',');
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut h = Fnv::new();
    for part in ["unet", "vae"] {
        let p = dir.join(part).join("config.json");
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::config(&p, e.to_string()))?;
        let mut s = String::new();
        canon(&v, &mut s);
        h.write(part.as_bytes());
        h.write(s.as_bytes());
    }
    Ok(h.hex())
}
