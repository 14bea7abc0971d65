//! `process`: the offline path for a video. Trains tokens on the video unless `--tokens` is
//! given, then runs every frame through the `stablekeypoints` element ([`pipeline`]),
//! writing `keypoints.jsonl`, `keypoints.coco.json` and an annotated `annotated.mp4`; with
//! `--inputs`, a corpus of videos ([`crate::corpus::run`]).

use crate::args::ProcessCmd;
use crate::interrupt;
use crate::pipeline::{
    self, check_model_and_tokens, check_student, preroll, register_element, ElementJob,
};
use crate::train::{self, TrainInput, TrainJob};
use crate::video::file_error;
use stablekeypoints::estimator::Estimator;
use stablekeypoints::util::check_output_file;
use stablekeypoints::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub fn cmd_process(c: ProcessCmd) -> Result<ExitCode, Error> {
    if let Some(inputs) = &c.inputs {
        if let Some(b) = &c.objects.boxes {
            return Err(Error::Invalid(format!(
                "--boxes {}: not with --inputs: a boxes file numbers the frames of one video \
                 (process each video with --input and its own --boxes)",
                b.display()
            )));
        }
        return crate::corpus::run::cmd_process_corpus(&c, inputs);
    }
    let input = c
        .input
        .as_deref()
        .expect("clap requires --input or --inputs");
    let out_dir = &c.out_dir;
    // Everything that can be checked is checked before any decoding or training: the output
    // folder, the model and the tokens; the outputs are written under temporary names and
    // renamed into place only once complete, so that a failure leaves earlier results as
    // they were.
    check_paths(&c, input)?;
    // A student runs as it is: nothing to train.
    let student = Estimator::is_student(&c.model);
    let _model = match &c.tokens {
        _ if student => {
            check_student(&c)?;
            None
        }
        Some(t) => Some(check_model_and_tokens(&c, t)?),
        None => None,
    };
    // No output may replace an input (`--input OUT/annotated.mp4 --out-dir OUT`).
    let trained = out_dir.join("tokens.safetensors");
    let probe = ElementJob::new(&c, c.tokens.as_deref().unwrap_or(Path::new("")));
    let inputs = probe.inputs(input);
    for p in probe.outputs(out_dir) {
        inputs.check(&p, "--out-dir")?;
    }
    if c.tokens.is_none() && !student {
        inputs.check(&trained, "--out-dir")?;
    }
    // Fail before training when the element or the file cannot run.
    register_element()?;
    preroll(input)?;
    // One run per folder at a time: a second would replace the first's outputs.
    std::fs::create_dir_all(out_dir).map_err(|e| {
        Error::Invalid(format!(
            "--out-dir {}: cannot create it: {e}",
            out_dir.display()
        ))
    })?;
    let _lock = crate::corpus::lock::try_lock_folder(out_dir, "--out-dir")?;
    let tokens = match &c.tokens {
        Some(t) => t.clone(),
        None if student => PathBuf::new(),
        None => train_on_video(&c, input, trained)?,
    };
    let job = ElementJob::new(&c, &tokens);
    // From here on SIGINT/SIGTERM stop the pipeline; the temporary files are then removed.
    let armed = interrupt::Armed::new();
    let done = pipeline::run_video(input, out_dir, &job, true)?;
    drop(armed);
    let names: Vec<String> = done
        .outputs
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    eprintln!(
        "wrote {} ({} frames) in {:.1} s",
        names.join(", "),
        done.frames,
        done.seconds
    );
    Ok(ExitCode::SUCCESS)
}

/// `--input` is a video file, `--out-dir` not a file, and the boxes (read again by the
/// element) are readable: a missing or malformed file fails here, naming the file (and
/// line), before any decoding or training.
fn check_paths(c: &ProcessCmd, input: &Path) -> Result<(), Error> {
    if input.is_dir() {
        return Err(file_error(
            input,
            "is a folder; process takes one video file with --input (--inputs takes a folder \
             or list of videos)",
        ));
    }
    if !input.is_file() {
        return Err(Error::Io {
            path: input.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such video file"),
        });
    }
    let out_dir = &c.out_dir;
    if out_dir.exists() && !out_dir.is_dir() {
        return Err(Error::Invalid(format!(
            "--out-dir {}: is a file, not a folder",
            out_dir.display()
        )));
    }
    if let Some(b) = &c.objects.boxes {
        stablekeypoints::boxes::Boxes::read(b)?;
    }
    Ok(())
}

/// Trains tokens on `input` into `out` (in `--out-dir`), after checking that the outputs
/// are writable before hours of training. The tokens are written (atomically) as soon as
/// training ends: a complete result of its own, kept even if the pipeline then fails.
fn train_on_video(c: &ProcessCmd, input: &Path, out: PathBuf) -> Result<PathBuf, Error> {
    let probe = ElementJob::new(c, Path::new(""));
    for p in probe.outputs(&c.out_dir) {
        check_output_file(&p, "--out-dir")?;
    }
    train::run(&TrainJob {
        model: &c.model,
        weights: &c.weights,
        input: TrainInput::Path(input),
        out: &out,
        out_flag: "--out-dir",
        train: &c.train,
        seed: &c.seed,
        crop: c.crop.crop,
        device: c.device.device,
    })?;
    Ok(out)
}
