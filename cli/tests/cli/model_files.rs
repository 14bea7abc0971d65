//! Model files in every form a user has them: a hub id in the local cache, sharded, `.bin`
//! and single-file weights (original layout, `.ckpt`), `--vae` and `--no-ema`, and a student
//! given where a diffusion model goes.

use super::*;

/// `form` (the weights of `model` in another form) gives the same keypoints with the
/// model's tokens and has the same identity.
fn assert_same_model(form: &Path, model: &Path) {
    let tokens = model.join("tokens.safetensors");
    let image = data("tiny-sd1/image_wide.png");
    let want = detect(model, &tokens, &["--json"], &[&image]);
    let got = detect(form, &tokens, &["--json"], &[&image]);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(got.stdout, want.stdout);
    // The weights' fingerprint; the older config hash is of config.json files, which a
    // single file does not have.
    let id = |m: &Path| {
        stablekeypoints::model::ModelIdentity::of(m)
            .unwrap()
            .weights
    };
    assert_eq!(id(form), id(model));
}

/// `init-model --single-file` is refused for the miniature architectures (a single file
/// has no config, and they do not follow SD's layer sizes), before anything is written; the
/// full-size form is measured in docs/models.md.
#[test]
fn init_model_single_file_is_refused_for_tiny_architectures() {
    let d = temp_dir("init-single");
    let out = run(bin()
        .args(["init-model", "--arch", "tiny-sd2", "--out"])
        .arg(d.join("m"))
        .arg("--single-file")
        .arg(d.join("m.safetensors")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("only sd15 and sd21"),
        "{err}"
    );
    assert!(!d.join("m").exists() && !d.join("m.safetensors").exists());
    let _ = std::fs::remove_dir_all(&d);
}

/// Weights in shards with a `*.safetensors.index.json` (as diffusers saves large models)
/// are the same model as the single file: the same keypoints and the same identity; a
/// missing shard is an error naming it.
#[test]
fn sharded_weights_are_the_same_model_as_the_single_file() {
    let d = temp_dir("shards");
    let model = data("tiny-sd1");
    let sharded = d.join("sharded");
    copy_dir(&model, &sharded);
    let unet = sharded.join("unet");
    let single = unet.join("diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&single).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    let half = names.len() / 2;
    let mut map = serde_json::Map::new();
    for (i, part) in [&names[..half], &names[half..]].iter().enumerate() {
        let file = format!("diffusion_pytorch_model-0000{}-of-00002.safetensors", i + 1);
        let tensors: Vec<_> = part
            .iter()
            .map(|n| (n.to_string(), st.tensor(n).unwrap()))
            .collect();
        safetensors::serialize_to_file(tensors, None, &unet.join(&file)).unwrap();
        for n in part.iter() {
            map.insert(n.to_string(), file.clone().into());
        }
    }
    std::fs::remove_file(&single).unwrap();
    let index = unet.join("diffusion_pytorch_model.safetensors.index.json");
    let json = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(&index, json.to_string()).unwrap();

    assert_same_model(&sharded, &model);
    let (tokens, image) = (
        model.join("tokens.safetensors"),
        data("tiny-sd1/image_wide.png"),
    );

    std::fs::remove_file(unet.join("diffusion_pytorch_model-00002-of-00002.safetensors")).unwrap();
    assert_clean_error(
        &detect(&sharded, &tokens, &[], &[&image]),
        &[
            "diffusion_pytorch_model.safetensors.index.json",
            "shard diffusion_pytorch_model-00002-of-00002.safetensors",
            "is missing",
        ],
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// diffusers folders with only PyTorch `.bin` weights (written here in `torch.save`'s zip
/// format by `tests/python/torch_save.py`, without PyTorch) are the same model as the
/// safetensors: the same keypoints and the same identity.
#[test]
fn bin_weights_are_the_same_model_as_the_safetensors() {
    let d = temp_dir("bin");
    let model = data("tiny-sd1");
    let bins = d.join("bin");
    copy_dir(&model, &bins);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/torch_save.py");
    for part in ["unet", "vae"] {
        let st = bins.join(part).join("diffusion_pytorch_model.safetensors");
        let out = Command::new("python3")
            .arg(&script)
            .arg(&st)
            .arg(bins.join(part).join("diffusion_pytorch_model.bin"))
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::remove_file(st).unwrap();
    }
    assert_same_model(&bins, &model);
    let (tokens, image) = (
        model.join("tokens.safetensors"),
        data("tiny-sd1/image_wide.png"),
    );

    // A .bin that is not a torch.save archive is an error naming it.
    let vae = bins.join("vae").join("diffusion_pytorch_model.bin");
    std::fs::write(&vae, b"not a zip").unwrap();
    assert_clean_error(
        &detect(&bins, &tokens, &[], &[&image]),
        &["diffusion_pytorch_model.bin"],
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// A student file where a diffusion model is needed (given to `train`) is named as a
/// student file, not as a folder that does not exist or a foreign checkpoint.
#[test]
fn a_student_given_as_a_diffusion_model_is_called_a_student() {
    let d = temp_dir("file-model");
    let student =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/figure/student.safetensors");
    let out = run(bin()
        .args(["train", "--model"])
        .arg(&student)
        .arg("--input")
        .arg(data("tiny-sd1/image.png"))
        .arg("--out")
        .arg(d.join("t.safetensors")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !err.contains("panicked"), "{err}");
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.contains("student.safetensors: is a student file of `stablekeypoints distill`, not a diffusion model"),
        "{err}"
    );
    assert!(!d.join("t.safetensors").exists());
    let _ = std::fs::remove_dir_all(&d);
}

/// Single-file checkpoints in the original Stable Diffusion layout (`model.diffusion_model.*`,
/// `first_stage_model.*`), SD 1.x and 2.x alike, are the same model as their diffusers
/// folder: the same keypoints and the same identity; with EMA copies those are read, and
/// `--no-ema` reads the others (another model).
#[test]
fn single_files_in_the_original_layout_are_the_same_model_as_the_folder() {
    use stablekeypoints::model::{single_file::write_original, ModelIdentity, ModelSource};
    let d = temp_dir("single-file");
    for folder in single_file_archs(&d) {
        let plain = folder.with_extension("safetensors");
        write_original(&folder, &plain, false).unwrap();
        assert_same_model(&plain, &folder);
        let ema = folder.with_extension("ema.safetensors");
        write_original(&folder, &ema, true).unwrap();
        assert_same_model(&ema, &folder);
        let no_ema = ModelSource {
            model: ema.clone(),
            no_ema: true,
            ..ModelSource::default()
        };
        assert_ne!(
            ModelIdentity::of_source(&no_ema).unwrap().weights,
            ModelIdentity::of(&folder).unwrap().weights
        );
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// Single files that are not a model this engine runs end in one line naming the file and
/// what is wrong: truncated, foreign (no UNet), a class-label conditioning that is not
/// SDXL's, an inpainting UNet, no VAE.
#[test]
fn single_files_that_cannot_load_say_why() {
    use stablekeypoints::model::single_file::write_original;
    let d = temp_dir("single-file-errors");
    let folder = single_file_archs(&d).remove(0);
    let good = d.join("good.safetensors");
    write_original(&folder, &good, false).unwrap();
    let tensors = candle_core::safetensors::load(&good, &Device::Cpu).unwrap();
    let write =
        |name: &str, edit: &dyn Fn(&mut std::collections::HashMap<String, candle_core::Tensor>)| {
            let mut t = tensors.clone();
            edit(&mut t);
            let p = d.join(name);
            candle_core::safetensors::save(&t, &p).unwrap();
            p
        };
    let truncated = d.join("truncated.safetensors");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let foreign = write("foreign.safetensors", &|t| {
        t.retain(|k, _| k.starts_with("first_stage_model."))
    });
    let no_vae = write("no-vae.safetensors", &|t| {
        t.retain(|k, _| !k.starts_with("first_stage_model."))
    });
    let label = write("class-label.safetensors", &|t| {
        let x = candle_core::Tensor::zeros((8, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        t.insert("model.diffusion_model.label_emb.0.weight".into(), x);
    });
    let inpaint = write("inpaint.safetensors", &|t| {
        let k = "model.diffusion_model.input_blocks.0.0.weight";
        let w = candle_core::Tensor::zeros((32, 9, 3, 3), candle_core::DType::F32, &Device::Cpu);
        t.insert(k.into(), w.unwrap());
    });
    let tokens = folder.join("tokens.safetensors");
    let image = data("tiny-sd1/image_wide.png");
    for (file, why) in [
        (&truncated, "not a valid safetensors file"),
        (
            &foreign,
            "not a Stable Diffusion checkpoint in the original layout",
        ),
        (
            &no_vae,
            "has no VAE (no first_stage_model.* tensors); pass --vae",
        ),
        (
            &label,
            "label embedding `model.diffusion_model.label_emb.0.weight` other than SDXL's",
        ),
        (
            &inpaint,
            "the UNet takes 9 input channels (an inpainting UNet)",
        ),
    ] {
        let name = file.file_name().unwrap().to_str().unwrap();
        assert_clean_error(&detect(file, &tokens, &[], &[&image]), &[name, why]);
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// `--vae` takes the VAE from a folder or a single file: a single file without one plus
/// its folder's VAE is the folder's model; another VAE is another model. `--no-ema` reads a
/// single file's plain UNet weights.
#[test]
fn vae_and_no_ema_choose_the_parts() {
    use stablekeypoints::model::{single_file::write_original, ModelIdentity, ModelSource};
    let d = temp_dir("vae-flag");
    let folder = single_file_archs(&d).remove(0);
    let whole = d.join("whole.safetensors");
    write_original(&folder, &whole, true).unwrap();
    let mut tensors = candle_core::safetensors::load(&whole, &Device::Cpu).unwrap();
    let vae_only: std::collections::HashMap<_, _> = tensors
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("first_stage_model.")?.to_string(), v.clone())))
        .collect();
    let vae_file = d.join("vae.safetensors");
    candle_core::safetensors::save(&vae_only, &vae_file).unwrap();
    tensors.retain(|k, _| !k.starts_with("first_stage_model."));
    let unet_only = d.join("unet-only.safetensors");
    candle_core::safetensors::save(&tensors, &unet_only).unwrap();

    let tokens = folder.join("tokens.safetensors");
    let image = data("tiny-sd1/image_wide.png");
    let want = detect(&folder, &tokens, &["--json"], &[&image]);
    let id = |model: &Path, vae: Option<&Path>, no_ema: bool| {
        ModelIdentity::of_source(&ModelSource {
            model: model.to_path_buf(),
            vae: vae.map(Path::to_path_buf),
            no_ema,
        })
        .unwrap()
        .weights
    };
    for vae in [&vae_file, &folder, &folder.join("vae")] {
        let vae_arg = vae.to_str().unwrap();
        let got = detect(
            &unet_only,
            &tokens,
            &["--json", "--vae", vae_arg],
            &[&image],
        );
        assert!(
            got.status.success(),
            "{}",
            String::from_utf8_lossy(&got.stderr)
        );
        assert_eq!(got.stdout, want.stdout, "--vae {vae_arg}");
        assert_eq!(id(&unet_only, Some(vae), false), id(&folder, None, false));
    }
    // Another VAE: another model.
    let other = data("tiny-sd1");
    assert_ne!(id(&folder, Some(&other), false), id(&folder, None, false));
    // --no-ema: the plain (halved) weights.
    let plain = detect(&whole, &tokens, &["--json", "--no-ema"], &[&image]);
    assert!(
        plain.status.success(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    assert_ne!(plain.stdout, want.stdout);
    assert_ne!(id(&whole, None, true), id(&whole, None, false));
    std::fs::remove_dir_all(&d).unwrap();
}

/// `.ckpt` training checkpoints in the original layout (a dict with `state_dict` beside
/// `optimizer_states` and counters; written by `tests/python/torch_save.py --ckpt`, without
/// PyTorch) are the same model as the folder; with EMA copies those are read.
#[test]
fn ckpt_files_are_the_same_model_as_the_folder() {
    use stablekeypoints::model::single_file::write_original;
    let d = temp_dir("ckpt");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/torch_save.py");
    for folder in single_file_archs(&d) {
        let st = folder.with_extension("safetensors");
        write_original(&folder, &st, true).unwrap();
        let ckpt = folder.with_extension("ckpt");
        let out = Command::new("python3")
            .arg(&script)
            .arg("--ckpt")
            .arg(&st)
            .arg(&ckpt)
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_same_model(&ckpt, &folder);
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// A hub id is found in the local cache as `huggingface-cli download` leaves it (snapshot
/// files are links into `blobs/`, `refs/main` names the snapshot) and gives the same
/// keypoints as the folder; an id that is not cached says where it looked and how to get it.
#[test]
fn a_hub_id_in_the_local_cache_is_the_same_model_as_its_folder() {
    let d = temp_dir("hub");
    let model = data("tiny-sd1");
    let repo = d.join("hub").join("models--tiny-org--tiny-sd1");
    let snapshot = repo.join("snapshots").join("0123abcd");
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), "0123abcd").unwrap();
    for (i, part) in ["unet", "vae"].iter().enumerate() {
        std::fs::create_dir_all(snapshot.join(part)).unwrap();
        for (j, file) in ["config.json", "diffusion_pytorch_model.safetensors"]
            .iter()
            .enumerate()
        {
            let blob = repo.join("blobs").join(format!("blob{i}{j}"));
            std::fs::copy(model.join(part).join(file), &blob).unwrap();
            std::os::unix::fs::symlink(
                Path::new("../../../blobs").join(format!("blob{i}{j}")),
                snapshot.join(part).join(file),
            )
            .unwrap();
        }
    }
    let tokens = model.join("tokens.safetensors");
    let image = data("tiny-sd1/image_wide.png");
    let by_folder = detect(&model, &tokens, &["--json"], &[&image]);
    assert!(
        by_folder.status.success(),
        "{}",
        String::from_utf8_lossy(&by_folder.stderr)
    );
    let mut c = bin();
    c.env("HF_HUB_CACHE", d.join("hub"))
        .args([
            "detect",
            "--model",
            "tiny-org/tiny-sd1",
            "--json",
            "--tokens",
        ])
        .arg(&tokens)
        .arg(&image);
    let by_id = run(&mut c);
    assert!(
        by_id.status.success(),
        "{}",
        String::from_utf8_lossy(&by_id.stderr)
    );
    assert_eq!(by_id.stdout, by_folder.stdout);

    let mut c = bin();
    c.env("HF_HUB_CACHE", d.join("hub"))
        .args(["detect", "--model", "tiny-org/other", "--tokens"])
        .arg(&tokens)
        .arg(&image);
    // clap's form for a bad flag value: the error, then where to find help.
    let out = run(&mut c);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !err.contains("panicked"), "{err}");
    for needle in [
        "'--model <DIR|ID|FILE>'",
        "models--tiny-org--other does not exist",
        "huggingface-cli download tiny-org/other",
    ] {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    let _ = std::fs::remove_dir_all(&d);
}
