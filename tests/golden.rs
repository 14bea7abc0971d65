//! Parity with the diffusers reference (tests/reference/make_goldens.py): tiny SD1-style and
//! SD2-style models saved by diffusers' `save_pretrained`, maps computed by the script's own
//! implementation of method.md on top of diffusers' attention processors.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{data, flat, rel_err};
use stablekeypoints::model::{LayerSet, MapRecorder, MapSpec};
use stablekeypoints::ops::warp::Affine;
use stablekeypoints::{DetectOptions, Detector, Item, Model, Tokens};
use std::collections::HashMap;
use std::sync::Arc;

struct Case {
    model: Arc<Model>,
    tokens: Tokens,
    golden: HashMap<String, Tensor>,
}

fn load(name: &str) -> Case {
    let dir = data(name);
    let model = Arc::new(Model::load(&dir, &Device::Cpu, DType::F32).unwrap());
    let tokens = Tokens::load(&dir.join("tokens.safetensors")).unwrap();
    let golden =
        candle_core::safetensors::load(dir.join("golden.safetensors"), &Device::Cpu).unwrap();
    Case {
        model,
        tokens,
        golden,
    }
}

fn g<'a>(c: &'a Case, k: &str) -> &'a Tensor {
    c.golden
        .get(k)
        .unwrap_or_else(|| panic!("golden tensor {k} missing"))
}

fn context(c: &Case) -> stablekeypoints::model::Context {
    let e = Tensor::from_slice(
        &c.tokens.embeddings,
        (c.tokens.num_tokens, c.tokens.context_dim),
        &Device::Cpu,
    )
    .unwrap();
    c.model.prepare_context(&e).unwrap()
}

fn check_model(name: &str) {
    let c = load(name);
    let image = g(&c, "image");
    let size = image.dim(1).unwrap();
    let map_res = flat(g(&c, "map_res"))[0] as usize;
    // The reference's operating point (its noise_level -1): t = 0, in the tokens file too.
    let t = flat(g(&c, "timestep"))[0] as usize;
    assert_eq!(t, 0, "{name}: goldens not at the reference's timestep");
    assert_eq!(c.tokens.timestep, t, "{name}: tokens file timestep");

    // VAE: latent mean x scaling factor.
    let z = c.model.encode(&image.unsqueeze(0).unwrap()).unwrap();
    let e = rel_err(&z, g(&c, "latent"));
    assert!(e < 1e-4, "{name}: latent rel err {e}");

    // UNet + recorder, all N tokens, from the golden latent so errors do not compound.
    let ctx = context(&c);
    let zg = g(&c, "latent");
    let side = zg.dim(2).unwrap();
    for (key, noise) in [("maps_zero", None), ("maps_noise", Some(g(&c, "noise")))] {
        let (a, s) = c.model.schedule.noise_coefficients(t);
        let zt = match noise {
            Some(n) => ((zg * a).unwrap() + (n * s).unwrap()).unwrap(),
            None => (zg * a).unwrap(),
        };
        let mut rec = MapRecorder::new(side / 2, LayerSet::first(4), map_res, None);
        c.model.unet.record(&zt, t as f64, &ctx, &mut rec).unwrap();
        let sides: Vec<i64> = g(&c, "layer_sides").to_vec1().unwrap();
        assert_eq!(
            rec.sides().iter().map(|&s| s as i64).collect::<Vec<_>>(),
            sides,
            "{name}: recorded layers"
        );
        let maps = rec.finish().unwrap().squeeze(0).unwrap();
        let e = rel_err(&maps, g(&c, key));
        assert!(e < 1e-3, "{name}: {key} rel err {e}");
        // Softmax over all N tokens: every pixel sums to 1.
        let s = flat(&maps.sum(0).unwrap());
        assert!(
            s.iter().all(|v| (v - 1.0).abs() < 1e-4),
            "{name}: maps do not sum to 1"
        );
    }

    // Same through the public path with zero noise (encoder included).
    let m = c
        .model
        .maps_from_latent(
            &z,
            None,
            &ctx,
            &MapSpec {
                timestep: t,
                layers: LayerSet::first(4),
                map_res,
            },
            None,
        )
        .unwrap()
        .squeeze(0)
        .unwrap();
    let e = rel_err(&m, g(&c, "maps_zero"));
    assert!(e < 1e-3, "{name}: end-to-end maps rel err {e}");

    // Keypoints: argmax (+0.5) of the bilinearly upsampled selected maps.
    let opts = DetectOptions {
        noise: false,
        ..Default::default()
    };
    let mut det = Detector::new(c.model.clone(), &c.tokens, opts).unwrap();
    assert_eq!(det.input_size(), size);
    let diag = det.diagnose(Item::square(image, 0).unwrap(), None).unwrap();
    let (maps, kps) = (diag.maps, diag.detection.keypoints);
    check_keypoints(
        name,
        "plain",
        &maps,
        &kps,
        g(&c, "keypoints_zero"),
        g(&c, "scores_zero"),
    );

    // Test-time augmentation with the golden's fixed warps.
    let thetas: Vec<Vec<Vec<f32>>> = g(&c, "tta_thetas").to_vec3().unwrap();
    let warps: Vec<Affine> = thetas
        .iter()
        .map(|t| Affine {
            theta: [[t[0][0], t[0][1], t[0][2]], [t[1][0], t[1][1], t[1][2]]],
        })
        .collect();
    let diag = det
        .diagnose(Item::square(image, 2).unwrap(), Some(&warps))
        .unwrap();
    let tta = diag.maps;
    let e = rel_err(&tta, g(&c, "tta_maps"));
    assert!(e < 1e-3, "{name}: TTA maps rel err {e}");
    let peaks = diag.peaks;
    let kps: Vec<_> = peaks
        .iter()
        .enumerate()
        .map(|(id, p)| stablekeypoints::Keypoint {
            id,
            x: p.x,
            y: p.y,
            score: p.score,
        })
        .collect();
    check_keypoints(
        name,
        "tta",
        &tta,
        &kps,
        g(&c, "tta_keypoints"),
        g(&c, "tta_scores"),
    );
}

