//! `import-tokens` and `import-pose`: the reference's `torch.save` files (its `main.py`'s
//! `embedding.pt`, `indices.pt`, `regressor.pt`) to our tokens and pose files.

use crate::args::{ImportPoseCmd, ImportTokensCmd, LabelOrder};
use stablekeypoints::eval::{self, PoseModel};
use stablekeypoints::ops::warp::AugmentRanges;
use stablekeypoints::tokens::MAX_MAP_RES;
use stablekeypoints::util::Inputs;
use stablekeypoints::{Error, Tokens};
use std::path::Path;

pub fn cmd_import_tokens(c: ImportTokensCmd) -> Result<(), Error> {
    if !c.dir.is_dir() {
        return Err(Error::Io {
            path: c.dir.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not a folder (expected the reference's embedding.pt and indices.pt in it)",
            ),
        });
    }
    if c.map_res > MAX_MAP_RES {
        return Err(Error::Invalid(format!(
            "--map-res {}: at most {MAX_MAP_RES}",
            c.map_res
        )));
    }
    let mut t = Tokens::load(&c.dir)?;
    t.map_res = c.map_res;
    t.timestep = c.noise_level.timestep();
    t.layers = c.layers;
    if t.layers.last() >= t.num_layers {
        return Err(Error::Invalid(format!(
            "--layers {}: the reference records {} observed layers (0..{})",
            t.layers,
            t.num_layers,
            t.num_layers - 1
        )));
    }
    t.augment = c.augment.apply(AugmentRanges::default())?;
    for (k, v) in [
        ("generator", "stablekeypoints import-tokens".to_string()),
        ("source", c.dir.display().to_string()),
        ("noise_level", c.noise_level.to_string()),
    ] {
        t.extra.insert(k.to_string(), v);
    }
    let mut inputs = Inputs::new();
    inputs.add("DIR", &c.dir);
    inputs.check(&c.out, "--out")?;
    t.save(&c.out)?;
    eprintln!(
        "wrote {} ({} tokens of width {}, keypoint tokens {:?}; timestep {}, map_res {}, layers {})",
        c.out.display(),
        t.num_tokens,
        t.context_dim,
        t.indices,
        t.timestep,
        t.map_res,
        t.layers
    );
    Ok(())
}

pub fn cmd_import_pose(c: ImportPoseCmd) -> Result<(), Error> {
    let tokens_path = match &c.tokens {
        Some(p) => p.clone(),
        None => c
            .regressor
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf(),
    };
    let tokens = Tokens::load(&tokens_path)?;
    let names = c.names.as_deref().map(eval::read_names).transpose()?;
    let skeleton = match &c.skeleton {
        Some(p) => eval::read_skeleton(p, names.as_deref().unwrap_or(&[]))?,
        None => Vec::new(),
    };
    let pose = PoseModel::import_reference(
        &c.regressor,
        tokens.indices.clone(),
        names,
        skeleton,
        c.label_order == LabelOrder::Yx,
    )
    .map_err(|e| match e {
        // Names or skeleton that do not fit the regressor's landmarks.
        Error::Invalid(m) if c.names.is_some() || c.skeleton.is_some() => {
            let files: Vec<String> = [("--names", &c.names), ("--skeleton", &c.skeleton)]
                .iter()
                .filter_map(|(f, p)| p.as_ref().map(|p| format!("{f} {}", p.display())))
                .collect();
            Error::Invalid(format!(
                "{} with {}: {m}",
                c.regressor.display(),
                files.join(", ")
            ))
        }
        e => e,
    })?;
    let mut inputs = Inputs::new();
    inputs.add("REGRESSOR", &c.regressor);
    for (flag, path) in [
        ("--tokens", &c.tokens),
        ("--names", &c.names),
        ("--skeleton", &c.skeleton),
    ] {
        if let Some(path) = path {
            inputs.add(flag, path);
        }
    }
    inputs.check(&c.out, "--out")?;
    pose.save(&c.out)?;
    eprintln!(
        "wrote {} ({} keypoints -> {} landmarks, tokens {})",
        c.out.display(),
        pose.num_keypoints,
        pose.num_landmarks,
        tokens_path.display()
    );
    Ok(())
}
