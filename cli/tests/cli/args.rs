//! The command line itself: every subcommand's `--help`, `--version`, shell completions, and
//! errors that blame what was typed (a typo'd flag, a bad value, flags a command would
//! ignore). Nothing here loads a model for long: errors come before that.

use std::process::Output;

use crate::common::*;

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run stablekeypoints")
}

/// A usage error: exit code 2, no panic, every needle on stderr.
fn assert_usage_error(o: &Output, needles: &[&str]) {
    assert_usage_error_in("", o, needles);
}

/// [`assert_usage_error`] for the row `what` of a table.
fn assert_usage_error_in(what: &str, o: &Output, needles: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{what}: {e}");
    assert!(!e.contains("panicked"), "{what}: {e}");
    for n in needles {
        assert!(e.contains(n), "{what}: {e:?} does not mention {n:?}");
    }
}

/// (subcommand, flags its help must list, a default it must show)
const HELP_ROWS: [(&str, &str, &str); 9] = [
    (
        "init-model",
        "--out --arch --num-tokens",
        "[default: tiny-sd1]",
    ),
    (
        "detect",
        "--model --tokens --augmentations --peak --noise-level --layers --augment-degrees \
         --augment-scale --augment-translate stretch <IMAGE>...",
        "[default: letterbox]",
    ),
    (
        "train",
        "--input --steps --max-frames --resume --noise-level --layers --sigma \
         --sharpening-weight --equivariance-weight --top-k-strategy --num-subjects \
         --augment-degrees stretch",
        "[default: 500]",
    ),
    (
        "eval",
        "--metric --eyes --save-regressor --protocol --noise-level",
        "[default: cpu]",
    ),
    (
        "process",
        "--out-dir --tokens --draw-ids --steps",
        "[default: 1]",
    ),
    ("bench", "--conv --runs --batch", "[default: 3]"),
    (
        "import-tokens",
        "<DIR> --out --noise-level --layers --map-res",
        "[default: 128]",
    ),
    (
        "import-pose",
        "<REGRESSOR.pt> --label-order --tokens --names",
        "",
    ),
    ("completions", "<SHELL> bash", ""),
];

#[test]
fn every_subcommand_has_its_own_help_with_defaults_and_examples() {
    for (cmd, flags, default) in HELP_ROWS {
        for help in ["--help", "-h"] {
            let o = run(&[cmd, help]);
            let text = stdout(&o);
            assert!(o.status.success(), "{cmd} {help}: {}", stderr(&o));
            assert!(
                text.contains(&format!("Usage: stablekeypoints {cmd}")),
                "{cmd} {help}: {text}"
            );
            for f in flags.split_whitespace() {
                assert!(text.contains(f), "{cmd} {help} does not list {f}: {text}");
            }
            assert!(
                text.contains(default),
                "{cmd} {help} lacks {default}: {text}"
            );
            assert!(
                text.contains("xample"),
                "{cmd} {help} has no example: {text}"
            );
        }
    }
    // Commands of other subcommands do not leak into one's help.
    let detect = stdout(&run(&["detect", "--help"]));
    assert!(
        !detect.contains("--steps") && !detect.contains("--metric"),
        "{detect}"
    );
    // `help SUB` is the same as `SUB --help`.
    assert_eq!(
        stdout(&run(&["help", "train"])),
        stdout(&run(&["train", "--help"]))
    );
}

#[test]
fn the_top_level_help_lists_the_subcommands_and_no_arguments_print_it() {
    let top = stdout(&run(&["--help"]));
    for (sub, _, _) in HELP_ROWS {
        assert!(top.contains(sub), "{top}");
    }
    let none = run(&[]);
    assert!(!none.status.success());
    assert!(
        stderr(&none).contains("Usage: stablekeypoints"),
        "{}",
        stderr(&none)
    );
}

#[test]
fn version_is_the_package_version() {
    let o = run(&["--version"]);
    assert!(o.status.success());
    assert_eq!(
        stdout(&o).trim(),
        format!("stablekeypoints {}", env!("CARGO_PKG_VERSION"))
    );
    // Subcommands answer it too.
    assert!(run(&["train", "--version"]).status.success());
}

