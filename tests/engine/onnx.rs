//! The ONNX export, run by an independent runtime (candle-onnx, which parses the file with
//! prost and evaluates it node by node): it must give the student's own heatmaps, and carry
//! the student file's metadata and the declared input and output.

use candle_core::{Device, Tensor};
use candle_onnx::onnx::{
    tensor_shape_proto::dimension::Value as DimValue, type_proto, ValueInfoProto,
};
use stablekeypoints::ops::rng::Rng;
use stablekeypoints::student::{net, onnx, Student, StudentInfo, StudentWeights};
use stablekeypoints::CropMode;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::common::temp::temp_dir;

const WIDTHS: [usize; 4] = [8, 8, 16, 16];
const K: usize = 5;
const SIZE: usize = 64;

/// A student with seeded random weights (He-uniform, so activations stay of order one) and
/// made-up teacher identity.
fn random_student(seed: u64) -> StudentWeights {
    let mut rng = Rng::new(seed);
    let layers = (0..net::LAYERS.len())
        .map(|i| {
            let ws = net::weight_shape(&WIDTHS, K, i);
            let fan_in = (ws[1] * ws[2] * ws[3]) as f64;
            let a = (6.0 / fan_in).sqrt();
            let w = (0..ws.iter().product::<usize>())
                .map(|_| rng.uniform_range(-a, a) as f32)
                .collect();
            let b = (0..ws[0])
                .map(|_| rng.uniform_range(-0.1, 0.1) as f32)
                .collect();
            (w, b)
        })
        .collect();
    let info = StudentInfo {
        widths: WIDTHS,
        num_keypoints: K,
        input_size: SIZE,
        crop: CropMode::CenterCrop,
        teacher_model: "teacher-hash-for-the-test".into(),
        tokens_hash: "tokens-hash-for-the-test".into(),
        token_indices: vec![3, 1, 4, 15, 9],
        confidence_scale: vec![0.5, 1.0, 1.5, 2.0, 0.25],
        extra: BTreeMap::from([("distill_steps".to_string(), "123".to_string())]),
    };
    StudentWeights { info, layers }
}

/// `[dim_param or dim_value, ...]` of a declared tensor, as strings.
fn dims(v: &ValueInfoProto) -> (i32, Vec<String>) {
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        panic!("{} is not declared as a tensor", v.name);
    };
    let dims = t
        .shape
        .as_ref()
        .expect("a shape")
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(DimValue::DimValue(n)) => n.to_string(),
            Some(DimValue::DimParam(p)) => p.clone(),
            None => "?".into(),
        })
        .collect();
    (t.elem_type, dims)
}

#[test]
fn exported_student_runs_the_same_in_an_onnx_runtime() {
    let w = random_student(23);
    let bytes = onnx::export(&w).unwrap();
    assert_eq!(
        onnx::export(&w).unwrap(),
        bytes,
        "the export is deterministic"
    );
    let dir = temp_dir("onnx");
    let file = dir.join("student.onnx");
    std::fs::write(&file, &bytes).unwrap();
    let model = candle_onnx::read_file(&file).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    // The header: IR 8, opset 17 of the default domain only.
    assert_eq!(model.ir_version, 8);
    assert_eq!(model.opset_import.len(), 1);
    assert_eq!(model.opset_import[0].domain, "");
    assert_eq!(model.opset_import[0].version, 17);

    // Declared input and output: float32 (elem_type 1), a symbolic batch, fixed sides.
    let graph = model.graph.as_ref().unwrap();
    assert_eq!(graph.input.len(), 1, "only the image is an input");
    assert_eq!(graph.output.len(), 1);
    let (it, id) = dims(&graph.input[0]);
    let (ot, od) = dims(&graph.output[0]);
    assert_eq!((graph.input[0].name.as_str(), it), ("image", 1));
    assert_eq!(id, ["batch", "3", "64", "64"]);
    assert_eq!((graph.output[0].name.as_str(), ot), ("heatmaps", 1));
    assert_eq!(od, ["batch", "5", "16", "16"]);
    let ops: std::collections::BTreeSet<_> =
        graph.node.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(
        ops,
        ["Add", "Conv", "Mul", "Relu", "Resize", "Sub"].into(),
        "standard operators only"
    );

    // Metadata: every key of the student file, verbatim, plus `output`.
    let props: HashMap<_, _> = model
        .metadata_props
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect();
    let st = w.to_bytes().unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&st).unwrap();
    let file_meta = header.metadata().clone().unwrap();
    for key in [
        "format",
        "arch",
        "widths",
        "num_keypoints",
        "input_size",
        "crop",
        "input",
        "teacher_model",
        "tokens_hash",
        "token_indices",
        "confidence_scale",
        "distill_steps",
    ] {
        assert!(file_meta.contains_key(key), "the student file lacks {key}");
    }
    for (k, v) in &file_meta {
        assert_eq!(props.get(k), Some(v), "metadata `{k}`");
    }
    assert_eq!(props.len(), file_meta.len() + 1);
    assert_eq!(props["output"], onnx::OUTPUT_DOC);
    assert_eq!(props["num_keypoints"], "5");
    assert_eq!(props["crop"], "center-crop");

    // Two random images: the runtime's heatmaps are the student's.
    let mut rng = Rng::new(7);
    let pixels: Vec<f32> = (0..2 * 3 * SIZE * SIZE)
        .map(|_| rng.uniform() as f32)
        .collect();
    let images = Tensor::from_vec(pixels, (2, 3, SIZE, SIZE), &Device::Cpu).unwrap();
    let student = Student::new(w, Path::new("random.safetensors"), &Device::Cpu).unwrap();
    let want = student.heatmaps(&images).unwrap();
    let mut out = candle_onnx::simple_eval(
        &model,
        HashMap::from([("image".to_string(), images.clone())]),
    )
    .unwrap();
    let got = out.remove("heatmaps").expect("a `heatmaps` output");
    assert_eq!(got.dims(), [2, K, SIZE / 4, SIZE / 4]);
    assert_eq!(want.dims(), got.dims());
    let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = want
        .iter()
        .zip(&got)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    println!("max |heatmap| = {scale:.4}, max |onnx - student| = {diff:.3e}");
    // Non-trivial maps (not all zero), and equal up to float rounding.
    assert!(scale > 0.1, "degenerate heatmaps: max {scale}");
    assert!(diff <= 1e-4, "ONNX and student heatmaps differ by {diff}");
}

#[test]
fn export_refuses_mis_shaped_layers() {
    let mut w = random_student(1);
    w.layers[3].0.pop();
    let e = onnx::export(&w).unwrap_err().to_string();
    assert!(e.contains("b2a"), "{e}");
}
