//! Evaluation (issue 4): the pseudo-inverse and the regressor against hand-computed cases,
//! every metric against hand-computed values, label-file parsing and its errors. The
//! command end to end is in cli/tests/cli/eval.rs.

use stablekeypoints::eval::{
    pinv, pinv_sym, LabelSet, Metric, PoseModel, Protocol, Regressor, Scored,
};
use stablekeypoints::pose::sym_eigen;
use std::path::Path;

use crate::common::temp::temp_dir;

fn assert_close(a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol, "{a:?}\n  vs\n{b:?}");
    }
}

fn matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum();
        }
    }
    out
}

/// Deterministic pseudo-random numbers in [0, 1).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

// ---------------------------------------------------------------- pinv

#[test]
fn pinv_of_hand_computed_symmetric_matrices() {
    // Invertible: the inverse.
    assert_close(
        &pinv_sym(&[2.0, 0.0, 0.0, 4.0], 2, 1e-10),
        &[0.5, 0.0, 0.0, 0.25],
        1e-12,
    );
    let third = 1.0 / 3.0;
    assert_close(
        &pinv_sym(&[2.0, 1.0, 1.0, 2.0], 2, 1e-10),
        &[2.0 * third, -third, -third, 2.0 * third],
        1e-12,
    );
    // Rank 1: [[1,1],[1,1]] = 2 u u^T with u = (1,1)/sqrt 2, so pinv = u u^T / 2 = 1/4.
    assert_close(
        &pinv_sym(&[1.0, 1.0, 1.0, 1.0], 2, 1e-10),
        &[0.25; 4],
        1e-12,
    );
    // Rank 1 in 3-D: v v^T with v = (1,2,2), |v|^2 = 9: pinv = v v^T / 81.
    let v = [1.0, 2.0, 2.0];
    let vvt: Vec<f64> = (0..9).map(|i| v[i / 3] * v[i % 3]).collect();
    let want: Vec<f64> = vvt.iter().map(|x| x / 81.0).collect();
    assert_close(&pinv_sym(&vvt, 3, 1e-10), &want, 1e-12);
    // Rank 2 in 3-D: diag(3, 0, 5) rotated stays a rank-2 pseudo-inverse diag(1/3, 0, 1/5).
    assert_close(
        &pinv_sym(&[3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 5.0], 3, 1e-10),
        &[1.0 / 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.2],
        1e-12,
    );
    // Zero: zero.
    assert_close(&pinv_sym(&[0.0; 4], 2, 1e-10), &[0.0; 4], 0.0);
}

#[test]
fn pinv_of_hand_computed_rectangular_matrices() {
    // [[1,0],[0,1],[0,0]] -> [[1,0,0],[0,1,0]].
    assert_close(
        &pinv(&[1.0, 0.0, 0.0, 1.0, 0.0, 0.0], 3, 2, 1e-10),
        &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        1e-12,
    );
    // A column (1,2): its pseudo-inverse is the row (1,2)/5.
    assert_close(&pinv(&[1.0, 2.0], 2, 1, 1e-10), &[0.2, 0.4], 1e-12);
    // Rank-deficient [[1,2],[2,4]] = a a^T with a = (1,2): pinv = A / |a|^4 = A / 25.
    assert_close(
        &pinv(&[1.0, 2.0, 2.0, 4.0], 2, 2, 1e-10),
        &[0.04, 0.08, 0.08, 0.16],
        1e-12,
    );
}

#[test]
fn pinv_satisfies_the_penrose_conditions_on_a_rank_deficient_matrix() {
    let mut r = Lcg(3);
    // 5x4 of rank 2: B (5x2) C (2x4).
    let b: Vec<f64> = (0..10).map(|_| r.next() - 0.5).collect();
    let c: Vec<f64> = (0..8).map(|_| r.next() - 0.5).collect();
    let a = matmul(&b, &c, 5, 2, 4);
    let p = pinv(&a, 5, 4, 1e-6);
    let apa = matmul(&matmul(&a, &p, 5, 4, 5), &a, 5, 5, 4);
    assert_close(&apa, &a, 1e-9);
    let pap = matmul(&matmul(&p, &a, 4, 5, 4), &p, 4, 4, 5);
    assert_close(&pap, &p, 1e-9);
    let ap = matmul(&a, &p, 5, 4, 5);
    let apt: Vec<f64> = (0..25).map(|i| ap[(i % 5) * 5 + i / 5]).collect();
    assert_close(&ap, &apt, 1e-9);
    // The symmetric eigen-decomposition reconstructs its input.
    let m: Vec<f64> = (0..16).map(|_| r.next() - 0.5).collect();
    let sym: Vec<f64> = (0..16).map(|i| m[i] + m[(i % 4) * 4 + i / 4]).collect();
    let (vals, v) = sym_eigen(&sym, 4);
    let mut back = vec![0f64; 16];
    for k in 0..4 {
        for i in 0..4 {
            for j in 0..4 {
                back[i * 4 + j] += vals[k] * v[i * 4 + k] * v[j * 4 + k];
            }
        }
    }
    assert_close(&back, &sym, 1e-12);
}