#[test]
fn completions_are_scripts_for_each_shell() {
    let o = run(&["completions", "bash"]);
    let s = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(s.contains("_stablekeypoints()"), "{s}");
    assert!(s.contains("complete -F _stablekeypoints"), "{s}");
    // Subcommands and their flags are in it.
    for w in [
        "init-model",
        "process",
        "--num-keypoints",
        "--max-frames",
        "letterbox",
    ] {
        assert!(s.contains(w), "bash completion lacks {w}");
    }
    let zsh = stdout(&run(&["completions", "zsh"]));
    assert!(zsh.starts_with("#compdef stablekeypoints"), "{zsh}");
    let fish = stdout(&run(&["completions", "fish"]));
    assert!(fish.contains("complete -c stablekeypoints"), "{fish}");
    assert_usage_error(
        &run(&["completions", "tcsh"]),
        &["invalid value 'tcsh'", "bash"],
    );
}

#[test]
fn a_typo_names_the_flag_and_suggests_the_right_one() {
    let o = run(&["detect", "--model", "m", "--jsn", "a.png"]);
    assert_usage_error(&o, &["unexpected argument '--jsn'", "'--json'"]);
    // Only the command's own usage is printed, not every command's.
    assert!(!stderr(&o).contains("--steps"), "{}", stderr(&o));
    let o = run(&[
        "train", "--model", "m", "--input", "i", "--out", "o", "--step", "3",
    ]);
    assert_usage_error(&o, &["'--step'", "'--steps'"]);
    assert_usage_error(
        &run(&["detcet"]),
        &["unrecognized subcommand 'detcet'", "detect"],
    );
}

#[test]
fn bad_values_name_the_flag_and_the_value() {
    let o = run(&[
        "train", "--model", "m", "--input", "i", "--out", "o", "--steps", "ten",
    ]);
    assert_usage_error(&o, &["invalid value 'ten'", "--steps"]);
    let o = run(&["detect", "--model", "m", "--crop", "diagonal", "a.png"]);
    assert_usage_error(
        &o,
        &[
            "invalid value 'diagonal'",
            "--crop",
            "letterbox",
            "center-crop",
        ],
    );
    let o = run(&["detect", "--model", "m", "--device", "tpu:0", "a.png"]);
    assert_usage_error(&o, &["'tpu:0'", "--device", "unknown device"]);
    let o = run(&["detect", "--model", "m", "--augmentations", "0", "a.png"]);
    assert_usage_error(&o, &["'0'", "--augmentations", "between 1 and 64"]);
    // `--seed odd.png` is a bad seed, not a missing image.
    let o = run(&["detect", "--model", "m", "--seed", "odd.png"]);
    assert_usage_error(&o, &["invalid value 'odd.png'", "--seed"]);
    // No image at all.
    let o = run(&["detect", "--model", "m"]);
    assert_usage_error(&o, &["<IMAGE>"]);
    let o = run(&[
        "eval", "--model", "m", "--train", "a", "--test", "b", "--metric", "mse",
    ]);
    assert_usage_error(&o, &["invalid value 'mse'", "--metric", "taichi"]);
    // The reference's knobs: out-of-range noise level, bad layer list, a half range.
    let o = run(&["detect", "--model", "m", "--noise-level", "50", "a.png"]);
    assert_usage_error(&o, &["'50'", "--noise-level", "-50..49"]);
    let o = run(&["detect", "--model", "m", "--noise-level", "-51", "a.png"]);
    assert_usage_error(&o, &["'-51'", "--noise-level"]);
    let o = run(&["detect", "--model", "m", "--layers", "0,x", "a.png"]);
    assert_usage_error(&o, &["'0,x'", "--layers", "layer index"]);
    let o = run(&["detect", "--model", "m", "--augment-scale", "0.9", "a.png"]);
    assert_usage_error(&o, &["'0.9'", "--augment-scale", "two numbers"]);
    let o = run(&[
        "train",
        "--model",
        "m",
        "--input",
        "i",
        "--out",
        "o",
        "--top-k-strategy",
        "random",
    ]);
    assert_usage_error(&o, &["'random'", "--top-k-strategy", "entropy"]);
    let o = run(&[
        "eval",
        "--model",
        "m",
        "--train",
        "a",
        "--test",
        "b",
        "--metric",
        "pck",
        "--protocol",
        "kaggle",
    ]);
    assert_usage_error(&o, &["'kaggle'", "--protocol", "visibility"]);
    let o = run(&["import-pose", "r.pt", "--out", "p.json"]);
    assert_usage_error(&o, &["--label-order"]);
}

