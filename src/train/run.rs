//! A whole run: train to the configured steps with checkpoints, then vote.

use super::trainer::StepStats;
use super::Trainer;
use crate::error::{Error, Result};
use crate::tokens::Tokens;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How [`run`] checkpoints.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Checkpoint file; `None` = no checkpoints.
    pub checkpoint: Option<PathBuf>,
    /// Write a checkpoint every this many steps and after the last one (0 = only after the last).
    pub checkpoint_every: usize,
    /// Continue from the checkpoint (which must exist).
    pub resume: bool,
}

/// What [`run`] reports as it goes.
#[derive(Debug)]
pub enum Event<'e> {
    /// Resumed from a checkpoint at this step.
    Resumed {
        step: usize,
    },
    /// An optimiser step finished; `eta_seconds` estimates the remaining training time.
    Step {
        stats: &'e StepStats,
        eta_seconds: f64,
    },
    Checkpoint {
        step: usize,
        path: &'e Path,
    },
    Vote {
        done: usize,
        total: usize,
    },
}

/// How [`run`] ended.
#[derive(Debug)]
pub enum Outcome {
    /// Training and vote done.
    Finished {
        tokens: Box<Tokens>,
        votes: Vec<(usize, usize)>,
    },
    /// The event callback asked to stop after this step.
    Stopped { step: usize },
}

/// Loads the checkpoint of `--resume`; the steps it has done (at most the steps asked for).
fn resume(trainer: &mut Trainer, opts: &RunOptions) -> Result<usize> {
    let path = opts
        .checkpoint
        .as_deref()
        .ok_or_else(|| Error::Invalid("resume needs a checkpoint path".into()))?;
    if !path.is_file() {
        return Err(Error::Invalid(format!(
            "--resume: no checkpoint at {}",
            path.display()
        )));
    }
    trainer.load_checkpoint(path)?;
    let (done, steps) = (trainer.step(), trainer.config().steps);
    if done > steps {
        return Err(Error::checkpoint(
            path,
            format!(
                "{done} steps are done, more than the {steps} asked for; resume with \
                 --steps {done} or more (or train anew without --resume)"
            ),
        ));
    }
    Ok(done)
}

/// A failed step's error, saying where the last good checkpoint is (step `last_good` at
/// `checkpoint`), if any.
fn stopped(e: Error, checkpoint: Option<&Path>, last_good: Option<usize>) -> Error {
    let ckpt = match (checkpoint, last_good) {
        (Some(p), Some(s)) => format!(
            "the last good checkpoint is {} (step {s}); fix the cause and rerun with --resume",
            p.display()
        ),
        _ => "no checkpoint was written".to_string(),
    };
    Error::Invalid(format!("training stopped: {e}; {ckpt}"))
}

/// Trains to `config().steps`, checkpointing as asked, then votes. The callback may stop
/// the run after any step (`ControlFlow::Break`). A failing step (e.g. a non-finite loss)
/// is an error that names the last good checkpoint, which is left as it was.
pub fn run(
    trainer: &mut Trainer,
    opts: &RunOptions,
    on_event: &mut dyn FnMut(Event) -> ControlFlow<()>,
) -> Result<Outcome> {
    let mut last_good: Option<usize> = None;
    if opts.resume {
        let done = resume(trainer, opts)?;
        last_good = Some(done);
        if on_event(Event::Resumed { step: done }).is_break() {
            return Ok(Outcome::Stopped { step: done });
        }
    }
    let steps = trainer.config().steps;
    let first = trainer.step();
    let start = Instant::now();
    while trainer.step() < steps {
        let stats = trainer
            .train_step()
            .map_err(|e| stopped(e, opts.checkpoint.as_deref(), last_good))?;
        let step = stats.step;
        if let Some(path) = &opts.checkpoint {
            let due =
                step == steps || (opts.checkpoint_every > 0 && step % opts.checkpoint_every == 0);
            if due {
                trainer.save_checkpoint(path)?;
                last_good = Some(step);
                let _ = on_event(Event::Checkpoint { step, path });
            }
        }
        let per_step = start.elapsed().as_secs_f64() / (step - first) as f64;
        let eta_seconds = per_step * (steps - step) as f64;
        if on_event(Event::Step {
            stats: &stats,
            eta_seconds,
        })
        .is_break()
        {
            return Ok(Outcome::Stopped { step });
        }
    }
    let votes = trainer.vote(&mut |done, total| {
        let _ = on_event(Event::Vote { done, total });
    })?;
    let tokens = trainer.tokens(&votes)?;
    Ok(Outcome::Finished {
        tokens: Box::new(tokens),
        votes,
    })
}
