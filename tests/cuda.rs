//! The CUDA path against the diffusers goldens (tests/golden.rs does the same on the CPU):
//! f32 to the CPU's tolerances, f16 (the element's and CLI's CUDA dtype) looser, batched
//! frames equal to one at a time. Built with `--features cuda`; needs a GPU at run time
//! (`scripts/gpu-check.sh` runs it on a lent machine).
#![cfg(feature = "cuda")]

mod common;

use candle_core::{DType, Device, Tensor};
use common::{data, flat, rel_err};
use stablekeypoints::frame::{FrameRef, PixelFormat};
use stablekeypoints::model::{LayerSet, MapRecorder, MapSpec};
use stablekeypoints::{DetectOptions, Detector, Item, Model, Tokens};
use std::collections::HashMap;
use std::sync::Arc;

fn gpu() -> Device {
    Device::new_cuda(0).expect("built with --features cuda but no CUDA device 0")
}

fn golden(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(data(name).join("golden.safetensors"), &Device::Cpu).unwrap()
}

/// Latent and zero-noise maps of a tiny model on the GPU in `dtype`, against the goldens;
/// returns (latent error, maps error), printed so that the GPU log records them.
fn errors(name: &str, dtype: DType) -> (f32, f32) {
    let dev = gpu();
    let g = golden(name);
    let model = Model::load(&data(name), &dev, dtype).unwrap();
    let tokens = Tokens::load(&data(name).join("tokens.safetensors")).unwrap();
    let image = g["image"].to_device(&dev).unwrap();
    let z = model.encode(&image.unsqueeze(0).unwrap()).unwrap();
    let ez = rel_err(&z, &g["latent"]);
    let emb = Tensor::from_slice(
        &tokens.embeddings,
        (tokens.num_tokens, tokens.context_dim),
        &dev,
    )
    .unwrap();
    let ctx = model.prepare_context(&emb).unwrap();
    let zg = g["latent"]
        .to_device(&dev)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let map_res = flat(&g["map_res"])[0] as usize;
    let spec = MapSpec {
        timestep: flat(&g["timestep"])[0] as usize,
        layers: LayerSet::first(4),
        map_res,
    };
    let maps = model
        .maps_from_latent(&zg, None, &ctx, &spec, None)
        .unwrap()
        .squeeze(0)
        .unwrap();
    let em = rel_err(&maps, &g["maps_zero"]);
    // The recorder's rule picks the same layers on the GPU.
    let mut rec = MapRecorder::new(zg.dim(2).unwrap() / 2, LayerSet::first(4), map_res, None);
    model.unet.record(&zg, 1.0, &ctx, &mut rec).unwrap();
    let sides: Vec<i64> = g["layer_sides"].to_vec1().unwrap();
    assert_eq!(
        rec.sides().iter().map(|&s| s as i64).collect::<Vec<_>>(),
        sides
    );
    println!("{name} {dtype:?} on CUDA: latent rel err {ez:.2e}, maps rel err {em:.2e}");
    (ez, em)
}

#[test]
fn cuda_f32_matches_diffusers() {
    for name in ["tiny-sd1", "tiny-sd2"] {
        let (ez, em) = errors(name, DType::F32);
        assert!(ez < 1e-4 && em < 1e-3, "{name}: latent {ez}, maps {em}");
    }
}

#[test]
fn cuda_f16_close_to_diffusers() {
    for name in ["tiny-sd1", "tiny-sd2"] {
        let (ez, em) = errors(name, DType::F16);
        assert!(ez < 2e-2 && em < 3e-2, "{name}: latent {ez}, maps {em}");
    }
}

/// On the f16 GPU, batched frames give the keypoints of one frame at a time, and the maps
/// are those of the f32 CPU.
#[test]
fn cuda_f16_batched_frames_and_against_cpu() {
    let dir = data("tiny-sd1");
    let tokens = Tokens::load(&dir.join("tokens.safetensors")).unwrap();
    let opts = DetectOptions {
        noise: false,
        ..Default::default()
    };
    let gpu_model = Arc::new(Model::load(&dir, &gpu(), DType::F16).unwrap());
    let cpu_model = Arc::new(Model::load(&dir, &Device::Cpu, DType::F32).unwrap());
    let (w, h) = (96usize, 72usize);
    let frames: Vec<Vec<u8>> = (0..3)
        .map(|f| {
            (0..w * h * 3)
                .map(|i| {
                    let (x, y, c) = ((i / 3) % w, i / 3 / w, i % 3);
                    let blob = (x as i64 - 20 - 15 * f as i64).pow(2) + (y as i64 - 36).pow(2);
                    if blob < 150 {
                        250
                    } else {
                        ((x * 2 + y + 40 * c) % 256) as u8
                    }
                })
                .collect()
        })
        .collect();
    let refs: Vec<FrameRef> = frames
        .iter()
        .map(|d| FrameRef::packed(PixelFormat::Rgb, w, h, d, w * 3).unwrap())
        .collect();
    let mut gpu_det = Detector::new(gpu_model, &tokens, opts.clone()).unwrap();
    let mut cpu_det = Detector::new(cpu_model, &tokens, opts).unwrap();
    let batched = gpu_det
        .detect(Item::frames(&refs, &[0, 1, 2]).unwrap())
        .unwrap();
    for (i, f) in refs.iter().enumerate() {
        let one = gpu_det
            .diagnose(Item::frame(*f, 3 + i as u64), None)
            .unwrap();
        let (one, gpu_maps) = (one.detection, one.maps);
        let cpu_maps = cpu_det
            .diagnose(Item::frame(*f, i as u64), None)
            .unwrap()
            .maps;
        let e = rel_err(&gpu_maps, &cpu_maps);
        println!("frame {i}: GPU f16 vs CPU f32 keypoint maps rel err {e:.2e}");
        assert!(e < 3e-2, "frame {i}: maps rel err {e}");
        // Scores, not positions: near-ties may resolve differently between batch sizes.
        for (b, o) in batched[i].keypoints.iter().zip(&one.keypoints) {
            assert!(
                (b.score - o.score).abs() <= 1e-2 * o.score.abs(),
                "frame {i}: batched {b:?} vs single {o:?}"
            );
        }
    }
}