// ---------------------------------------------------------------- regressor

#[test]
fn regressor_recovers_an_exact_linear_map_per_visible_landmark() {
    let mut r = Lcg(11);
    let (n, k, l) = (20, 3, 2);
    let w: Vec<f64> = (0..2 * k * 2 * l).map(|_| r.next() * 2.0 - 1.0).collect();
    let mut x = Vec::new();
    let mut y = Vec::new();
    for i in 0..n {
        let xi: Vec<f64> = (0..2 * k).map(|_| r.next() - 0.5).collect();
        let yi = matmul(&xi, &w, 1, 2 * k, 2 * l);
        let mut row: Vec<Option<[f64; 2]>> = yi.chunks(2).map(|c| Some([c[0], c[1]])).collect();
        // Landmark 1 hidden on every third row, where its (unused) value is garbage.
        if i % 3 == 0 {
            row[1] = None;
        }
        x.push(xi);
        y.push(row);
    }
    let reg = Regressor::fit(&x, &y).unwrap();
    assert_eq!((reg.num_keypoints, reg.num_landmarks), (k, l));
    assert_close(&reg.weights, &w, 1e-9);
    // Too few visible samples for landmark 1: still the minimum-norm exact fit on them.
    let y2: Vec<Vec<Option<[f64; 2]>>> = y
        .iter()
        .enumerate()
        .map(|(i, row)| vec![row[0], if i < 2 { Some([0.1, 0.2]) } else { None }])
        .collect();
    let reg2 = Regressor::fit(&x, &y2).unwrap();
    for xi in &x[..2] {
        let kp: Vec<[f64; 2]> = xi.chunks(2).map(|c| [c[0] + 0.5, c[1] + 0.5]).collect();
        let p = reg2.predict(&kp);
        assert_close(&[p[1][0], p[1][1]], &[0.6, 0.7], 1e-9);
    }
    // A landmark never visible cannot be fitted.
    let y3: Vec<Vec<Option<[f64; 2]>>> = y.iter().map(|row| vec![row[0], None]).collect();
    let e = Regressor::fit(&x, &y3).unwrap_err().to_string();
    assert!(e.contains("landmark 1"), "{e}");
}

#[test]
fn regressor_predicts_half_plus_centred_keypoints_times_w() {
    // One keypoint, one landmark: x' = 2 (x - .5), y' = 3 (y - .5), plus 0.5.
    let reg = Regressor {
        num_keypoints: 1,
        num_landmarks: 1,
        weights: vec![2.0, 0.0, 0.0, 3.0],
    };
    let p = reg.predict(&[[0.6, 0.7]]);
    assert_close(&[p[0][0], p[0][1]], &[0.7, 1.1], 1e-12);
    // The pose file keeps the map, names and skeleton.
    let d = temp_dir("pose");
    let pose = PoseModel::new(&reg, vec![7], Some(vec!["nose".into()]), vec![[0, 0]]).unwrap();
    pose.save(&d.join("pose.json")).unwrap();
    let back = PoseModel::load(&d.join("pose.json")).unwrap();
    assert_eq!(back, pose);
    assert_eq!(back.regressor().unwrap(), reg);
    assert!(PoseModel::new(&reg, vec![7], Some(vec![]), vec![]).is_err());
    assert!(PoseModel::new(&reg, vec![7], None, vec![[0, 1]]).is_err());
}

// ---------------------------------------------------------------- metrics

/// The visibility protocol's tests below do not read `raw`; the paper protocol's are in
/// tests/engine/fidelity.rs.
fn scored<'a>(w: f64, h: f64, pred: &'a [[f64; 2]], gt: &'a [Option<[f64; 2]>]) -> Scored<'a> {
    Scored {
        width: w,
        height: h,
        pred,
        gt,
        raw: gt,
    }
}

const VIS: Protocol = Protocol::Visibility;

