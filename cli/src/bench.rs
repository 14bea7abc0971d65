//! `bench`: per-stage timings of one frame, as the detector (or the student) records them.

use crate::args::BenchCmd;
use stablekeypoints::detect::{Stage, StageTimes};
use stablekeypoints::estimator::Estimator;
use stablekeypoints::student::Student;
use stablekeypoints::{DetectOptions, Detector, Error, FrameRef, Item, Model, PixelFormat, Tokens};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Peak resident set size of this process in MiB (Linux), if known.
fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn median_ms(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// 3x3 convolution throughput of candle's kernel and of our Winograd path on the shapes
/// that dominate SD's VAE and UNet.
fn bench_conv(runs: usize) -> Result<(), Error> {
    use candle_core::{Device, Tensor};
    use stablekeypoints::ops::conv::Winograd3x3;
    println!("3x3 convolution, stride 1, padding 1, f32, CPU (median of {runs})");
    for (c, s) in [
        (128usize, 512usize),
        (256, 256),
        (512, 128),
        (320, 64),
        (640, 32),
        (1280, 16),
        (1280, 8),
        (16, 128),
        (16, 64),
        (32, 32),
        (32, 16),
        (64, 16),
    ] {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1f32, (1, c, s, s), &dev)?;
        let w = (Tensor::randn(0f32, 1f32, (c, c, 3, 3), &dev)? / (9.0 * c as f64).sqrt())?;
        let b = Tensor::zeros(c, candle_core::DType::F32, &dev)?;
        let flops = 2.0 * (c * c * 9 * s * s) as f64;
        let mut direct = Vec::new();
        let mut wino = Vec::new();
        let mut err = 0f32;
        for _ in 0..runs {
            let t = Instant::now();
            let y0 = x.conv2d(&w, 1, 1, 1, 1)?;
            direct.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let y1 = x.apply_op3_no_bwd(&w, &b, &Winograd3x3 { padding: 1 })?;
            wino.push(t.elapsed().as_secs_f64() * 1e3);
            let d = (&y1 - &y0)?.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
            err = d / y0.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
        }
        let (d, wv) = (median_ms(&mut direct), median_ms(&mut wino));
        println!(
            "  {c:>4} ch @ {s:>3}x{s:<3}  candle {d:8.1} ms {:6.1} GFLOP/s   winograd {wv:8.1} ms {:6.1} GFLOP/s (direct-equivalent)  x{:.2}  rel err {err:.1e}",
            flops / d / 1e6,
            flops / wv / 1e6,
            d / wv
        );
    }
    Ok(())
}

/// The CPU's model name and the widest vector extension the kernels dispatch to.
pub fn cpu_line() -> String {
    let name = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    #[cfg(target_arch = "x86_64")]
    let isa = if std::arch::is_x86_feature_detected!("avx512f") {
        "AVX-512"
    } else if std::arch::is_x86_feature_detected!("avx2") {
        "AVX2"
    } else {
        "SSE2"
    };
    #[cfg(not(target_arch = "x86_64"))]
    let isa = "no x86 SIMD";
    format!(
        "{name}, {isa}, {} threads",
        candle_core::utils::get_num_threads()
    )
}

/// Stage times and wall-clock milliseconds of each detection.
type Runs = Vec<(StageTimes, f64)>;

/// `runs` detections (after a warm-up one) of `batch` copies of a 16:9 synthetic frame of
/// height `size`, so that preprocessing resamples as it would on video; the stages as the
/// estimator records them.
fn time_runs(est: &mut Estimator, size: usize, batch: usize, runs: usize) -> Result<Runs, Error> {
    let (w, h) = (size * 16 / 9, size);
    let pixels: Vec<u8> = (0..w * h * 3).map(|i| ((i * 31) % 251) as u8).collect();
    let frame = FrameRef::packed(PixelFormat::Rgb, w, h, &pixels, w * 3)?;
    est.record_stage_times(true);
    let mut out = Vec::with_capacity(runs);
    for run in 0..=runs {
        let items = (0..batch as u64).map(|k| Item::frame(frame, k)).collect();
        let start = Instant::now();
        std::hint::black_box(est.detect(items)?);
        let total = start.elapsed().as_secs_f64() * 1e3;
        let times = est.take_stage_times();
        if run > 0 {
            out.push((times, total));
        }
    }
    est.record_stage_times(false);
    Ok(out)
}

/// Decimals of the milliseconds and of the GFLOP printed.
struct Digits {
    ms: usize,
    gflop: usize,
}

