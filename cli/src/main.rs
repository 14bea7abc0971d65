//! `stablekeypoints` command line: glue over the core library, and (feature `video`, on by
//! default) over GStreamer for video input and the `stablekeypoints` element.

mod args;
mod bench;
mod corpus;
mod detect;
mod distill;
mod eval;
mod images;
mod import;
mod interrupt;
#[cfg(feature = "video")]
mod mp4;
#[cfg(feature = "video")]
mod pipeline;
#[cfg(feature = "video")]
mod process;
mod progress;
mod status;
mod timeline;
mod train;
mod uri;
#[cfg(feature = "video")]
mod video;

use args::{Cli, Command, InitModelCmd};
use clap::{CommandFactory, FromArgMatches};
use stablekeypoints::init::init_model;
use stablekeypoints::Error;
use std::process::ExitCode;

// The caching allocator (`stablekeypoints::alloc::CachingAlloc`, reusing freed activation
// buffers across layers and frames) is declared once per binary: with `video`, by the plugin
// crate this binary links (its default `caching-alloc` feature); without, here.
#[cfg(not(feature = "video"))]
#[global_allocator]
static ALLOC: stablekeypoints::alloc::CachingAlloc = stablekeypoints::alloc::CachingAlloc::new();

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Err(e) = args::check(&matches) {
        e.exit();
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            // Stopped by a signal: the shell's convention, 128 + its number.
            if let Some(sig) = interrupt::received() {
                return ExitCode::from((128 + sig) as u8);
            }
            ExitCode::FAILURE
        }
    }
}

/// The exit status: 0, or [`corpus::PARTLY_DONE`] when a corpus is not complete.
fn run(cli: Cli) -> Result<ExitCode, Error> {
    match cli.command {
        Command::InitModel(c) => cmd_init_model(c),
        Command::Detect(c) => detect::cmd_detect(c),
        Command::Train(c) => train::cmd_train(c),
        Command::Eval(c) => eval::cmd_eval(c),
        #[cfg(feature = "video")]
        Command::Process(c) => return process::cmd_process(c),
        Command::CorpusStatus(c) => return status::cmd_corpus_status(c),
        Command::ImportTokens(c) => import::cmd_import_tokens(c),
        Command::ImportPose(c) => import::cmd_import_pose(c),
        Command::Bench(c) => bench::cmd_bench(c),
        Command::Distill(c) => distill::cmd_distill(c),
        Command::ExportOnnx(c) => distill::cmd_export_onnx(c),
        Command::Completions(c) => {
            clap_complete::generate(
                c.shell,
                &mut Cli::command(),
                "stablekeypoints",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
    .map(|()| ExitCode::SUCCESS)
}

fn cmd_init_model(c: InitModelCmd) -> Result<(), Error> {
    let out = &c.out;
    let big = matches!(c.arch, args::Arch::Sd15 | args::Arch::Sd21);
    if out.exists() && !out.is_dir() {
        return Err(Error::Invalid(format!(
            "--out {}: is a file, not a folder",
            out.display()
        )));
    }
    // A downloaded model must not be replaced by random weights by mistake.
    let held: Vec<String> = std::fs::read_dir(out)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if !held.is_empty() && !c.force {
        let mut held = held;
        held.sort();
        held.truncate(4);
        return Err(Error::Invalid(format!(
            "--out {}: the folder is not empty (it holds {}); choose an empty or new folder, \
             or add --force to replace the model and tokens files in it",
            out.display(),
            held.join(", ")
        )));
    }
    let n = c.num_tokens.unwrap_or(if big { 500 } else { 100 });
    if let Some(f) = &c.single_file {
        if !big {
            return Err(Error::Invalid(format!(
                "--single-file {}: only sd15 and sd21 can be written in the original layout \
                 (a single file has no config.json; its reader assumes SD's own layer sizes)",
                f.display()
            )));
        }
        stablekeypoints::util::check_output_file(f, "--single-file")?;
    }
    init_model(out, c.arch.into(), c.seed, n, c.num_keypoints)?;
    println!("wrote {:?} model and tokens to {}", c.arch, out.display());
    if let Some(f) = &c.single_file {
        // Renamed into place whole: an interrupted run leaves no half-written checkpoint.
        let mut part = f.as_os_str().to_owned();
        part.push(".part");
        let part = std::path::PathBuf::from(part);
        let written = stablekeypoints::model::single_file::write_original(out, &part, false)
            .and_then(|()| {
                std::fs::rename(&part, f).map_err(|e| Error::Io {
                    path: f.clone(),
                    source: e,
                })
            });
        if written.is_err() {
            let _ = std::fs::remove_file(&part);
        }
        written?;
        println!(
            "wrote the same weights in the original layout to {}",
            f.display()
        );
    }
    Ok(())
}