#[test]
fn taichi_sums_visible_errors_at_256_and_averages_over_images() {
    // 128x64 image: landmark 0 off by 3 px in x at 128 -> 6 px at 256; landmark 1 hidden;
    // landmark 2 off by 4 px in y at 64 -> 16 px at 256. Sum 22. A second image without
    // visible landmarks counts as 0: mean 11.
    let pred = [[0.5 + 3.0 / 128.0, 0.5], [0.9, 0.9], [0.0, 4.0 / 64.0]];
    let gt = [Some([64.0, 32.0]), None, Some([0.0, 0.0])];
    let none = [None, None, None];
    let v = Metric::TaiChi
        .score(
            &[
                scored(128.0, 64.0, &pred, &gt),
                scored(10.0, 10.0, &pred, &none),
            ],
            VIS,
        )
        .unwrap();
    assert!((v.value - 11.0).abs() < 1e-9, "{v:?}");
    assert_eq!((v.scored_images, v.skipped_images), (2, 0));
}

#[test]
fn inter_ocular_divides_by_the_labelled_eye_distance() {
    // Eyes 40 px apart, exact; landmark 2 off by (3, 4) = 5 px: mean 5/3 px = 4.1667 %.
    let pred = [[0.3, 0.4], [0.7, 0.4], [0.53, 0.74]];
    let gt = [Some([30.0, 40.0]), Some([70.0, 40.0]), Some([50.0, 70.0])];
    let one_eye = [Some([30.0, 40.0]), None, Some([50.0, 70.0])];
    let m = Metric::InterOcular { left: 0, right: 1 };
    let v = m
        .score(
            &[
                scored(100.0, 100.0, &pred, &gt),
                scored(100.0, 100.0, &pred, &one_eye),
            ],
            VIS,
        )
        .unwrap();
    assert!((v.value - 100.0 * 5.0 / 3.0 / 40.0).abs() < 1e-9, "{v:?}");
    assert_eq!((v.scored_images, v.skipped_images), (1, 1));
    // Eyes given as other landmarks: 2 and 0 are sqrt(20^2+30^2) apart.
    let m = Metric::InterOcular { left: 2, right: 0 };
    let v = m.score(&[scored(100.0, 100.0, &pred, &gt)], VIS).unwrap();
    assert!((v.value - 100.0 * 5.0 / 3.0 / 1300f64.sqrt()).abs() < 1e-9);
    assert!(Metric::InterOcular { left: 0, right: 3 }
        .validate(3)
        .is_err());
    assert!(Metric::InterOcular { left: 1, right: 1 }
        .validate(3)
        .is_err());
}

#[test]
fn visible_is_the_mean_normalised_error_in_percent() {
    // 200x100: landmark 0 off by 20 px in x (0.1), landmark 1 by 5 px in y (0.05): 7.5 %;
    // second image exact: 0 %; third without visible landmarks: skipped. Mean 3.75 %.
    let pred = [[0.6, 0.5], [0.5, 0.55]];
    let gt = [Some([100.0, 50.0]), Some([100.0, 50.0])];
    let pred2 = [[0.5, 0.5], [0.1, 0.1]];
    let gt2 = [Some([100.0, 50.0]), None];
    let none = [None, None];
    let v = Metric::Visible
        .score(
            &[
                scored(200.0, 100.0, &pred, &gt),
                scored(200.0, 100.0, &pred2, &gt2),
                scored(200.0, 100.0, &pred, &none),
            ],
            VIS,
        )
        .unwrap();
    assert!((v.value - 3.75).abs() < 1e-9, "{v:?}");
    assert_eq!((v.scored_images, v.skipped_images), (2, 1));
}

#[test]
fn pck_counts_visible_landmarks_within_the_threshold() {
    // 128x128 (exact in binary): errors 5 px (in), 6 px (in: <=), 7 px (out), one hidden.
    let q = |px: f64| 0.5 + px / 128.0;
    let pred = [[q(5.0), 0.5], [0.5, q(6.0)], [q(7.0), 0.5], [0.0, 0.0]];
    let gt = [
        Some([64.0, 64.0]),
        Some([64.0, 64.0]),
        Some([64.0, 64.0]),
        None,
    ];
    let v = Metric::Pck { px: 6.0 }
        .score(&[scored(128.0, 128.0, &pred, &gt)], VIS)
        .unwrap();
    assert!((v.value - 200.0 / 3.0).abs() < 1e-9, "{v:?}");
    let v = Metric::Pck { px: 4.0 }
        .score(&[scored(128.0, 128.0, &pred, &gt)], VIS)
        .unwrap();
    assert_eq!(v.value, 0.0);
    assert!(Metric::Pck { px: 0.0 }.validate(4).is_err());
}

