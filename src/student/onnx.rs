//! The student as a standard ONNX model (IR version 8, opset 17, default domain only), so
//! that ONNX runtimes, DL Streamer and DeepStream can run it without this crate.
//!
//! The file is written by hand: the protobuf wire format needs only varints and
//! length-delimited fields, and the handful of ONNX messages used here are small (field
//! numbers from `onnx/onnx.proto3`). Graph, names and metadata are described in
//! `docs/onnx.md`.

use super::{net, StudentInfo, StudentWeights};
use crate::error::{Error, Result};

/// ONNX IR version written (ONNX 1.10 on; with opset 17, runtimes built on ONNX 1.12 on).
pub const IR_VERSION: i64 = 8;
/// Version of the default (`ai.onnx`) operator set the graph uses.
pub const OPSET: i64 = 17;
/// Name of the graph input: float32 [N, 3, S, S], RGB planar in [0, 1].
pub const INPUT: &str = "image";
/// Name of the graph output: float32 [N, K, S/4, S/4].
pub const OUTPUT: &str = "heatmaps";
/// Name of the symbolic batch dimension.
pub const BATCH: &str = "batch";

/// The `output` metadata entry: what the heatmaps are and how to read a keypoint off them
/// (the same reading as [`net::heatmap_peak`] and [`super::Student::keypoints_of`]).
pub const OUTPUT_DOC: &str = "heatmaps [N,K,S/4,S/4] float32, one map per keypoint in \
token_indices order; keypoint k: arg-max cell (i,j) of map k (row i, column j), refined per \
axis by a parabola through the peak c and its neighbours l, r: d = 0.5*(l-r)/(l-2c+r) \
clamped to [-0.5,0.5] when l-2c+r < 0, else 0 (and 0 on the border); normalised to the \
input square x = (j+dx+0.5)/(S/4), y = (i+dy+0.5)/(S/4); confidence = max(peak,0) * \
confidence_scale[k]";

/// The ONNX model of a student, as file bytes (the same student always gives the same
/// bytes).
pub fn export(w: &StudentWeights) -> Result<Vec<u8>> {
    let mut g = with_weights(w)?;
    forward_nodes(&mut g);
    let graph = graph_msg(&g, w.info.input_size, w.info.num_keypoints);
    Ok(model_msg(&graph, &w.info).0)
}

/// A graph holding the checked weights of `w` and the network's constants.
fn with_weights(w: &StudentWeights) -> Result<Graph> {
    let info = &w.info;
    info.validate()
        .map_err(|m| Error::Invalid(format!("cannot export the student to ONNX: {m}")))?;
    if w.layers.len() != net::LAYERS.len() {
        return Err(Error::Invalid(format!(
            "cannot export the student to ONNX: {} layers, {} has {}",
            w.layers.len(),
            super::ARCH,
            net::LAYERS.len()
        )));
    }
    let k = info.num_keypoints;
    let mut g = Graph::default();
    for (i, (wt, b)) in w.layers.iter().enumerate() {
        let ws = net::weight_shape(&info.widths, k, i);
        if wt.len() != ws.iter().product::<usize>() || b.len() != ws[0] {
            return Err(Error::Invalid(format!(
                "cannot export the student to ONNX: layer `{}` holds {} weights and {} biases, \
                 its shape is {ws:?}",
                net::LAYERS[i].0,
                wt.len(),
                b.len()
            )));
        }
        let name = net::LAYERS[i].0;
        g.initializer(&format!("{name}.weight"), &ws, wt);
        g.initializer(&format!("{name}.bias"), &[ws[0]], b);
    }
    g.initializer("half", &[1], &[0.5]);
    g.initializer("two", &[1], &[2.0]);
    g.initializer("up_scales", &[4], &[1.0, 1.0, 2.0, 2.0]);

    Ok(g)
}