/// One line per stage (median over the runs, its share of the total, its FLOPs and rate),
/// then the total, frames/s and peak RSS.
fn print_stages(runs: &Runs, stages: &[Stage], digits: Digits, batch: usize) {
    let median_of = |f: &dyn Fn(&(StageTimes, f64)) -> f64| {
        median_ms(&mut runs.iter().map(f).collect::<Vec<_>>())
    };
    let total = median_of(&|r| r.1);
    let flops_of = |s: Stage| runs.last().map_or(0, |r| r.0.flops(s));
    let mut rows: Vec<(&str, f64, u64)> = stages
        .iter()
        .map(|&s| {
            let m = median_of(&|r| r.0.time(s).as_secs_f64() * 1e3);
            (s.name(), m, flops_of(s))
        })
        .collect();
    rows.push(("total", total, stages.iter().map(|&s| flops_of(s)).sum()));
    let Digits { ms: d, gflop: g } = digits;
    for (name, m, f) in rows {
        let rate = if f > 0 {
            format!(
                "  {:7.g$} GFLOP  {:6.1} GFLOP/s",
                f as f64 / 1e9,
                f as f64 / m / 1e6
            )
        } else {
            String::new()
        };
        println!(
            "{name:>14}: {m:10.d$} ms  ({:5.1}%){rate}",
            100.0 * m / total
        );
    }
    println!(
        "{:>14}: {:10.2}  (batch {batch})",
        "frames/s",
        batch as f64 * 1e3 / total
    );
    if let Some(r) = peak_rss_mib() {
        println!("{:>14}: {r:10.0} MiB", "peak RSS");
    }
}

/// A student's per-stage timings: preprocessing, the network, the peaks.
fn bench_student(c: &BenchCmd, path: &Path) -> Result<(), Error> {
    for (flag, given) in [
        ("--tokens", c.tokens.is_some()),
        ("--size", c.size.is_some()),
        ("--map-res", c.map_res.is_some()),
    ] {
        if given {
            return Err(Error::Invalid(format!(
                "{flag} does not apply to the student {}",
                path.display()
            )));
        }
    }
    let (device, _) = c.device.open()?;
    let t0 = Instant::now();
    let student = Student::load(path, &device)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let info = student.info.clone();
    let size = info.input_size;
    let mut est = Estimator::Student(Box::new(student));
    let runs = time_runs(&mut est, size, c.batch, c.runs)?;
    println!(
        "student {} (widths {:?}, {} parameters), input {size}x{size}, K={}, device {:?}",
        path.display(),
        info.widths,
        stablekeypoints::student::net::parameters(&info.widths, info.num_keypoints),
        info.num_keypoints,
        device
    );
    println!("cpu {}", cpu_line());
    println!("load {load_ms:.1} ms, runs {} (+1 warm-up)", c.runs);
    let stages = [Stage::Preprocess, Stage::Network, Stage::Extraction];
    print_stages(&runs, &stages, Digits { ms: 2, gflop: 3 }, c.batch);
    Ok(())
}

/// The tokens file of `--tokens`, or 500 random tokens of which 10 are selected.
fn bench_tokens(c: &BenchCmd, model: &Model) -> Result<Tokens, Error> {
    if let Some(p) = &c.tokens {
        return Tokens::load(p);
    }
    let mut rng = stablekeypoints::ops::rng::Rng::new(0);
    let dim = model.context_dim();
    let mut e = vec![0f32; 500 * dim];
    rng.fill_normal(&mut e);
    let mut t = Tokens::new(e, 500, dim, (0..10).collect())?;
    t.input_size = model.unet_config.sample_size * model.vae_config.downscale();
    Ok(t)
}

/// The diffusion model's per-stage timings, as its detector records them.
fn bench_teacher(c: &BenchCmd, model_dir: &Path) -> Result<(), Error> {
    let (device, dtype) = c.device.open()?;
    let t0 = Instant::now();
    let model = Arc::new(Model::load(model_dir, &device, dtype)?);
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let tokens = bench_tokens(c, &model)?;
    let opts = DetectOptions {
        input_size: c.size,
        map_res: c.map_res,
        ..Default::default()
    };
    let t0 = Instant::now();
    let det = Detector::new(model.clone(), &tokens, opts)?;
    let ctx_ms = t0.elapsed().as_secs_f64() * 1e3;
    let (size, map_res) = (det.input_size(), det.map_spec().map_res);
    let mut est = Estimator::teacher(det);
    let runs = time_runs(&mut est, size, c.batch, c.runs)?;
    println!(
        "model {} (blocks {:?}, context {}), input {size}x{size}, map_res {map_res}, N={} K={}, device {:?}, dtype {:?}",
        model_dir.display(),
        model.unet_config.block_out_channels,
        model.context_dim(),
        tokens.num_tokens,
        tokens.num_keypoints(),
        device,
        dtype
    );
    println!("cpu {}", cpu_line());
    println!(
        "load {load_ms:.0} ms, token K/V precompute {ctx_ms:.1} ms, runs {} (+1 warm-up)",
        c.runs
    );
    let stages = [
        Stage::Preprocess,
        Stage::VaeEncode,
        Stage::UnetToExit,
        Stage::MapRecording,
        Stage::Extraction,
    ];
    print_stages(&runs, &stages, Digits { ms: 1, gflop: 1 }, c.batch);
    Ok(())
}

/// Per-stage timings of one frame (median of `--runs` after a warm-up run).
pub fn cmd_bench(c: BenchCmd) -> Result<(), Error> {
    if c.conv {
        return bench_conv(c.runs);
    }
    let model = c
        .model
        .as_deref()
        .ok_or_else(|| Error::Invalid("bench needs --model (or --conv)".into()))?;
    if stablekeypoints::student::is_student_file(model) {
        bench_student(&c, model)
    } else {
        bench_teacher(&c, model)
    }
}
