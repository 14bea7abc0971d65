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
fn sdxl_text_time_is_read_and_a_refiner_refused() {
    let xl = r#","addition_embed_type":"text_time","addition_time_embed_dim":256,
            "projection_class_embeddings_input_dim":2816,"cross_attention_dim":2048,
            "transformer_layers_per_block":[1,2,10,10]"#;
    let c = UNetConfig::from_map(Path::new("u.json"), &unet_json(xl)).unwrap();
    let tt = c.text_time.unwrap();
    assert_eq!(
        (tt.time_embed_dim, tt.pooled_dim, tt.input_dim()),
        (256, 1280, 2816)
    );
    assert_eq!(c.transformer_layers_per_block, vec![1, 2, 10, 10]);
    let refiner = r#","addition_embed_type":"text_time","addition_time_embed_dim":256,
            "projection_class_embeddings_input_dim":2560,"cross_attention_dim":1280"#;
    let e = UNetConfig::from_map(Path::new("r.json"), &unet_json(refiner))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("r.json") && e.contains("SDXL refiner") && e.lines().count() == 1,
        "{e}"
    );
    let e = UNetConfig::from_map(
        Path::new("u.json"),
        &unet_json(r#","addition_embed_type":"image""#),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("field `addition_embed_type`"), "{e}");
}

#[test]
fn exporter_forms_parse_and_bad_types_name_their_field() {
    // Integers written as floats, nulls for "default", bookkeeping keys.
    let c = UNetConfig::from_map(
            Path::new("u.json"),
            &unet_json(
                r#","norm_num_groups":32.0,"layers_per_block":2.0,"sample_size":null,"_diffusers_version":"0.30.0""#,
            ),
        )
        .unwrap();
    assert_eq!(
        (c.norm_num_groups, c.layers_per_block[0], c.sample_size),
        (32, 2, 64)
    );
    for (extra, field) in [
        (r#","use_linear_projection":"yes""#, "use_linear_projection"),
        (r#","norm_eps":"small""#, "norm_eps"),
        (r#","in_channels":-4"#, "in_channels"),
        (
            r#","up_block_types":["UpBlock2D",3,"CrossAttnUpBlock2D","CrossAttnUpBlock2D"]"#,
            "up_block_types[1]",
        ),
        (r#","cross_attention_dim":[768,768]"#, "cross_attention_dim"),
    ] {
        let e = UNetConfig::from_map(Path::new("x/u.json"), &unet_json(extra))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("x/u.json: invalid config: ") && e.contains(&format!("field `{field}`")),
            "{extra}: {e}"
        );
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    let e = UNetConfig::from_map(Path::new("u.json"), &unet_json(r#","act_fn":"gelu""#))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("field `act_fn`") && e.contains("only \"silu\""),
        "{e}"
    );
    let mut m = unet_json("");
    m.remove("block_out_channels");
    let e = UNetConfig::from_map(Path::new("u.json"), &m)
        .unwrap_err()
        .to_string();
    assert!(e.contains("field `block_out_channels`: missing"), "{e}");
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