/// The nodes of `net::forward`, from the input to the output.
fn forward_nodes(g: &mut Graph) {
    // The same graph as `net::forward`, node for node, starting with the centring
    // (x - 0.5) * 2.
    let x = g.node("Sub", "centre", "centred", &[INPUT, "half"], Vec::new());
    let x = g.node("Mul", "scale", "scaled", &[&x, "two"], Vec::new());
    let block = |g: &mut Graph, a: usize, x: &str| {
        let y = g.conv(a, x);
        let y = g.relu(&y);
        let y = g.conv(a + 1, &y);
        let y = g.add(&y, x);
        g.relu(&y)
    };
    let conv_relu = |g: &mut Graph, i: usize, x: &str| {
        let y = g.conv(i, x);
        g.relu(&y)
    };
    let s1 = conv_relu(g, 0, &x);
    let s1 = conv_relu(g, 1, &s1);
    let d2 = conv_relu(g, 2, &s1);
    let b2 = block(g, 3, &d2);
    let d3 = conv_relu(g, 5, &b2);
    let b3 = block(g, 6, &d3);
    let d4 = conv_relu(g, 8, &b3);
    let b4 = block(g, 9, &d4);
    let l4 = g.conv(11, &b4);
    let u4 = g.up2(&l4);
    let t3 = g.add(&u4, &b3);
    let f3 = conv_relu(g, 12, &t3);
    let l3 = g.conv(13, &f3);
    let u3 = g.up2(&l3);
    let t2 = g.add(&u3, &b2);
    let f2 = conv_relu(g, 14, &t2);
    g.conv_to(15, &f2, OUTPUT);
}

/// The graph message: nodes, initializers, input [B, 3, `s`, `s`] and output
/// [B, `k`, s/4, s/4].
fn graph_msg(g: &Graph, s: usize, k: usize) -> Msg {
    let mut graph = Msg::default();
    for n in &g.nodes {
        graph.msg(1, n);
    }
    graph.str(2, super::ARCH);
    for t in &g.initializers {
        graph.msg(5, t);
    }
    graph.str(
        10,
        "StableKeypoints student: RGB image in [0,1] -> one heatmap per keypoint",
    );
    let side = s / net::STRIDE;
    graph.msg(
        11,
        &value_info(
            INPUT,
            &[Dim::Batch, Dim::Fixed(3), Dim::Fixed(s), Dim::Fixed(s)],
        ),
    );
    graph.msg(
        12,
        &value_info(
            OUTPUT,
            &[
                Dim::Batch,
                Dim::Fixed(k),
                Dim::Fixed(side),
                Dim::Fixed(side),
            ],
        ),
    );
    graph
}

/// The model message: the graph, the opset and the student's metadata.
fn model_msg(graph: &Msg, info: &StudentInfo) -> Msg {
    let mut model = Msg::default();
    model.int(1, IR_VERSION);
    model.str(2, "stablekeypoints");
    model.str(3, env!("CARGO_PKG_VERSION"));
    model.int(5, 1);
    model.str(6, super::INPUT_DOC);
    model.msg(7, graph);
    let mut opset = Msg::default();
    opset.str(1, "");
    opset.int(2, OPSET);
    model.msg(8, &opset);
    let mut meta = info.to_metadata();
    meta.insert("output".into(), OUTPUT_DOC.into());
    for (key, value) in &meta {
        let mut e = Msg::default();
        e.str(1, key);
        e.str(2, value);
        model.msg(14, &e);
    }
    model
}

/// A graph under construction: nodes in topological order and their initializers.
#[derive(Default)]
struct Graph {
    nodes: Vec<Msg>,
    initializers: Vec<Msg>,
}

