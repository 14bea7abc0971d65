//! The learned-tokens file parser (`Tokens::from_bytes`): any bytes give a usable token
//! set or an error naming the file, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stablekeypoints::Tokens;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.safetensors");
    match Tokens::from_bytes(path, data) {
        Ok(t) => {
            assert!(t.num_tokens > 0 && t.context_dim > 0);
            assert_eq!(t.embeddings.len(), t.num_tokens * t.context_dim);
            assert!(t.embeddings.iter().all(|v| v.is_finite()));
            assert!(!t.indices.is_empty());
            assert!(t.indices.iter().all(|&i| i < t.num_tokens));
            assert!(t.input_size > 0 && t.map_res > 0 && t.num_layers > 0 && t.timestep < 1000);
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("fuzz.safetensors"), "error does not name the file: {msg}");
        }
    }
});
