//! The command line's flags: one struct per command, and the groups several commands share
//! (`#[command(flatten)]`), so that a new flag is one field in one place.

mod bench;
mod common;
mod detect;
mod distill;
mod eval;
mod import;
mod init;
mod parse;
mod process;
mod train;

pub use bench::BenchCmd;
pub use common::{ModelTokensArgs, SeedArg, WeightsArgs};
pub use detect::{DetectArgs, DetectCmd, OutputFormat};
pub use distill::{DistillCmd, ExportOnnxCmd};
pub use eval::{EvalCmd, MetricName};
pub use import::{ImportPoseCmd, ImportTokensCmd, LabelOrder};
pub use init::{Arch, InitModelCmd};
pub use process::CorpusStatusCmd;
#[cfg(feature = "video")]
pub use process::ProcessCmd;
pub use train::{TrainArgs, TrainCmd};

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  stablekeypoints init-model --out out/model
  stablekeypoints detect --model out/model --json photo.jpg
  stablekeypoints train --model out/model --input clip.mp4 --out tokens.safetensors
  stablekeypoints process --model out/model --input clip.mp4 --out-dir result/
  stablekeypoints process --model out/model --tokens t.safetensors --inputs videos.txt --out-dir out/ --shard 0/4
  stablekeypoints corpus-status out/
  stablekeypoints completions bash > ~/.local/share/bash-completion/completions/stablekeypoints";

/// Unsupervised keypoints from Stable Diffusion attention maps (StableKeypoints).
#[derive(Parser, Debug)]
#[command(name = "stablekeypoints", version, propagate_version = true)]
#[command(arg_required_else_help = true, after_help = EXAMPLES)]
// A repeated flag takes its last value, so that a script can append overrides.
#[command(args_override_self = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    InitModel(InitModelCmd),
    Detect(DetectCmd),
    Train(TrainCmd),
    Eval(EvalCmd),
    #[cfg(feature = "video")]
    Process(ProcessCmd),
    CorpusStatus(CorpusStatusCmd),
    ImportTokens(ImportTokensCmd),
    ImportPose(ImportPoseCmd),
    Bench(BenchCmd),
    Distill(DistillCmd),
    ExportOnnx(ExportOnnxCmd),
    Completions(CompletionsCmd),
}

/// What clap's attributes cannot say: `process --tokens` does not train, so training flags
/// given with it are an error naming them.
pub fn check(matches: &ArgMatches) -> Result<(), clap::Error> {
    let Some(("process", m)) = matches.subcommand() else {
        return Ok(());
    };
    let given = |id: &str| m.value_source(id) == Some(ValueSource::CommandLine);
    // clap does not enforce `requires = "inputs"` once `--input` (which conflicts with it)
    // is given.
    for flag in ["shard", "shard_count", "workers"] {
        if given(flag) && !given("inputs") {
            let mut cli = Cli::command();
            cli.build();
            let process = cli
                .find_subcommand_mut("process")
                .expect("process is a subcommand");
            return Err(process.error(
                ErrorKind::MissingRequiredArgument,
                format!(
                    "--{} needs --inputs (a corpus); one video (--input) has no shards",
                    flag.replace('_', "-")
                ),
            ));
        }
    }
    if !given("tokens") {
        return Ok(());
    }
    let train = TrainArgs::augment_args(clap::Command::new("process"));
    let flags: Vec<String> = train
        .get_arguments()
        .filter(|a| given(a.get_id().as_str()))
        .map(|a| format!("--{}", a.get_long().unwrap_or(a.get_id().as_str())))
        .collect();
    if flags.is_empty() {
        return Ok(());
    }
    let mut cli = Cli::command();
    cli.build();
    let process = cli
        .find_subcommand_mut("process")
        .expect("process is a subcommand");
    Err(process.error(
        ErrorKind::ArgumentConflict,
        format!(
            "--tokens cannot be used with {}: process trains on the video only without --tokens",
            flags.join(", ")
        ),
    ))
}

/// Print a shell completion script.
#[derive(Args, Debug)]
#[command(after_help = "Example:
  stablekeypoints completions bash > ~/.local/share/bash-completion/completions/stablekeypoints")]
pub struct CompletionsCmd {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}
