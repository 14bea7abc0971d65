//! diffusers `config.json` handling (`UNetConfig` / `VaeConfig::from_json_bytes`): the first
//! byte picks the parser, the rest is the file. Accepted configs must be self-consistent
//! (derived sizes computable); rejected ones name the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stablekeypoints::model::{UNetConfig, VaeConfig};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Some((&which, json)) = data.split_first() else {
        return;
    };
    let path = Path::new("fuzz/config.json");
    let err = if which & 1 == 0 {
        match UNetConfig::from_json_bytes(path, json) {
            Ok(c) => {
                let n = c.block_out_channels.len();
                assert!(n > 0);
                assert_eq!(c.down_block_types.len(), n);
                assert_eq!(c.up_block_types.len(), n);
                assert_eq!(c.num_attention_heads.len(), n);
                assert_eq!(c.layers_per_block.len(), n);
                assert_eq!(c.transformer_layers_per_block.len(), n);
                for i in 0..n {
                    let h = c.up_heads(i);
                    assert!(h > 0);
                }
                assert!(c.downscale() >= 1);
                return;
            }
            Err(e) => e,
        }
    } else {
        match VaeConfig::from_json_bytes(path, json) {
            Ok(c) => {
                assert!(!c.block_out_channels.is_empty());
                assert!(c.downscale() >= 1);
                assert!(c.norm_num_groups > 0);
                return;
            }
            Err(e) => e,
        }
    };
    let msg = err.to_string();
    assert!(msg.contains("fuzz/config.json"), "error does not name the file: {msg}");
});
