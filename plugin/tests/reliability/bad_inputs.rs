//! Bad models, tokens and properties: an element error on READY->PAUSED naming the file and
//! the problem; the count properties' bounds.

use super::*;

/// Writes a safetensors file by hand (the core's writer refuses invalid token sets).
fn safetensors_bytes(
    tensors: &[(&str, &str, Vec<usize>, Vec<u8>)],
    meta: &[(&str, &str)],
) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape,
                               "data_offsets": [data.len(), data.len() + bytes.len()]}),
        );
        data.extend_from_slice(bytes);
    }
    if !meta.is_empty() {
        let m: serde_json::Map<String, serde_json::Value> = meta
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        header.insert("__metadata__".into(), m.into());
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

/// A tokens file with `n` x `c` finite embeddings, the given indices and metadata.
fn tokens_bytes(n: usize, c: usize, indices: &[i64], meta: &[(&str, &str)]) -> Vec<u8> {
    let emb: Vec<u8> = (0..n * c)
        .flat_map(|i| ((i % 17) as f32 * 0.1 - 0.8).to_le_bytes())
        .collect();
    let idx: Vec<u8> = indices.iter().flat_map(|v| v.to_le_bytes()).collect();
    safetensors_bytes(
        &[
            ("embeddings", "F32", vec![n, c], emb),
            ("indices", "I64", vec![indices.len()], idx),
        ],
        meta,
    )
}

/// A private copy of the tiny model, to break.
fn model_copy(name: &str) -> PathBuf {
    let d = scratch().join("broken").join(name);
    let _ = std::fs::remove_dir_all(&d);
    common::temp::copy_dir(model_dir(), &d);
    d
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(v.as_object_mut().unwrap());
    std::fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// Sets up `stablekeypoints` with `props` in `videotestsrc ! stablekeypoints ! fakesink`,
/// checks that NULL->READY succeeds and READY->PAUSED fails, and returns the text of the
/// Sets up `stablekeypoints` with `props` in `videotestsrc ! stablekeypoints ! fakesink`,
/// checks that NULL->READY succeeds and READY->PAUSED fails, and returns the text of the
/// error message the element posted. `what` names the case in a failure.
fn start_error(what: &str, props: &[(&str, String)]) -> String {
    init();
    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("videotestsrc").build().unwrap();
    let skp = gst::ElementFactory::make("stablekeypoints")
        .name("skp")
        .build()
        .unwrap();
    for (k, v) in props {
        skp.set_property_from_str(k, v);
    }
    let sink = gst::ElementFactory::make("fakesink").build().unwrap();
    pipeline.add_many([&src, &skp, &sink]).unwrap();
    gst::Element::link_many([&src, &skp, &sink]).unwrap();
    let bus = pipeline.bus().unwrap();
    pipeline
        .set_state(gst::State::Ready)
        .expect("NULL->READY loads nothing and succeeds");
    let res = pipeline.set_state(gst::State::Paused);
    let err = bus
        .iter_timed(gst::ClockTime::from_seconds(10))
        .find_map(|m| match m.view() {
            gst::MessageView::Error(e) => Some((
                e.error().to_string(),
                e.debug().map(|d| d.to_string()).unwrap_or_default(),
                m.src().map(|s| s.name().to_string()),
            )),
            _ => None,
        });
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(
        res.is_err(),
        "{what}: READY->PAUSED succeeded with {props:?}"
    );
    let (text, debug, src) =
        err.unwrap_or_else(|| panic!("{what}: no error message for {props:?}"));
    assert_eq!(src.as_deref(), Some("skp"), "{what}: {text}");
    assert!(
        !text.to_lowercase().contains("panic") && !debug.to_lowercase().contains("panic"),
        "{what}: panicked: {text} {debug}"
    );
    text
}

/// What is wrong, the element properties, and the texts the message must contain.
type Case = (String, Vec<(&'static str, String)>, Vec<String>);

type JsonMap = serde_json::Map<String, serde_json::Value>;

/// What is wrong; how to break `m`, a private copy of the tiny model, returning the model
/// path to set and the path the message must name; the problem the message must name.
type ModelRow = (
    &'static str,
    fn(&Path) -> (PathBuf, PathBuf),
    &'static [&'static str],
);

fn weights(m: &Path, part: &str) -> PathBuf {
    m.join(part).join("diffusion_pytorch_model.safetensors")
}

/// Rewrites the weights of `m`'s `part` with `f` of their bytes: (`m`, the weights file).
fn rewrite_weights(m: &Path, part: &str, f: impl FnOnce(Vec<u8>) -> Vec<u8>) -> (PathBuf, PathBuf) {
    let w = weights(m, part);
    std::fs::write(&w, f(std::fs::read(&w).unwrap())).unwrap();
    (m.to_path_buf(), w)
}

/// Writes `bytes` as `m`'s `part` config: (`m`, the config file).
fn write_config(m: &Path, part: &str, bytes: &[u8]) -> (PathBuf, PathBuf) {
    let c = m.join(part).join("config.json");
    std::fs::write(&c, bytes).unwrap();
    (m.to_path_buf(), c)
}

/// Edits `m`'s `part` config: (`m`, the config file).
fn edit_config(m: &Path, part: &str, edit: impl FnOnce(&mut JsonMap)) -> (PathBuf, PathBuf) {
    let c = m.join(part).join("config.json");
    edit_json(&c, edit);
    (m.to_path_buf(), c)
}

const MODEL_ROWS: &[ModelRow] = &[
    (
        "missing model",
        |m| (m.join("no-such-model"), m.join("no-such-model")),
        &["does not exist"],
    ),
    // A file is read as a single-file checkpoint.
    (
        "model is a file that is no checkpoint",
        |m| {
            let p = m.join("model-is-a-file");
            std::fs::write(&p, b"not a checkpoint").unwrap();
            (p.clone(), p)
        },
        &["not a valid safetensors file"],
    ),
    (
        "directory without unet/",
        |m| {
            let p = m.join("empty-model");
            std::fs::create_dir_all(&p).unwrap();
            (p.clone(), p.join("unet"))
        },
        &["no `unet/` directory"],
    ),
    (
        "directory without vae/",
        |m| {
            std::fs::remove_dir_all(m.join("vae")).unwrap();
            (m.to_path_buf(), m.join("vae"))
        },
        &["no `vae/` directory"],
    ),
    (
        "unet/ without weights",
        |m| {
            std::fs::remove_file(weights(m, "unet")).unwrap();
            (m.to_path_buf(), m.join("unet"))
        },
        &["no diffusion_pytorch_model"],
    ),
    (
        "safetensors renamed to .bin",
        |m| {
            let bin = m.join("unet/diffusion_pytorch_model.bin");
            std::fs::rename(weights(m, "unet"), &bin).unwrap();
            (m.to_path_buf(), bin)
        },
        &["not a PyTorch weights file"],
    ),
    (
        "truncated unet weights",
        |m| rewrite_weights(m, "unet", |b| b[..b.len() / 2].to_vec()),
        &["not a valid safetensors"],
    ),
    (
        "vae weights cut inside the header",
        |m| rewrite_weights(m, "vae", |b| b[..100].to_vec()),
        &["not a valid safetensors"],
    ),
    (
        "garbage unet weights",
        |m| rewrite_weights(m, "unet", |_| noise_bytes(4096, 3)),
        &["not a valid safetensors"],
    ),
    (
        "empty vae weights",
        |m| rewrite_weights(m, "vae", |_| Vec::new()),
        &["not a valid safetensors"],
    ),
    (
        "header length past the end",
        |m| {
            rewrite_weights(m, "unet", |mut b| {
                b[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
                b
            })
        },
        &["not a valid safetensors"],
    ),
    (
        "weights without the model's tensors",
        |m| rewrite_weights(m, "vae", |_| std::fs::read(tokens_path()).unwrap()),
        &["cannot find tensor"],
    ),
    // config.json files.
    (
        "missing unet config",
        |m| {
            let c = m.join("unet/config.json");
            std::fs::remove_file(&c).unwrap();
            (m.to_path_buf(), c)
        },
        &["No such file"],
    ),
    (
        "truncated vae config",
        |m| write_config(m, "vae", b"{\"block_out_channels\": [32, "),
        &["not valid JSON"],
    ),
    (
        "config not an object",
        |m| write_config(m, "unet", b"[1, 2, 3]"),
        &["not a JSON object"],
    ),
    (
        "unknown unet field",
        |m| {
            edit_config(m, "unet", |c| {
                c.insert("addition_embed_type".into(), "image".into());
            })
        },
        &["addition_embed_type", "unsupported value"],
    ),
    (
        "unknown block type",
        |m| {
            edit_config(m, "unet", |c| {
                c["down_block_types"][0] = "SimpleCrossAttnDownBlock2D".into();
            })
        },
        &["unsupported block type SimpleCrossAttnDownBlock2D"],
    ),
    (
        "channels not divisible by groups",
        |m| {
            edit_config(m, "unet", |c| {
                c.insert("norm_num_groups".into(), 7.into());
            })
        },
        &["not divisible by norm_num_groups = 7"],
    ),
    (
        "block lists of different lengths",
        |m| {
            edit_config(m, "unet", |c| {
                let ups = serde_json::json!(["UpBlock2D", "CrossAttnUpBlock2D"]);
                c.insert("up_block_types".into(), ups);
            })
        },
        &["up_block_types 2"],
    ),
    (
        "per-block list of the wrong length",
        |m| {
            edit_config(m, "unet", |c| {
                c.insert("attention_head_dim".into(), serde_json::json!([2, 2]));
            })
        },
        &["attention_head_dim", "has 2 entries but there are 4 blocks"],
    ),
    (
        "70 blocks (shift overflow)",
        |m| {
            edit_config(m, "unet", |c| {
                c.insert("block_out_channels".into(), serde_json::json!(vec![32; 70]));
                let downs = serde_json::json!(vec!["DownBlock2D"; 70]);
                c.insert("down_block_types".into(), downs);
                let ups = serde_json::json!(vec!["UpBlock2D"; 70]);
                c.insert("up_block_types".into(), ups);
            })
        },
        &["at most 8"],
    ),
    (
        "vae not RGB",
        |m| {
            edit_config(m, "vae", |c| {
                c.insert("in_channels".into(), 1.into());
            })
        },
        &["expected 3 (RGB)"],
    ),
    (
        "field of the wrong type",
        |m| {
            edit_config(m, "unet", |c| {
                c.insert("layers_per_block".into(), "two".into());
            })
        },
        &["layers_per_block"],
    ),
    // The message names the weights, not the config.
    (
        "config contradicts the weights",
        |m| {
            edit_config(m, "unet", |c| {
                c.insert("cross_attention_dim".into(), 48.into());
            });
            (m.to_path_buf(), weights(m, "unet"))
        },
        &["shape"],
    ),
];

/// Each model row on its own copy of the tiny model, with the good tokens.
fn model_cases() -> Vec<Case> {
    let tokens = tokens_path().display().to_string();
    MODEL_ROWS
        .iter()
        .enumerate()
        .map(|(i, (what, setup, problems))| {
            let (model, named) = setup(&model_copy(&format!("row-{i}")));
            let mut needles = vec![named.display().to_string()];
            needles.extend(problems.iter().map(|p| p.to_string()));
            let props = vec![
                ("model", model.display().to_string()),
                ("tokens", tokens.clone()),
            ];
            (what.to_string(), props, needles)
        })
        .collect()
}

/// What is wrong, the file's name and bytes, the problem the message must name.
fn tokens_rows() -> Vec<(&'static str, &'static str, Vec<u8>, &'static str)> {
    let all: Vec<i64> = (0..NUM_KEYPOINTS as i64).collect();
    let zeros = |n: usize| vec![0; n * 4];
    vec![
        (
            "garbage tokens",
            "garbage.safetensors",
            noise_bytes(300, 9),
            "not a safetensors file",
        ),
        (
            "empty tokens file",
            "empty.safetensors",
            Vec::new(),
            "not a safetensors file",
        ),
        (
            "truncated tokens",
            "truncated.safetensors",
            {
                let b = tokens_bytes(NUM_TOKENS, CONTEXT_DIM, &all, &[]);
                b[..b.len() - 40].to_vec()
            },
            "not a safetensors file",
        ),
        (
            "tokens of the wrong width",
            "width.safetensors",
            tokens_bytes(NUM_TOKENS, 48, &all, &[]),
            "tokens have width 48",
        ),
        (
            "index out of range",
            "range.safetensors",
            tokens_bytes(NUM_TOKENS, CONTEXT_DIM, &[0, 24], &[]),
            "holds 24, out of range for 24 tokens",
        ),
        (
            "negative index",
            "negative.safetensors",
            tokens_bytes(NUM_TOKENS, CONTEXT_DIM, &[0, -1], &[]),
            "non-negative",
        ),
        (
            "duplicate index",
            "twice.safetensors",
            tokens_bytes(NUM_TOKENS, CONTEXT_DIM, &[3, 3], &[]),
            "token 3 twice",
        ),
        (
            "no keypoint tokens",
            "no-indices.safetensors",
            tokens_bytes(NUM_TOKENS, CONTEXT_DIM, &[], &[]),
            "`indices` is empty",
        ),
        (
            "no tokens at all",
            "no-tokens.safetensors",
            tokens_bytes(0, CONTEXT_DIM, &[0], &[]),
            "`embeddings` is empty",
        ),
        (
            "embeddings not a matrix",
            "shape.safetensors",
            safetensors_bytes(
                &[
                    (
                        "embeddings",
                        "F32",
                        vec![NUM_TOKENS * CONTEXT_DIM],
                        zeros(NUM_TOKENS * CONTEXT_DIM),
                    ),
                    ("indices", "I64", vec![1], vec![0; 8]),
                ],
                &[],
            ),
            "must be [N, context_dim]",
        ),
        (
            "no indices tensor",
            "no-indices-tensor.safetensors",
            safetensors_bytes(
                &[(
                    "embeddings",
                    "F32",
                    vec![NUM_TOKENS, CONTEXT_DIM],
                    zeros(NUM_TOKENS * CONTEXT_DIM),
                )],
                &[],
            ),
            "missing tensor `indices`",
        ),
        (
            "non-finite embedding",
            "nan.safetensors",
            safetensors_bytes(
                &[
                    (
                        "embeddings",
                        "F32",
                        vec![1, CONTEXT_DIM],
                        f32::NAN.to_le_bytes().repeat(CONTEXT_DIM),
                    ),
                    ("indices", "I64", vec![1], vec![0; 8]),
                ],
                &[],
            ),
            "non-finite",
        ),
        (
            "input_size not a multiple of 64",
            "size.safetensors",
            tokens_bytes(NUM_TOKENS, CONTEXT_DIM, &all, &[("input_size", "100")]),
            "input size 100 must be a positive multiple of 64",
        ),
        (
            "huge input_size",
            "huge.safetensors",
            tokens_bytes(
                NUM_TOKENS,
                CONTEXT_DIM,
                &all,
                &[("input_size", "1099511627776")],
            ),
            "larger than 4096",
        ),
        (
            "bad metadata",
            "meta.safetensors",
            tokens_bytes(NUM_TOKENS, CONTEXT_DIM, &all, &[("map_res", "lots")]),
            "`map_res` = \"lots\" is not a non-negative integer",
        ),
        (
            "timestep out of range",
            "timestep.safetensors",
            tokens_bytes(NUM_TOKENS, CONTEXT_DIM, &all, &[("timestep", "1000")]),
            "outside 0..1000",
        ),
    ]
}

/// The tokens rows and two tokens paths that are no file, with the good model.
fn tokens_cases() -> Vec<Case> {
    let model = model_dir().display().to_string();
    let dir = scratch().join("bad-inputs");
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("no-such-tokens.safetensors");
    let directory = dir.join("tokens-dir.safetensors");
    std::fs::create_dir_all(&directory).unwrap();
    let mut cases = vec![
        ("missing tokens", missing, "No such file"),
        ("tokens path is a directory", directory, "directory"),
    ];
    for (what, name, bytes, problem) in tokens_rows() {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        cases.push((what, p, problem));
    }
    cases
        .into_iter()
        .map(|(what, p, problem)| {
            let props = vec![
                ("model", model.clone()),
                ("tokens", p.display().to_string()),
            ];
            let needles = vec![p.display().to_string(), problem.to_string()];
            (what.to_string(), props, needles)
        })
        .collect()
}

/// Other properties: the message names the model.
fn property_cases() -> Vec<Case> {
    let (model, tokens) = (
        model_dir().display().to_string(),
        tokens_path().display().to_string(),
    );
    [
        (
            "input-size not a multiple of 64",
            "input-size",
            "100",
            "input size 100",
        ),
        (
            "unknown device",
            "device",
            "tpu:0",
            "unknown device \"tpu:0\"",
        ),
    ]
    .into_iter()
    .map(|(what, prop, value, problem)| {
        let props = vec![
            ("model", model.clone()),
            ("tokens", tokens.clone()),
            (prop, value.to_string()),
        ];
        (
            what.to_string(),
            props,
            vec![model.clone(), problem.to_string()],
        )
    })
    .collect()
}

#[test]
fn bad_models_and_tokens_fail_ready_to_paused_naming_file_and_problem() {
    let mut cases = model_cases();
    cases.extend(tokens_cases());
    cases.extend(property_cases());
    // An uncreatable records file is the publish element's (tests/publish).
    let mut failures = Vec::new();
    for (what, props, needles) in &cases {
        let text = start_error(what, props);
        println!("{what}: {text}");
        for n in needles {
            if !text.contains(n.as_str()) {
                failures.push(format!("{what}: message {text:?} does not contain {n:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let _ = std::fs::remove_dir_all(scratch().join("broken"));
    // The element is usable again after all those failures.
    let mut hn = harness("", video_info(F::Rgb, 16, 16).to_caps().unwrap());
    let info = video_info(F::Rgb, 16, 16);
    hn.push(Pixels::random(F::Rgb, 16, 16, 1).standard_buffer(&info, 1))
        .unwrap();
    read_meta(&hn.pull().unwrap());
}

#[test]
fn count_properties_have_the_cli_s_bounds() {
    init();
    let e = gst::ElementFactory::make("stablekeypoints")
        .build()
        .unwrap();
    for (name, max) in [
        ("augmentations", stablekeypoints::limits::MAX_AUGMENTATIONS),
        ("batch-size", stablekeypoints::limits::MAX_BATCH_SIZE),
    ] {
        let p = e.find_property(name).unwrap();
        let p = p.downcast_ref::<gst::glib::ParamSpecUInt>().unwrap();
        assert_eq!((p.minimum(), p.maximum()), (1, max as u32), "{name}");
    }
    // A value past the bound that reaches the detector anyway is refused at start.
    let tokens = Tokens::load(&tokens_path()).unwrap();
    let model = Arc::new(
        Model::load(
            model_dir(),
            &candle_core::Device::Cpu,
            candle_core::DType::F32,
        )
        .unwrap(),
    );
    let opts = DetectOptions {
        augmentations: stablekeypoints::limits::MAX_AUGMENTATIONS + 1,
        ..Default::default()
    };
    let e = Detector::new(model, &tokens, opts)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("augmentations 65") && e.contains("between 1 and 64"),
        "{e}"
    );
}
