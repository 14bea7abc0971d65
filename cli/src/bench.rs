//! `bench`: per-stage timings of one frame.

use crate::args::BenchCmd;
use stablekeypoints::{CropMode, Error, FrameRef, Model, PixelFormat, Tokens};

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
    use std::time::Instant;
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

/// A student's per-stage timings: preprocessing a 16:9 frame, the network, the peaks.
fn bench_student(c: &BenchCmd, path: &std::path::Path) -> Result<(), Error> {
    use std::time::Instant;
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
    let student = stablekeypoints::student::Student::load(path, &device)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let info = &student.info;
    let size = info.input_size;
    let (w, h) = (size * 16 / 9, size);
    let pixels: Vec<u8> = (0..w * h * 3).map(|i| ((i * 31) % 251) as u8).collect();
    let frame = FrameRef::packed(PixelFormat::Rgb, w, h, &pixels, w * 3)?;
    let frames = vec![frame; c.batch];
    let names = ["preprocess", "network", "extraction", "total"];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for run in 0..=c.runs {
        let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
        let start = Instant::now();
        let mut px = Vec::with_capacity(c.batch * 3 * size * size);
        for f in &frames {
            px.extend(stablekeypoints::frame::to_model_input(f, size, info.crop).0);
        }
        let x = candle_core::Tensor::from_vec(px, (c.batch, 3, size, size), &device)?;
        let pre = ms(start);
        let t = Instant::now();
        let heat = student.heatmaps(&x)?;
        device.synchronize()?;
        let net = ms(t);
        let t = Instant::now();
        std::hint::black_box(student.keypoints_of(&heat)?);
        let extract = ms(t);
        if run > 0 {
            for (i, v) in [pre, net, extract, ms(start)].into_iter().enumerate() {
                times[i].push(v);
            }
        }
    }
    let flops = stablekeypoints::student::net::flops(&info.widths, info.num_keypoints, size)
        * c.batch as u64;
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
    let total = median_ms(&mut times[names.len() - 1].clone());
    for (i, (name, v)) in names.iter().zip(times.iter_mut()).enumerate() {
        let m = median_ms(v);
        let rate = if i == 1 || i == 3 {
            format!(
                "  {:7.3} GFLOP  {:6.1} GFLOP/s",
                flops as f64 / 1e9,
                flops as f64 / m / 1e6
            )
        } else {
            String::new()
        };
        println!(
            "{name:>14}: {m:10.2} ms  ({:5.1}%){rate}",
            100.0 * m / total
        );
    }
    println!(
        "{:>14}: {:10.2}  (batch {})",
        "frames/s",
        c.batch as f64 * 1e3 / total,
        c.batch
    );
    if let Some(r) = peak_rss_mib() {
        println!("{:>14}: {r:10.0} MiB", "peak RSS");
    }
    Ok(())
}

