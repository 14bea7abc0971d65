use super::*;

fn sample() -> Tokens {
    let mut t = Tokens::new((0..12).map(|i| i as f32 * 0.5).collect(), 4, 3, vec![2, 0]).unwrap();
    t.map_res = 64;
    t.extra.insert("steps".into(), "500".into());
    t
}

#[test]
fn fingerprint_depends_on_embeddings_and_indices_only() {
    let a = sample();
    let mut b = sample();
    b.map_res = 128;
    b.extra.clear();
    assert_eq!(a.fingerprint(), b.fingerprint(), "metadata is not identity");
    assert_eq!(a.fingerprint().len(), 16);
    b.embeddings[5] += 1e-6;
    assert_ne!(a.fingerprint(), b.fingerprint());
    let mut c = sample();
    c.indices = vec![0, 2];
    assert_ne!(a.fingerprint(), c.fingerprint());
    // No tokens: the hash of two zero u64 sizes, by hand (xor 0, multiply, 16 times).
    let empty = Tokens {
        embeddings: vec![],
        num_tokens: 0,
        context_dim: 0,
        indices: vec![],
        ..sample()
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for _ in 0..16 {
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    assert_eq!(empty.fingerprint(), format!("{h:016x}"));
}

#[test]
fn round_trip_keeps_everything() {
    let dir = std::env::temp_dir().join(format!("skp-tokens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("t.safetensors");
    let t = sample();
    t.save(&p).unwrap();
    assert_eq!(Tokens::load(&p).unwrap(), t);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn timestep_defaults_to_the_reference_and_metadata_is_kept() {
    use crate::ops::schedule::{DdimSchedule, DEFAULT_NOISE_LEVEL};
    // Must fail if the default drifts back to t = 1 (or anywhere but the reference's).
    let reference = DdimSchedule::stable_diffusion()
        .timestep_of_level(DEFAULT_NOISE_LEVEL)
        .unwrap();
    assert_eq!(DEFAULT_TIMESTEP, reference);
    assert_eq!(DEFAULT_TIMESTEP, 0);
    let dir = std::env::temp_dir().join(format!("skp-tokens-t-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("t.safetensors");
    // No `timestep` metadata: the default.
    let emb: Vec<u8> = (0..12).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let idx: Vec<u8> = [1i64, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = vec![
        (
            "embeddings",
            TensorView::new(Dtype::F32, vec![4, 3], &emb).unwrap(),
        ),
        (
            "indices",
            TensorView::new(Dtype::I64, vec![2], &idx).unwrap(),
        ),
    ];
    let bytes = safetensors::tensor::serialize(views.clone(), None).unwrap();
    assert_eq!(Tokens::from_bytes(&p, &bytes).unwrap().timestep, 0);
    // A file written before the correction says "1" and stays at t = 1.
    let meta = std::collections::HashMap::from([("timestep".to_string(), "1".to_string())]);
    let bytes = safetensors::tensor::serialize(views, Some(meta)).unwrap();
    let old = Tokens::from_bytes(&p, &bytes).unwrap();
    assert_eq!(old.timestep, 1);
    old.save(&p).unwrap();
    assert_eq!(Tokens::load(&p).unwrap().timestep, 1);
    assert_eq!(
        Tokens::new(vec![0.0; 3], 1, 3, vec![0]).unwrap().timestep,
        0
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn layers_and_augmentation_ranges_round_trip_and_are_checked() {
    let dir = std::env::temp_dir().join(format!("skp-tokens-l-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("t.safetensors");
    let mut t = sample();
    // Defaults: every recorded layer, the reference's ranges.
    assert_eq!(t.layers.indices(), vec![0, 1, 2, 3]);
    assert_eq!(t.augment, AugmentRanges::default());
    t.layers = LayerSet::from_indices(&[1, 3]).unwrap();
    t.augment = AugmentRanges {
        degrees: 30.0,
        scale: [0.5, 0.75],
        translate: [0.1, 0.0],
    };
    t.save(&p).unwrap();
    let back = Tokens::load(&p).unwrap();
    assert_eq!(back, t);
    assert!(!back.extra.contains_key("layers"));
    // A file without `layers` averages its `num_layers`.
    let emb: Vec<u8> = (0..12).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let idx: Vec<u8> = [1i64].iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = vec![
        (
            "embeddings",
            TensorView::new(Dtype::F32, vec![4, 3], &emb).unwrap(),
        ),
        (
            "indices",
            TensorView::new(Dtype::I64, vec![1], &idx).unwrap(),
        ),
    ];
    let file = |meta: &[(&str, &str)]| {
        let m: std::collections::HashMap<String, String> = meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        safetensors::tensor::serialize(views.clone(), Some(m)).unwrap()
    };
    let t2 = Tokens::from_bytes(&p, &file(&[("num_layers", "2")])).unwrap();
    assert_eq!(t2.layers.indices(), vec![0, 1]);
    for (meta, needle) in [
        (vec![("num_layers", "2"), ("layers", "0,2")], "`layers`"),
        (vec![("layers", "a")], "`layers`"),
        (vec![("layers", "")], "`layers`"),
        (vec![("num_layers", "65")], "`num_layers`"),
        (vec![("augment_scale", "0.9")], "`augment_scale`"),
        (vec![("augment_scale", "0.9,0.8")], "scale"),
        (vec![("augment_degrees", "-3")], "rotation"),
        (vec![("augment_translate", "x,1")], "`augment_translate`"),
    ] {
        let e = Tokens::from_bytes(&p, &file(&meta))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.safetensors") && e.contains(needle),
            "{meta:?}: {e}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_files_name_the_problem() {
    let p = Path::new("x.safetensors");
    let e = Tokens::from_bytes(p, b"garbage").unwrap_err().to_string();
    assert!(
        e.contains("x.safetensors") && e.contains("not a safetensors"),
        "{e}"
    );
    let t = sample();
    let mut bad = t.clone();
    bad.indices = vec![7];
    assert!(bad.validate().unwrap_err().contains("out of range"));
    bad.indices = vec![1, 1];
    assert!(bad.validate().unwrap_err().contains("twice"));
    bad.indices = vec![];
    assert!(bad.validate().unwrap_err().contains("empty"));
    assert!(Tokens::new(vec![], 0, 3, vec![0]).is_err());
}

#[test]
fn huge_finite_embeddings_are_blamed_on_the_file() {
    // Issue 24 (13): a value of 1e30 loaded, then the model's attention overflowed and
    // the error blamed the model.
    let dir = std::env::temp_dir().join(format!("skp-tokens-huge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("huge.safetensors");
    let mut t = sample();
    t.save(&path).unwrap();
    let good = std::fs::read(&path).unwrap();
    // The same file with embedding 5 (2.5 as f32) replaced by 1e30.
    let at = good
        .windows(4)
        .rposition(|w| w == 2.5f32.to_le_bytes())
        .unwrap();
    let mut bytes = good.clone();
    bytes[at..at + 4].copy_from_slice(&1e30f32.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let e = Tokens::load(&path).unwrap_err().to_string();
    assert!(
        e.contains("huge.safetensors") && e.contains("1e30") && e.contains("index 5"),
        "{e}"
    );
    t.embeddings[5] = -MAX_EMBEDDING_ABS;
    t.validate().unwrap();
    t.embeddings[5] = -2.0 * MAX_EMBEDDING_ABS;
    assert!(t.validate().is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn oversized_metadata_is_rejected() {
    // Regression: `input_size` = 2^40 (a multiple of 64) passed every check and the
    // element then allocated input_size^2 * 3 bytes for its warm-up frame (abort).
    let mut t = sample();
    t.input_size = 1 << 40;
    assert!(t.validate().unwrap_err().contains("larger than 4096"));
    t.input_size = MAX_INPUT_SIZE;
    t.map_res = MAX_MAP_RES + 1;
    assert!(t.validate().unwrap_err().contains("`map_res`"));
}

/// Stable stand-in for the `tokens` fuzz target (fuzz/): seeded mutations of a valid
/// file give a usable token set or an error naming the file, never a panic.
#[test]
fn mutated_files_give_errors_not_panics() {
    use crate::ops::rng::Rng;
    let dir = std::env::temp_dir().join(format!("skp-tokens-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("t.safetensors");
    sample().save(&p).unwrap();
    let valid = std::fs::read(&p).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let header_end = 8 + u64::from_le_bytes(valid[..8].try_into().unwrap()) as usize;
    let name = Path::new("mutant.safetensors");
    let mut rng = Rng::new(11);
    let (mut ok, mut err) = (0, 0);
    for _ in 0..5000 {
        let mut b = valid.clone();
        for _ in 0..1 + rng.below(4) {
            match rng.below(6) {
                // Flip a byte, mostly in the JSON header where the structure is.
                0 | 1 if !b.is_empty() => {
                    let i = rng.below(header_end.min(b.len()));
                    b[i] = rng.below(256) as u8;
                }
                // Replace a header byte by a digit, quote or bracket.
                2 if b.len() > 8 => {
                    let i = 8 + rng.below(header_end.min(b.len()) - 8);
                    let alphabet = b"0123456789-\"[]{},.e";
                    b[i] = alphabet[rng.below(alphabet.len())];
                }
                3 => b.truncate(rng.below(b.len() + 1)),
                4 => {
                    let v = match rng.below(3) {
                        0 => rng.next_u64(),
                        1 => (header_end - 8) as u64 + rng.below(16) as u64,
                        _ => u64::MAX - rng.below(16) as u64,
                    };
                    if b.len() >= 8 {
                        b[..8].copy_from_slice(&v.to_le_bytes());
                    }
                }
                _ => {
                    let i = rng.below(b.len() + 1);
                    b.insert(i, rng.below(256) as u8);
                }
            }
        }
        match Tokens::from_bytes(name, &b) {
            Ok(t) => {
                ok += 1;
                t.validate().unwrap();
            }
            Err(e) => {
                err += 1;
                assert!(e.to_string().contains("mutant.safetensors"), "{e}");
            }
        }
    }
    assert!(ok > 0 && err > 0, "ok {ok}, err {err}");
}