#[test]
fn orientation_invariant_takes_the_better_of_the_two_orders() {
    // 128x128; labels: left (32, 64), right (96, 64), head (64, 32). The prediction has left
    // and right swapped and the head 8 px low. Straight: (64 + 64 + 8) / 3; swapped: 8 / 3.
    let pred = [[0.75, 0.5], [0.25, 0.5], [0.5, 40.0 / 128.0]];
    let gt = [Some([32.0, 64.0]), Some([96.0, 64.0]), Some([64.0, 32.0])];
    let m = Metric::OrientationInvariant {
        pairs: vec![(0, 1)],
    };
    let v = m.score(&[scored(128.0, 128.0, &pred, &gt)], VIS).unwrap();
    assert!((v.value - 8.0 / 3.0).abs() < 1e-9, "{v:?}");
    // Unswapped predictions score the straight order.
    let pred = [[0.25, 0.5], [0.75, 0.5], [0.5, 40.0 / 128.0]];
    let v = m.score(&[scored(128.0, 128.0, &pred, &gt)], VIS).unwrap();
    assert!((v.value - 8.0 / 3.0).abs() < 1e-9, "{v:?}");
    assert!(Metric::OrientationInvariant { pairs: vec![] }
        .validate(3)
        .is_err());
    assert!(Metric::OrientationInvariant {
        pairs: vec![(1, 1)]
    }
    .validate(3)
    .is_err());
    // A repeated landmark is allowed (the reference's own list has one).
    assert!(Metric::OrientationInvariant {
        pairs: vec![(0, 1), (1, 2)]
    }
    .validate(3)
    .is_ok());
}

// ---------------------------------------------------------------- label files

#[test]
fn label_csv_parses_header_quotes_visibility_and_relative_paths() {
    let text = "\u{feff}image,x0,y0,x1,y1\n\
                # a comment\n\
                a.png, 10, 20.5 ,,\n\
                \n\
                \"sub/b,c.png\",-1,5,3,4\r\n\
                /abs/d.png,1e1,2,0,0\n";
    let set = LabelSet::parse(text, Path::new("data/labels.csv")).unwrap();
    assert_eq!(set.num_landmarks, 2);
    assert_eq!(set.header.as_ref().unwrap()[0], "image");
    assert_eq!(set.rows.len(), 3);
    assert_eq!(set.rows[0].image, Path::new("data/a.png"));
    assert_eq!(set.rows[0].line, 3);
    assert_eq!(set.rows[0].points, vec![Some([10.0, 20.5]), None]);
    assert_eq!(set.rows[1].image, Path::new("data/sub/b,c.png"));
    assert_eq!(set.rows[1].points, vec![None, Some([3.0, 4.0])]);
    assert_eq!(set.rows[2].image, Path::new("/abs/d.png"));
    assert_eq!(
        set.rows[2].points,
        vec![Some([10.0, 2.0]), Some([0.0, 0.0])]
    );
    // Without a header, the first line is data.
    let set = LabelSet::parse("x.png,1,2\n", Path::new("l.csv")).unwrap();
    assert_eq!(set.rows.len(), 1);
    assert_eq!(set.rows[0].image, Path::new("./x.png"));
}

#[test]
fn label_csv_errors_name_file_line_and_column() {
    let p = Path::new("dir/labels.csv");
    let err = |t: &str| LabelSet::parse(t, p).unwrap_err().to_string();
    let e = err("a.png,1,2\nb.png,1,2,3,4\n");
    assert!(
        e.contains("dir/labels.csv:2:") && e.contains("5 columns"),
        "{e}"
    );
    let e = err("a.png,1,2\nb.png,1,abc\n");
    assert!(
        e.contains("dir/labels.csv:2: column 3") && e.contains("abc"),
        "{e}"
    );
    let e = err("# only\n\na.png,1,2,3\n");
    assert!(
        e.contains("dir/labels.csv:3:") && e.contains("4 columns"),
        "{e}"
    );
    let e = err("a.png,1,2\n,1,2\n");
    assert!(
        e.contains("labels.csv:2: column 1: empty image path"),
        "{e}"
    );
    let e = err("a.png,1,inf\n");
    assert!(e.contains("labels.csv:1: column 3"), "{e}");
    let e = err("\"a.png,1,2\n");
    assert!(e.contains("labels.csv:1: column 1: unterminated"), "{e}");
    let e = err("image,x,y\n");
    assert!(
        e.contains("dir/labels.csv") && e.contains("no labelled images"),
        "{e}"
    );
    let e = LabelSet::load(Path::new("/nonexistent/labels.csv"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/labels.csv"), "{e}");
}
