//! What `process` checks before any decoding or training, as the element will check it at
//! start, so that a mistake fails early with an error naming the file at fault.

use crate::args::ProcessCmd;
use crate::video;
use stablekeypoints::pose::PoseModel;
use stablekeypoints::{DetectOptions, Detector, Error, Model, Tokens};
use std::path::Path;
use std::sync::Arc;

/// A student file as `--model` (with `--tokens`, those must be its teacher's), checked as the
/// element will check it, with the pose file.
pub fn check_student(c: &ProcessCmd) -> Result<(), Error> {
    let (device, _) = c.device.device.open()?;
    let student = stablekeypoints::student::Student::load(&c.model, &device)?;
    if let Some(t) = &c.tokens {
        student.check_tokens(&Tokens::load(t)?, t)?;
    }
    if let Some(path) = &c.pose {
        PoseModel::load(path)?
            .check_tokens(
                &student.info.token_indices,
                &student.info.tokens_hash,
                &format!("student {}", c.model.display()),
            )
            .map_err(|e| Error::Invalid(format!("--pose {}: {e}", path.display())))?;
    }
    Ok(())
}

/// The model, the tokens and the element's settings, checked as the element will check them
/// at start, so that a mistake fails before any decoding or training with an error naming
/// the file at fault.
///
/// The model comes from the cache the elements share, and is returned: while the caller
/// holds it, the elements it starts use it instead of loading their own.
pub fn check_model_and_tokens(c: &ProcessCmd, tokens_path: &Path) -> Result<Arc<Model>, Error> {
    c.device.device.open()?;
    // The element's cache logs through GStreamer.
    video::init()?;
    let tokens = Tokens::load(tokens_path)?;
    let model =
        gststablekeypoints::shared_model(&c.weights.source(&c.model), &c.device.device.to_string())
            .map_err(Error::Invalid)?;
    let opts = DetectOptions {
        augmentations: c.element.pass.augmentations,
        crop: c.crop.crop,
        ..Default::default()
    };
    Detector::new(model.clone(), &tokens, opts).map_err(|e| match e {
        Error::Invalid(m) => Error::Tokens {
            path: tokens_path.to_path_buf(),
            msg: m,
        },
        e => e,
    })?;
    if let Some(path) = &c.pose {
        // As the element checks it at start: fitted with these tokens.
        let pose = PoseModel::load(path)?;
        if pose.token_indices != tokens.indices {
            return Err(Error::Invalid(format!(
                "--pose {}: it was fitted with token indices {:?} but tokens {} select {:?}",
                path.display(),
                pose.token_indices,
                tokens_path.display(),
                tokens.indices
            )));
        }
        pose.regressor()
            .map_err(|e| Error::Invalid(format!("--pose {}: {e}", path.display())))?;
    }
    Ok(model)
}