/// Per-stage timings of one frame (median of `--runs` after a warm-up run).
pub fn cmd_bench(c: BenchCmd) -> Result<(), Error> {
    if c.conv {
        return bench_conv(c.runs);
    }
    if let Some(p) = c
        .model
        .as_deref()
        .filter(|p| stablekeypoints::student::is_student_file(p))
    {
        return bench_student(&c, p);
    }
    use candle_core::Tensor;
    use stablekeypoints::frame::to_model_input;
    use stablekeypoints::model::{MapRecorder, MapSpec};
    use stablekeypoints::ops::resample::{resize, Interp};
    use std::time::Instant;

    let model_dir = c
        .model
        .ok_or_else(|| Error::Invalid("bench needs --model (or --conv)".into()))?;
    let (device, dtype) = c.device.open()?;
    let (runs, batch) = (c.runs, c.batch);
    let t0 = Instant::now();
    let model = Model::load(&model_dir, &device, dtype)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let tokens = match &c.tokens {
        Some(p) => Tokens::load(p)?,
        None => {
            let mut rng = stablekeypoints::ops::rng::Rng::new(0);
            let c = model.context_dim();
            let mut e = vec![0f32; 500 * c];
            rng.fill_normal(&mut e);
            let mut t = Tokens::new(e, 500, c, (0..10).collect())?;
            t.input_size = model.unet_config.sample_size * model.vae_config.downscale();
            t
        }
    };
    let size = c.size.unwrap_or(tokens.input_size);
    let map_res = c.map_res.unwrap_or(tokens.map_res);
    model.check_input_size(size)?;
    let spec = MapSpec {
        timestep: tokens.timestep,
        layers: tokens.layers,
        map_res,
    };
    let emb = Tensor::from_slice(
        &tokens.embeddings,
        (tokens.num_tokens, tokens.context_dim),
        &device,
    )?;
    let t0 = Instant::now();
    let ctx = model.prepare_context(&emb)?;
    let ctx_ms = t0.elapsed().as_secs_f64() * 1e3;
    let idx: Vec<u32> = tokens.indices.iter().map(|&i| i as u32).collect();
    let select = Tensor::from_vec(idx, tokens.indices.len(), &device)?;
    // A 16:9 synthetic frame so that preprocessing resamples as it would on video.
    let (w, h) = (size * 16 / 9, size);
    let pixels: Vec<u8> = (0..w * h * 3).map(|i| ((i * 31) % 251) as u8).collect();
    let frame = FrameRef::packed(PixelFormat::Rgb, w, h, &pixels, w * 3)?;

    let names = [
        "preprocess",
        "vae_encode",
        "unet_to_exit",
        "map_recording",
        "extraction",
        "total",
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut flops = [0u64; 6];
    use stablekeypoints::ops::flops as fl;
    let (a_coef, s_coef) = model.schedule.noise_coefficients(spec.timestep);
    for run in 0..=runs {
        let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
        let start = Instant::now();
        let (input, _) = to_model_input(&frame, size, CropMode::Letterbox);
        let image =
            Tensor::from_vec(input, (1, 3, size, size), &device)?.repeat((batch, 1, 1, 1))?;
        device.synchronize()?;
        let pre = ms(start);
        let t = Instant::now();
        fl::take();
        let z = model.encode(&image)?;
        device.synchronize()?;
        let vae = ms(t);
        let vae_flops = fl::take();
        let t = Instant::now();
        let noise = Tensor::randn(0f32, 1f32, z.shape(), &device)?.to_dtype(z.dtype())?;
        let zt = ((&z * a_coef)? + (noise * s_coef)?)?;
        let side = z.dim(2)?;
        let mut rec = MapRecorder::new(side / 2, spec.layers, spec.map_res, Some(select.clone()))
            .with_timing();
        model
            .unet
            .record(&zt, spec.timestep as f64, &ctx, &mut rec)?;
        let capture = rec.elapsed().as_secs_f64() * 1e3;
        let rec_flops = rec.flops();
        let unet_flops = fl::take().saturating_sub(rec_flops);
        let maps = rec.finish()?;
        device.synchronize()?;
        let unet = ms(t);
        let t = Instant::now();
        let up = resize(&maps.flatten_to(1)?, size, size, Interp::Bilinear)?;
        let v = up
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let peaks: Vec<_> = v
            .chunks_exact(size * size)
            .map(|m| stablekeypoints::keypoints::argmax_peak(m, size, size))
            .collect();
        let extract = ms(t);
        let total = ms(start);
        std::hint::black_box(peaks);
        flops = [
            0,
            vae_flops,
            unet_flops,
            rec_flops,
            0,
            vae_flops + unet_flops + rec_flops,
        ];
        if run > 0 {
            for (i, x) in [pre, vae, unet - capture, capture, extract, total]
                .into_iter()
                .enumerate()
            {
                times[i].push(x);
            }
        }
    }
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
    println!("load {load_ms:.0} ms, token K/V precompute {ctx_ms:.1} ms, runs {runs} (+1 warm-up)");
    let total = median_ms(&mut times[names.len() - 1].clone());
    for ((name, v), f) in names.iter().zip(times.iter_mut()).zip(flops) {
        let m = median_ms(v);
        let rate = if f > 0 {
            format!(
                "  {:7.1} GFLOP  {:6.1} GFLOP/s",
                f as f64 / 1e9,
                f as f64 / m / 1e6
            )
        } else {
            String::new()
        };
        println!(
            "{name:>14}: {m:10.1} ms  ({:5.1}%){rate}",
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
    Ok(())
}