/// Keypoints equal the golden's, up to ties: where our peak differs, the golden's peak
/// pixel must be (numerically) as high on our map.
fn check_keypoints(
    name: &str,
    what: &str,
    maps: &Tensor,
    kps: &[stablekeypoints::Keypoint],
    want: &Tensor,
    scores: &Tensor,
) {
    let want: Vec<Vec<f32>> = want.to_vec2().unwrap();
    let scores = flat(scores);
    let (_, h, w) = maps.dims3().unwrap();
    let maps: Vec<Vec<Vec<f32>>> = maps.to_vec3().unwrap();
    assert_eq!(kps.len(), want.len());
    for (i, k) in kps.iter().enumerate() {
        assert!(
            (k.score - scores[i]).abs() <= 1e-4 * scores[i].abs().max(1e-3),
            "{name} {what}: score {i}: {} vs {}",
            k.score,
            scores[i]
        );
        if (k.x - want[i][0]).abs() < 1e-6 && (k.y - want[i][1]).abs() < 1e-6 {
            continue;
        }
        let col = (want[i][0] * w as f32 - 0.5).round() as usize;
        let row = (want[i][1] * h as f32 - 0.5).round() as usize;
        let there = maps[i][row][col];
        assert!(
            (k.score - there).abs() <= 1e-5 * k.score.abs(),
            "{name} {what}: keypoint {i} at ({}, {}) but golden ({}, {}) has value {there} vs peak {}",
            k.x, k.y, want[i][0], want[i][1], k.score
        );
    }
}

/// With no timestep anywhere (tokens without the metadata, default options) detection runs
/// at the reference's t = 0: its maps are the golden's, and those at t = 1 are not.
#[test]
fn default_operating_point_is_the_references() {
    let c = load("tiny-sd1");
    let mut tokens = Tokens::new(
        c.tokens.embeddings.clone(),
        c.tokens.num_tokens,
        c.tokens.context_dim,
        c.tokens.indices.clone(),
    )
    .unwrap();
    tokens.input_size = c.tokens.input_size;
    tokens.map_res = c.tokens.map_res;
    let image = g(&c, "image");
    let want = g(&c, "maps_zero")
        .index_select(
            &Tensor::from_vec(
                c.tokens
                    .indices
                    .iter()
                    .map(|&i| i as u32)
                    .collect::<Vec<_>>(),
                c.tokens.indices.len(),
                &Device::Cpu,
            )
            .unwrap(),
            0,
        )
        .unwrap();
    let maps = |timestep: Option<usize>| {
        let opts = DetectOptions {
            noise: false,
            timestep,
            ..Default::default()
        };
        let mut det = Detector::new(c.model.clone(), &tokens, opts).unwrap();
        det.diagnose(Item::square(image, 0).unwrap(), None)
            .unwrap()
            .low_res
            .unwrap()
    };
    let at_default = rel_err(&maps(None), &want);
    let at_one = rel_err(&maps(Some(1)), &want);
    eprintln!("selected maps vs golden (t = 0): default {at_default:.2e}, t = 1 {at_one:.2e}");
    assert!(at_default < 1e-4, "default timestep: rel err {at_default}");
    assert!(
        at_one > 10.0 * at_default.max(1e-6),
        "t = 1 indistinguishable: {at_one}"
    );
}