#[test]
fn flags_a_command_would_ignore_are_errors() {
    // process with its own tokens does not train: training flags are refused, by name.
    let o = run(&[
        "process",
        "--model",
        "m",
        "--input",
        "v.mp4",
        "--out-dir",
        "o",
        "--tokens",
        "t",
        "--steps",
        "5",
    ]);
    assert_usage_error(&o, &["--tokens", "--steps", "cannot be used with"]);
    let o = run(&[
        "process",
        "--model",
        "m",
        "--input",
        "v.mp4",
        "--out-dir",
        "o",
        "--tokens",
        "t",
        "--resume",
    ]);
    assert_usage_error(&o, &["--tokens", "--resume"]);
    // bench --conv times no model.
    let o = run(&["bench", "--conv", "--model", "m"]);
    assert_usage_error(&o, &["--conv", "--model"]);
    // eval: a metric's options with another metric; a skeleton without a pose file.
    let d = temp_dir("args");
    std::fs::write(d.join("l.csv"), "a.png,1,2\n").unwrap();
    let l = d.join("l.csv");
    let l = l.to_str().unwrap();
    let o = run(&[
        "eval", "--model", "m", "--train", l, "--test", l, "--metric", "taichi", "--eyes", "0,1",
    ]);
    let e = stderr(&o);
    assert!(
        !o.status.success() && e.contains("--eyes only applies to --metric inter-ocular"),
        "{e}"
    );
    let o = run(&[
        "eval",
        "--model",
        "m",
        "--train",
        l,
        "--test",
        l,
        "--metric",
        "pck",
        "--skeleton",
        "s.txt",
    ]);
    assert_usage_error(&o, &["--save-regressor"]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn old_flag_names_stay_as_aliases_and_the_last_value_wins() {
    let d = temp_dir("args-alias");
    let _ = std::fs::remove_dir_all(&d);
    let o = run(&[
        "init-model",
        "--out",
        d.to_str().unwrap(),
        "--tokens",
        "12",
        "--num-keypoints",
        "2",
        "--keypoints",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = stablekeypoints::Tokens::load(&d.join("tokens.safetensors")).unwrap();
    assert_eq!((t.num_tokens, t.indices.len()), (12, 3));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn runtime_errors_blame_the_flag_or_the_file_that_caused_them() {
    let img = tiny_dir().join("image.png");
    // --size that the model cannot take: the flag, not the tokens file, is named.
    let o = bin()
        .args(["detect", "--model"])
        .arg(tiny_dir())
        .args(["--size", "100"])
        .arg(&img)
        .output()
        .unwrap();
    let e = stderr(&o);
    assert!(!o.status.success(), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(
        e.contains("--size 100") && e.contains("multiple of 64"),
        "{e}"
    );
    assert!(!e.contains("tokens file"), "{e}");
    // --tokens defaults to the model's tokens.safetensors, as the element's does.
    let o = bin()
        .args(["detect", "--json", "--no-noise", "--model"])
        .arg(tiny_dir())
        .arg(&img)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let with = bin()
        .args(["detect", "--json", "--no-noise", "--model"])
        .arg(tiny_dir())
        .arg("--tokens")
        .arg(tiny_dir().join("tokens.safetensors"))
        .arg(&img)
        .output()
        .unwrap();
    assert_eq!(
        v,
        serde_json::from_slice::<serde_json::Value>(&with.stdout).unwrap()
    );
    // process on a folder says it is a folder.
    let o = bin()
        .args(["process", "--model"])
        .arg(tiny_dir())
        .arg("--input")
        .arg(tiny_dir())
        .args(["--out-dir", "/nonexistent/out"])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert!(!o.status.success() && e.contains("is a folder"), "{e}");
    assert!(e.contains("tiny-sd1"), "{e}");
}

#[test]
fn init_model_refuses_a_folder_that_is_not_empty_without_force() {
    // Issue 13: `init-model --out DIR` over a downloaded model replaced its weights.
    let d = temp_dir("args-force");
    let _ = std::fs::remove_dir_all(&d);
    let m = d.join("model");
    let o = run(&["init-model", "--out", m.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let weights = m.join("unet/diffusion_pytorch_model.safetensors");
    let before = std::fs::read(&weights).unwrap();
    let o = run(&["init-model", "--out", m.to_str().unwrap(), "--seed", "7"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("not empty") && e.contains("--force") && e.contains("unet"),
        "{e}"
    );
    assert_eq!(std::fs::read(&weights).unwrap(), before);
    let o = run(&[
        "init-model",
        "--out",
        m.to_str().unwrap(),
        "--seed",
        "7",
        "--force",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_ne!(std::fs::read(&weights).unwrap(), before);
    // Stray positionals and -h: nothing is written.
    let q = d.join("q");
    let o = run(&["init-model", "--out", q.to_str().unwrap(), "sd15"]);
    assert_usage_error(&o, &["unexpected argument 'sd15'"]);
    let o = run(&["init-model", "--out", q.to_str().unwrap(), "-h"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("Usage: stablekeypoints init-model"));
    assert!(!q.exists());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn every_command_refuses_unexpected_positional_arguments() {
    for args in [
        &[
            "train", "--model", "m", "--input", "i", "--out", "o", "extra",
        ][..],
        &[
            "eval", "--model", "m", "--train", "a", "--test", "b", "--metric", "pck", "extra",
        ],
        &[
            "process",
            "--model",
            "m",
            "--input",
            "i",
            "--out-dir",
            "o",
            "extra",
        ],
        &["bench", "--model", "m", "extra"],
        &["completions", "bash", "extra"],
    ] {
        let o = run(args);
        assert_usage_error(&o, &["unexpected argument 'extra'"]);
    }
}

/// The arguments of `command` around a flag under test: what comes before it and after it
/// in a command line that would otherwise run with the model `m`.
fn around_a_flag<'a>(command: &'a str, m: &'a str) -> (Vec<&'a str>, Vec<&'a str>) {
    match command {
        "detect" => (vec!["detect", "--model", m], vec!["a.png"]),
        "eval" => (
            vec!["eval", "--model", m, "--train", "a", "--test", "b"],
            vec!["--metric", "pck"],
        ),
        "process" => (
            vec!["process", "--model", m, "--input", "i", "--out-dir", "o"],
            vec![],
        ),
        "train" => (
            vec!["train", "--model", m, "--input", "i", "--out", "o"],
            vec![],
        ),
        "bench" => (vec!["bench", "--model", m], vec![]),
        "init-model" => (vec!["init-model", "--out", "o"], vec![]),
        _ => unreachable!("no command line for {command}"),
    }
}

#[test]
fn every_count_flag_is_bounded_before_any_work() {
    // Issue 13: `detect --augmentations 1000000` was killed by the OOM killer.
    let m = tiny_dir();
    let m = m.to_str().unwrap();
    // (command, flag, value, the range the error names)
    let rows = [
        ("detect", "--augmentations", "1000000", "between 1 and 64"),
        ("eval", "--augmentations", "65", "between 1 and 64"),
        ("process", "--augmentations", "65", "between 1 and 64"),
        ("train", "--steps", "1000001", "between 1 and 1000000"),
        ("train", "--steps", "0", "between 1 and 1000000"),
        ("train", "--batch-size", "1025", "between 1 and 1024"),
        ("train", "--num-tokens", "4097", "between 1 and 4096"),
        ("train", "--num-keypoints", "257", "between 1 and 256"),
        ("train", "--num-candidates", "4097", "between 1 and 4096"),
        ("train", "--num-indices", "100001", "between 1 and 100000"),
        ("train", "--max-frames", "1000001", "between 1 and 1000000"),
        ("train", "--map-res", "1025", "between 1 and 1024"),
        ("bench", "--runs", "10001", "between 1 and 10000"),
        ("bench", "--batch", "65", "between 1 and 64"),
        ("init-model", "--num-tokens", "4097", "between 1 and 4096"),
        ("init-model", "--num-keypoints", "300", "between 1 and 256"),
    ];
    for (command, flag, value, range) in rows {
        let (before, after) = around_a_flag(command, m);
        let args = [before, vec![flag, value], after].concat();
        let what = format!("{command} {flag} {value}");
        assert_usage_error_in(&what, &run(&args), &[flag, range]);
    }
}

#[test]
fn training_buffers_that_cannot_fit_in_memory_are_refused_before_training() {
    // The all-token maps of a step: 2 x N x R x R floats, 3 copies.
    let need = 3u64 * 2 * 4096 * 1024 * 1024 * 4;
    let avail = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            let l = t
                .lines()
                .find(|l| l.starts_with("MemAvailable:"))?
                .to_string();
            l.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map(|kb| kb * 1024);
    let Some(avail) = avail.filter(|&a| a < need) else {
        eprintln!("SKIPPED: this machine has more than {need} bytes available");
        return;
    };
    let d = temp_dir("args-mem");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    image::RgbImage::new(8, 8).save(d.join("a.png")).unwrap();
    let o = run(&[
        "train",
        "--model",
        tiny_dir().to_str().unwrap(),
        "--input",
        d.to_str().unwrap(),
        "--out",
        d.join("t.safetensors").to_str().unwrap(),
        "--num-tokens",
        "4096",
        "--num-candidates",
        "25",
        "--map-res",
        "1024",
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("--num-tokens 4096") && e.contains("--map-res 1024") && e.contains("available"),
        "{e} ({avail})"
    );
    assert!(!e.contains("step 1"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}