enum Attr<'a> {
    Ints(&'a [i64]),
    Str(&'a str),
}

impl Graph {
    fn initializer(&mut self, name: &str, dims: &[usize], values: &[f32]) {
        let mut t = Msg::default();
        t.packed_ints(1, &dims.iter().map(|&d| d as i64).collect::<Vec<_>>());
        t.int(2, FLOAT);
        t.str(8, name);
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        t.bytes(9, &raw);
        self.initializers.push(t);
    }

    /// Appends a node with one output named `out`; returns `out`.
    fn node(
        &mut self,
        op: &str,
        name: &str,
        out: &str,
        inputs: &[&str],
        attrs: Vec<(&str, Attr)>,
    ) -> String {
        let mut n = Msg::default();
        for i in inputs {
            n.str(1, i);
        }
        n.str(2, out);
        n.str(3, name);
        n.str(4, op);
        for (key, value) in attrs {
            let mut a = Msg::default();
            a.str(1, key);
            match value {
                Attr::Ints(v) => {
                    a.packed_ints(8, v);
                    a.int(20, ATTR_INTS);
                }
                Attr::Str(v) => {
                    a.bytes(4, v.as_bytes());
                    a.int(20, ATTR_STRING);
                }
            }
            n.msg(5, &a);
        }
        self.nodes.push(n);
        out.to_string()
    }

    /// Layer `i`'s convolution with bias (padding k/2), its output named after the layer.
    fn conv(&mut self, i: usize, x: &str) -> String {
        self.conv_to(i, x, net::LAYERS[i].0)
    }

    fn conv_to(&mut self, i: usize, x: &str, out: &str) -> String {
        let (name, _, _, k, stride) = net::LAYERS[i];
        let (k, stride, pad) = (k as i64, stride as i64, (k / 2) as i64);
        self.node(
            "Conv",
            name,
            out,
            &[x, &format!("{name}.weight"), &format!("{name}.bias")],
            vec![
                ("kernel_shape", Attr::Ints(&[k, k])),
                ("pads", Attr::Ints(&[pad, pad, pad, pad])),
                ("strides", Attr::Ints(&[stride, stride])),
                ("dilations", Attr::Ints(&[1, 1])),
            ],
        )
    }

    fn relu(&mut self, x: &str) -> String {
        let out = format!("{x}.relu");
        self.node("Relu", &out, &out, &[x], Vec::new())
    }

    fn add(&mut self, a: &str, b: &str) -> String {
        let out = format!("{a}.add");
        self.node("Add", &out, &out, &[a, b], Vec::new())
    }

    /// 2x nearest-neighbour upsampling: output (y, x) = input (y/2, x/2) rounded down.
    fn up2(&mut self, x: &str) -> String {
        let out = format!("{x}.up2");
        self.node(
            "Resize",
            &out,
            &out,
            &[x, "", "up_scales"],
            vec![
                ("mode", Attr::Str("nearest")),
                ("coordinate_transformation_mode", Attr::Str("asymmetric")),
                ("nearest_mode", Attr::Str("floor")),
            ],
        )
    }
}

fn value_info(name: &str, dims: &[Dim]) -> Msg {
    let mut shape = Msg::default();
    for d in dims {
        let mut dim = Msg::default();
        match d {
            Dim::Fixed(n) => dim.int(1, *n as i64),
            Dim::Batch => dim.str(2, BATCH),
        }
        shape.msg(1, &dim);
    }
    let mut tensor = Msg::default();
    tensor.int(1, FLOAT);
    tensor.msg(2, &shape);
    let mut ty = Msg::default();
    ty.msg(1, &tensor);
    let mut v = Msg::default();
    v.str(1, name);
    v.msg(2, &ty);
    v
}

enum Dim {
    Fixed(usize),
    Batch,
}

/// `TensorProto.DataType.FLOAT`.
const FLOAT: i64 = 1;
/// `AttributeProto.AttributeType.STRING`.
const ATTR_STRING: i64 = 3;
/// `AttributeProto.AttributeType.INTS`.
const ATTR_INTS: i64 = 7;

/// Protobuf wire types.
const VARINT: u64 = 0;
const LEN: u64 = 2;

/// One protobuf message being encoded: fields are appended in call order.
#[derive(Default)]
struct Msg(Vec<u8>);

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Msg {
    fn key(&mut self, field: u64, wire: u64) {
        put_varint(&mut self.0, (field << 3) | wire);
    }

    /// An int32/int64/enum field (negative values as ten-byte two's complement).
    fn int(&mut self, field: u64, v: i64) {
        self.key(field, VARINT);
        put_varint(&mut self.0, v as u64);
    }

    fn bytes(&mut self, field: u64, b: &[u8]) {
        self.key(field, LEN);
        put_varint(&mut self.0, b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn str(&mut self, field: u64, s: &str) {
        self.bytes(field, s.as_bytes());
    }

    fn msg(&mut self, field: u64, m: &Msg) {
        self.bytes(field, &m.0);
    }

    /// A packed `repeated int64` field (proto3's default encoding).
    fn packed_ints(&mut self, field: u64, v: &[i64]) {
        let mut body = Vec::new();
        for &x in v {
            put_varint(&mut body, x as u64);
        }
        self.bytes(field, &body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        out
    }

    #[test]
    fn varints_match_the_protobuf_encoding() {
        let cases: [(u64, &[u8]); 6] = [
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for (v, bytes) in cases {
            assert_eq!(varint(v), bytes, "{v}");
        }
        // int64 -1 is ten bytes, as protobuf writes negative int64s.
        let mut m = Msg::default();
        m.int(1, -1);
        assert_eq!(m.0.len(), 11);
        assert_eq!(m.0[0], 0x08);
    }

    #[test]
    fn small_messages_are_encoded_by_hand() {
        // The protobuf documentation's examples: field 1 = 150, field 2 = "testing".
        let mut m = Msg::default();
        m.int(1, 150);
        assert_eq!(m.0, [0x08, 0x96, 0x01]);
        let mut m = Msg::default();
        m.str(2, "testing");
        assert_eq!(m.0, [0x12, 0x07, b't', b'e', b's', b't', b'i', b'n', b'g']);
        // A nested message (field 3 holding the first) and a packed repeated field.
        let mut inner = Msg::default();
        inner.int(1, 150);
        let mut outer = Msg::default();
        outer.msg(3, &inner);
        assert_eq!(outer.0, [0x1a, 0x03, 0x08, 0x96, 0x01]);
        let mut p = Msg::default();
        p.packed_ints(4, &[3, 270, 86942]);
        assert_eq!(p.0, [0x22, 0x06, 0x03, 0x8e, 0x02, 0x9e, 0xa7, 0x05]);
        // A field number above 15 takes a two-byte key: (20 << 3) | 0 = 160.
        let mut a = Msg::default();
        a.int(20, ATTR_INTS);
        assert_eq!(a.0, [0xa0, 0x01, 0x07]);
    }

    #[test]
    fn value_info_spells_a_symbolic_batch() {
        let v = value_info("x", &[Dim::Batch, Dim::Fixed(3)]);
        // ValueInfoProto{name: "x", type: TypeProto{tensor_type: {elem_type: 1, shape:
        // {dim: [{dim_param: "batch"}, {dim_value: 3}]}}}}.
        let dim0 = [0x12, 0x05, b'b', b'a', b't', b'c', b'h'];
        let dim1 = [0x08, 0x03];
        let mut shape = vec![0x0a, dim0.len() as u8];
        shape.extend(dim0);
        shape.extend([0x0a, dim1.len() as u8]);
        shape.extend(dim1);
        let mut tensor = vec![0x08, 0x01, 0x12, shape.len() as u8];
        tensor.extend(&shape);
        let mut ty = vec![0x0a, tensor.len() as u8];
        ty.extend(&tensor);
        let mut want = vec![0x0a, 0x01, b'x', 0x12, ty.len() as u8];
        want.extend(&ty);
        assert_eq!(v.0, want);
    }
}