#[test]
fn tiny_sd1_matches_diffusers() {
    check_model("tiny-sd1");
}

#[test]
fn tiny_sd2_fp16_variant_matches_diffusers() {
    check_model("tiny-sd2");
}

/// The reference's `--layers` and `--noise_level`: a subset of the observed layers averages
/// exactly those layers' maps (the golden records each layer's maps separately), and noise
/// level -2 is t = 20 with its own maps.
fn check_layers_and_noise_level(name: &str) {
    let c = load(name);
    let ctx = context(&c);
    let zg = g(&c, "latent");
    let map_res = flat(g(&c, "map_res"))[0] as usize;
    let idx = |n: usize| {
        let v: Vec<u32> = c.tokens.indices[..n].iter().map(|&i| i as u32).collect();
        Tensor::from_vec(v, n, &Device::Cpu).unwrap()
    };
    let maps = |layers: &[usize], timestep: usize, n: usize| {
        let spec = MapSpec {
            timestep,
            layers: LayerSet::from_indices(layers).unwrap(),
            map_res,
        };
        c.model
            .maps_from_latent(zg, None, &ctx, &spec, Some(&idx(n)))
            .unwrap()
            .squeeze(0)
            .unwrap()
    };
    // [4 layers, 2 tokens, R, R] at zero noise, t = 0.
    let per_layer = g(&c, "layer_maps_zero_sel2");
    let mean_of = |layers: &[usize]| {
        let parts: Vec<Tensor> = layers.iter().map(|&l| per_layer.get(l).unwrap()).collect();
        (Tensor::stack(&parts, 0).unwrap().sum(0).unwrap() / layers.len() as f64).unwrap()
    };
    for layers in [&[0][..], &[2], &[1, 3], &[0, 2, 3], &[3, 1]] {
        let e = rel_err(&maps(layers, 0, 2), &mean_of(layers));
        assert!(e < 1e-4, "{name}: layers {layers:?} rel err {e}");
    }
    // The subset is not the all-layer mean.
    let apart = rel_err(&maps(&[1, 3], 0, 2), &mean_of(&[0, 1, 2, 3]));
    assert!(apart > 1e-2, "{name}: layers 1,3 vs all: {apart}");

    let t20 = stablekeypoints::options::timestep_of_noise_level(-2).unwrap();
    assert_eq!(t20, 20);
    let k = c.tokens.indices.len();
    let e = rel_err(&maps(&[0, 1, 2, 3], t20, k), g(&c, "maps_zero_t20_sel"));
    let at0 = rel_err(&maps(&[0, 1, 2, 3], 0, k), g(&c, "maps_zero_t20_sel"));
    eprintln!("{name}: maps at noise level -2 rel err {e:.2e} (those of t = 0: {at0:.2e})");
    assert!(e < 1e-4, "{name}: t = 20 rel err {e}");
    assert!(
        at0 > 10.0 * e.max(1e-6),
        "{name}: t = 0 indistinguishable ({at0})"
    );
}

#[test]
fn layer_subsets_and_noise_levels_match_diffusers() {
    check_layers_and_noise_level("tiny-sd1");
    check_layers_and_noise_level("tiny-sd2");
}

#[test]
fn tiny_sdxl_matches_diffusers() {
    check_model("tiny-sdxl");
    check_layers_and_noise_level("tiny-sdxl");
}

/// Largest |a - b|.
fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    flat(a)
        .iter()
        .zip(flat(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Zero-noise maps of all tokens, VAE included, of the model `source` loads (with the
/// architecture of the folder `config` for a single file, as diffusers' `from_single_file`
/// takes one): its largest difference to the family's diffusers golden.
fn form_error(
    c: &Case,
    source: &stablekeypoints::model::ModelSource,
    config: Option<&std::path::Path>,
) -> f32 {
    let m = Model::open_as(source, config, &Device::Cpu, DType::F32).unwrap();
    let image = g(c, "image").unsqueeze(0).unwrap();
    let z = m.encode(&image).unwrap();
    let e = Tensor::from_slice(
        &c.tokens.embeddings,
        (c.tokens.num_tokens, c.tokens.context_dim),
        &Device::Cpu,
    )
    .unwrap();
    let ctx = m.prepare_context(&e).unwrap();
    let spec = MapSpec {
        timestep: 0,
        layers: LayerSet::first(4),
        map_res: flat(g(c, "map_res"))[0] as usize,
    };
    let maps = m.maps_from_latent(&z, None, &ctx, &spec, None).unwrap();
    max_abs(&maps.squeeze(0).unwrap(), g(c, "maps_zero"))
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// The folder with its UNet cut into the shards of diffusers' own sharded save (its index,
/// committed, names the shard of every tensor).
fn sharded(name: &str, folder: &std::path::Path, out: &std::path::Path) {
    copy_dir(&folder.join("vae"), &out.join("vae"));
    let unet = out.join("unet");
    std::fs::create_dir_all(&unet).unwrap();
    std::fs::copy(folder.join("unet/config.json"), unet.join("config.json")).unwrap();
    let forms = data("forms").join(name).join("sharded");
    let index = std::fs::read_dir(&forms).unwrap().next().unwrap().unwrap();
    std::fs::copy(index.path(), unet.join(index.file_name())).unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(index.path()).unwrap()).unwrap();
    let weights = stablekeypoints::model::weights_files(folder, "unet").unwrap();
    let all = candle_core::safetensors::load(&weights[0], &Device::Cpu).unwrap();
    let mut shards: HashMap<String, HashMap<String, Tensor>> = HashMap::new();
    for (tensor, file) in v["weight_map"].as_object().unwrap() {
        shards
            .entry(file.as_str().unwrap().to_string())
            .or_default()
            .insert(tensor.clone(), all[tensor].clone());
    }
    assert!(shards.len() > 2, "{name}: {} shards", shards.len());
    for (file, tensors) in shards {
        candle_core::safetensors::save(&tensors, unet.join(file)).unwrap();
    }
}

/// The folder as the hub cache holds it: `models--org--<name>/refs/main` naming a snapshot.
fn hub_tree(name: &str, folder: &std::path::Path, cache: &std::path::Path) -> String {
    let repo = cache.join(format!("models--skp-test--{name}"));
    copy_dir(folder, &repo.join("snapshots/0123abcd"));
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    format!("skp-test/{name}")
}

/// Each family's tiny model in every form users hold weights in (a diffusers folder, the
/// hub cache, sharded weights, a single file in the original layout as .safetensors, and,
/// for SDXL, diffusers' `.bin` save and a `.ckpt` written by PyTorch) gives the maps of the
/// family's diffusers golden and has the folder's identity. The original-layout names are
/// those the golden script's conversion gives, which diffusers' `from_single_file` reads
/// back to the same weights.
#[test]
fn every_form_of_the_weights_matches_diffusers() {
    use stablekeypoints::model::single_file::write_original;
    use stablekeypoints::model::{resolve_model, ModelIdentity, ModelSource};
    let tmp = std::env::temp_dir().join(format!("skp-forms-{}", std::process::id()));
    let cache = tmp.join("hub");
    std::fs::create_dir_all(&cache).unwrap();
    std::env::set_var("HF_HUB_CACHE", &cache);
    for name in ["tiny-sd1", "tiny-sd2", "tiny-sdxl"] {
        let c = load(name);
        let folder = data(name);
        let forms = data("forms").join(name);
        let single = tmp.join(format!("{name}.safetensors"));
        write_original(&folder, &single, false).unwrap();
        check_original_names(name, &single, &forms.join("original-names.txt"));
        let shards = tmp.join(format!("{name}-sharded"));
        sharded(name, &folder, &shards);
        let id = hub_tree(name, &folder, &cache);
        let hub = resolve_model(std::path::Path::new(&id)).unwrap();
        let mut cases: Vec<(&str, std::path::PathBuf, bool)> = vec![
            ("folder", folder.clone(), false),
            ("hub cache", hub, false),
            ("sharded", shards, false),
            ("single .safetensors", single, true),
        ];
        if name == "tiny-sdxl" {
            cases.push(("diffusers .bin", forms.join("bin"), false));
            cases.push(("single .ckpt", forms.join(format!("{name}.ckpt")), true));
        }
        let want = ModelIdentity::of(&folder).unwrap().weights;
        for (form, path, is_file) in cases {
            let source = ModelSource::from(path.as_path());
            let config = is_file.then_some(folder.as_path());
            let e = form_error(&c, &source, config);
            eprintln!("{name} {form}: maps max |err| vs diffusers golden {e:.2e}");
            assert!(e < 1e-5, "{name} {form}: maps max err {e}");
            let id = ModelIdentity::of_source_as(&source, config).unwrap();
            assert_eq!(id.weights, want, "{name} {form}: identity");
        }
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// The UNet names of a single file written by `write_original` are those of the golden
/// script's conversion (`original-names.txt`), which diffusers reads back.
fn check_original_names(name: &str, file: &std::path::Path, list: &std::path::Path) {
    let text = std::fs::read_to_string(list).unwrap();
    let want: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split('\t').nth(1))
        .collect();
    let st = candle_core::safetensors::load(file, &Device::Cpu).unwrap();
    let got: std::collections::BTreeSet<&str> = st
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.starts_with("model.diffusion_model."))
        .collect();
    assert_eq!(got, want, "{name}: original-layout UNet names");
}

/// `init-model`'s tiny SDXL (the golden model's architecture, random weights) loads, runs
/// through the recorder and detects; as a single file it is the same model.
#[test]
fn init_model_writes_a_working_sdxl() {
    use stablekeypoints::init::{init_model, unet_config_json, TinyArch};
    use stablekeypoints::model::{single_file::write_original, ModelIdentity, ModelSource};
    // The full-size config is SDXL base's: a 1280-wide pooled embedding, 6 time ids of 256.
    let full = serde_json::to_vec(&unet_config_json(TinyArch::Sdxl)).unwrap();
    let full =
        stablekeypoints::model::UNetConfig::from_json_bytes(std::path::Path::new("sdxl"), &full)
            .unwrap();
    let tt = full.text_time.unwrap();
    assert_eq!((tt.pooled_dim, tt.time_embed_dim), (1280, 256));
    assert_eq!(full.transformer_layers_per_block, vec![1, 2, 10]);
    let dir = std::env::temp_dir().join(format!("skp-init-sdxl-{}", std::process::id()));
    init_model(&dir, TinyArch::TinySdxl, 3, 24, 5).unwrap();
    let model = Arc::new(Model::load(&dir, &Device::Cpu, DType::F32).unwrap());
    assert!(model.unet_config.text_time.is_some());
    assert_eq!(model.vae_config.scaling_factor, 0.13025);
    let tokens = Tokens::load(&dir.join("tokens.safetensors")).unwrap();
    let mut det = Detector::new(model, &tokens, DetectOptions::default()).unwrap();
    let c = load("tiny-sdxl");
    let kps = det
        .detect(vec![Item::square(g(&c, "image"), 0).unwrap()])
        .unwrap()
        .remove(0)
        .keypoints;
    assert_eq!(kps.len(), 5);
    let single = dir.join("model.safetensors");
    write_original(&dir, &single, false).unwrap();
    let source = ModelSource::from(single.as_path());
    assert_eq!(
        ModelIdentity::of_source_as(&source, Some(&dir))
            .unwrap()
            .weights,
        ModelIdentity::of(&dir).unwrap().weights
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Tokens train on the tiny SDXL as on the other families: finite losses, and the
/// embeddings move.
#[test]
fn tokens_train_on_sdxl() {
    use stablekeypoints::train::{MemoryImages, TrainConfig, Trainer};
    let c = load("tiny-sdxl");
    let image = flat(g(&c, "image"));
    let data = MemoryImages {
        size: 128,
        images: vec![image.clone(), image.iter().map(|v| 1.0 - v).collect()],
    };
    let cfg = TrainConfig {
        steps: 3,
        batch_size: 1,
        num_tokens: 16,
        num_keypoints: 4,
        num_candidates: 8,
        num_indices: 4,
        input_size: 128,
        map_res: 32,
        seed: 7,
        ..Default::default()
    };
    let mut trainer = Trainer::new(&c.model, &data, cfg).unwrap();
    let e0 = trainer.embeddings().to_vec();
    while trainer.step() < 3 {
        let s = trainer.train_step().unwrap();
        assert!(s.loss.is_finite() && s.loss > 0.0, "loss {}", s.loss);
    }
    let moved = e0
        .iter()
        .zip(trainer.embeddings())
        .any(|(a, b)| (a - b).abs() > 1e-6);
    assert!(moved, "embeddings did not change");
}
