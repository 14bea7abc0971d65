//! The articulated figure: 14 joints, 14 coloured parts, a kinematic pose with a person's
//! joint ranges, forward kinematics in 3D and an orthographic projection onto the image.
//!
//! Body frame: y up, x towards the person's left, z forward (towards the camera at yaw 0),
//! pelvis at the origin, lengths in body heights (head top to sole of a standing figure ~1).
//! Image coordinates are normalised to the image side, origin top-left, y down.

use crate::rng::Rng;

/// Joint names, in label order (as `eval --names` reads them).
pub const JOINTS: [&str; 14] = [
    "head",
    "neck",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
];
pub const NUM_JOINTS: usize = JOINTS.len();

/// Joint index pairs drawn as the skeleton.
pub const SKELETON: [[usize; 2]; 14] = [
    [0, 1],
    [1, 2],
    [1, 3],
    [2, 4],
    [3, 5],
    [4, 6],
    [5, 7],
    [2, 8],
    [3, 9],
    [8, 9],
    [8, 10],
    [9, 11],
    [10, 12],
    [11, 13],
];

/// The drawn parts; each has one fixed colour (its identity, which the captions name).
pub const PARTS: [&str; 14] = [
    "head",
    "torso",
    "left_upper_arm",
    "right_upper_arm",
    "left_forearm",
    "right_forearm",
    "left_hand",
    "right_hand",
    "left_thigh",
    "right_thigh",
    "left_shin",
    "right_shin",
    "left_foot",
    "right_foot",
];
pub const NUM_PARTS: usize = PARTS.len();

/// sRGB colour of each part: saturated hues (backgrounds are desaturated), the person's left
/// side warm, the right side cool.
pub const PART_COLOURS: [[u8; 3]; NUM_PARTS] = [
    [250, 208, 40],  // head: yellow
    [128, 64, 200],  // torso: violet
    [228, 36, 36],   // left upper arm: red
    [32, 84, 230],   // right upper arm: blue
    [255, 140, 20],  // left forearm: orange
    [20, 200, 235],  // right forearm: cyan
    [255, 100, 190], // left hand: pink
    [130, 235, 50],  // right hand: lime
    [150, 20, 70],   // left thigh: crimson
    [20, 40, 140],   // right thigh: navy
    [200, 50, 200],  // left shin: magenta
    [10, 150, 100],  // right shin: green
    [120, 70, 10],   // left foot: brown
    [10, 100, 120],  // right foot: teal
];

/// The parts whose drawn pixels may hold each joint (for visibility).
pub const JOINT_PARTS: [&[usize]; NUM_JOINTS] = [
    &[0],
    &[1, 0],
    &[1, 2],
    &[1, 3],
    &[2, 4],
    &[3, 5],
    &[4, 6],
    &[5, 7],
    &[1, 8],
    &[1, 9],
    &[8, 10],
    &[9, 11],
    &[10, 12],
    &[11, 13],
];

/// Segment lengths, widths and radii in body heights.
#[derive(Clone, Debug, PartialEq)]
pub struct Body {
    pub head_radius: f32,
    pub neck: f32,
    pub torso: f32,
    pub shoulder_half_width: f32,
    pub hip_half_width: f32,
    pub torso_half_depth: f32,
    pub torso_radius: f32,
    pub upper_arm: f32,
    pub forearm: f32,
    pub hand: f32,
    pub thigh: f32,
    pub shin: f32,
    pub foot: f32,
    pub upper_arm_radius: f32,
    pub forearm_radius: f32,
    pub hand_radius: f32,
    pub thigh_radius: f32,
    pub shin_radius: f32,
    pub foot_radius: f32,
}

impl Default for Body {
    fn default() -> Self {
        Body {
            head_radius: 0.068,
            neck: 0.092,
            torso: 0.30,
            shoulder_half_width: 0.105,
            hip_half_width: 0.07,
            torso_half_depth: 0.055,
            torso_radius: 0.03,
            upper_arm: 0.165,
            forearm: 0.145,
            hand: 0.05,
            thigh: 0.245,
            shin: 0.235,
            foot: 0.075,
            upper_arm_radius: 0.036,
            forearm_radius: 0.031,
            hand_radius: 0.034,
            thigh_radius: 0.046,
            shin_radius: 0.038,
            foot_radius: 0.027,
        }
    }
}

impl Body {
    /// The default build with every length and width scaled by up to +-`spread`.
    pub fn sample(rng: &mut Rng, spread: f32) -> Self {
        let mut b = Body::default();
        let mut s = |v: &mut f32| *v *= rng.range(1.0 - spread, 1.0 + spread);
        for v in [
            &mut b.head_radius,
            &mut b.neck,
            &mut b.torso,
            &mut b.shoulder_half_width,
            &mut b.hip_half_width,
            &mut b.torso_half_depth,
            &mut b.upper_arm,
            &mut b.forearm,
            &mut b.thigh,
            &mut b.shin,
            &mut b.upper_arm_radius,
            &mut b.forearm_radius,
            &mut b.hand_radius,
            &mut b.thigh_radius,
            &mut b.shin_radius,
        ] {
            s(v);
        }
        b
    }
}

/// Degrees of freedom of a pose; angles in degrees, position and scale in image units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Dof {
    /// Pelvis position, normalised image coordinates.
    X,
    Y,
    /// Body height as a fraction of the image side.
    Scale,
    /// Turn about the vertical axis (0 = facing the camera, 90 = seen from the person's left).
    Yaw,
    /// In-plane rotation of the whole figure.
    Roll,
    SpinePitch,
    SpineRoll,
    Twist,
    NeckPitch,
    NeckRoll,
    LeftShoulderFlex,
    LeftShoulderAbd,
    LeftShoulderRot,
    LeftElbow,
    RightShoulderFlex,
    RightShoulderAbd,
    RightShoulderRot,
    RightElbow,
    LeftHipFlex,
    LeftHipAbd,
    LeftHipRot,
    LeftKnee,
    RightHipFlex,
    RightHipAbd,
    RightHipRot,
    RightKnee,
}
pub const NUM_DOFS: usize = 26;

/// Range of each articulation DOF (from `Dof::SpinePitch` on) for random poses: roughly a
/// person's range of motion (flexion forward positive, abduction outward positive).
pub const ARTICULATION_RANGES: [(f32, f32); NUM_DOFS - 5] = [
    (-10.0, 35.0),  // spine pitch (forward lean)
    (-15.0, 15.0),  // spine roll
    (-35.0, 35.0),  // twist of the upper body
    (-20.0, 25.0),  // neck pitch
    (-20.0, 20.0),  // neck roll
    (-45.0, 175.0), // left shoulder flexion
    (0.0, 150.0),   // left shoulder abduction
    (-60.0, 60.0),  // left shoulder rotation
    (0.0, 145.0),   // left elbow
    (-45.0, 175.0), // right shoulder flexion
    (0.0, 150.0),   // right shoulder abduction
    (-60.0, 60.0),  // right shoulder rotation
    (0.0, 145.0),   // right elbow
    (-25.0, 100.0), // left hip flexion
    (0.0, 45.0),    // left hip abduction
    (-35.0, 35.0),  // left hip rotation
    (0.0, 125.0),   // left knee
    (-25.0, 100.0), // right hip flexion
    (0.0, 45.0),    // right hip abduction
    (-35.0, 35.0),  // right hip rotation
    (0.0, 125.0),   // right knee
];

/// A pose: the value of every DOF.
#[derive(Clone, Debug, PartialEq)]
pub struct Pose(pub [f32; NUM_DOFS]);

impl Pose {
    pub fn get(&self, d: Dof) -> f32 {
        self.0[d as usize]
    }

    pub fn set(&mut self, d: Dof, v: f32) {
        self.0[d as usize] = v;
    }

    /// Standing straight, facing the camera, centred, 80% of the image high.
    pub fn neutral() -> Self {
        let mut p = Pose([0.0; NUM_DOFS]);
        p.set(Dof::X, 0.5);
        p.set(Dof::Y, 0.52);
        p.set(Dof::Scale, 0.8);
        p.set(Dof::LeftShoulderAbd, 10.0);
        p.set(Dof::RightShoulderAbd, 10.0);
        p
    }

    /// Random articulation (uniform in `ARTICULATION_RANGES`, narrowed towards the middle by
    /// `amplitude` in (0, 1]), a random turn and roll; position and scale left neutral.
    pub fn random_articulation(rng: &mut Rng, amplitude: f32, yaw_range: f32) -> Self {
        let mut p = Pose::neutral();
        for (i, &(lo, hi)) in ARTICULATION_RANGES.iter().enumerate() {
            let mid = 0.5 * (lo + hi);
            let half = 0.5 * (hi - lo) * amplitude;
            p.0[5 + i] = rng.range(mid - half, mid + half);
        }
        p.set(Dof::Yaw, rng.range(-yaw_range, yaw_range));
        p.set(Dof::Roll, rng.range(-15.0, 15.0) * amplitude);
        p
    }

    /// Clamps the articulation to its ranges.
    pub fn clamp(&mut self) {
        for (i, &(lo, hi)) in ARTICULATION_RANGES.iter().enumerate() {
            self.0[5 + i] = self.0[5 + i].clamp(lo, hi);
        }
    }
}

pub type V3 = [f32; 3];

fn add(a: V3, b: V3) -> V3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

/// Row-major 3x3 rotation.
#[derive(Clone, Copy, Debug)]
struct Rot([[f32; 3]; 3]);

impl Rot {
    const I: Rot = Rot([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);

    /// Rotation about x by `deg`: positive turns +y towards +z (a forward lean).
    fn x(deg: f32) -> Rot {
        let (s, c) = deg.to_radians().sin_cos();
        Rot([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    }

    /// Rotation about y by `deg`: positive turns +z towards +x.
    fn y(deg: f32) -> Rot {
        let (s, c) = deg.to_radians().sin_cos();
        Rot([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    }

    /// Rotation about z by `deg`: positive turns +x towards +y.
    fn z(deg: f32) -> Rot {
        let (s, c) = deg.to_radians().sin_cos();
        Rot([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    }

    fn mul(self, o: Rot) -> Rot {
        let mut r = [[0.0; 3]; 3];
        for (i, row) in r.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = (0..3).map(|k| self.0[i][k] * o.0[k][j]).sum();
            }
        }
        Rot(r)
    }

    fn apply(self, v: V3) -> V3 {
        let m = self.0;
        [
            m[0][0] * v[0] + m[0][1] * v[1] + m[0][2] * v[2],
            m[1][0] * v[0] + m[1][1] * v[1] + m[1][2] * v[2],
            m[2][0] * v[0] + m[2][1] * v[1] + m[2][2] * v[2],
        ]
    }
}

/// One drawn part in image coordinates (normalised), with its depth for drawing order.
#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    /// Segment with round caps: `a`, `b` and the radius.
    Capsule { a: [f32; 2], b: [f32; 2], r: f32 },
    /// Convex polygon (counter-clockwise or clockwise) grown by a radius.
    Polygon { points: Vec<[f32; 2]>, r: f32 },
}

#[derive(Clone, Debug, PartialEq)]
pub struct PartShape {
    pub part: usize,
    pub shape: Shape,
    /// Larger is nearer the camera.
    pub depth: f32,
}

/// A posed figure projected onto the image: joints (normalised image coordinates) and parts.
#[derive(Clone, Debug, PartialEq)]
pub struct Projected {
    pub joints: [[f32; 2]; NUM_JOINTS],
    pub parts: Vec<PartShape>,
}

impl Projected {
    /// Bounding box of the drawn parts, `[x0, y0, x1, y1]`.
    pub fn bounds(&self) -> [f32; 4] {
        let mut b = [f32::MAX, f32::MAX, f32::MIN, f32::MIN];
        let mut grow = |p: [f32; 2], r: f32| {
            b[0] = b[0].min(p[0] - r);
            b[1] = b[1].min(p[1] - r);
            b[2] = b[2].max(p[0] + r);
            b[3] = b[3].max(p[1] + r);
        };
        for ps in &self.parts {
            match &ps.shape {
                Shape::Capsule { a, b, r } => {
                    grow(*a, *r);
                    grow(*b, *r);
                }
                Shape::Polygon { points, r } => points.iter().for_each(|p| grow(*p, *r)),
            }
        }
        b
    }
}

/// Forward kinematics and projection of `pose` for `body`.
pub fn project(body: &Body, pose: &Pose) -> Projected {
    let skeleton = Skeleton::of(body, pose);
    let camera = Camera::of(pose);
    let mut joints = [[0.0f32; 2]; NUM_JOINTS];
    let mut depth = [0.0f32; NUM_JOINTS];
    for j in 0..NUM_JOINTS {
        (joints[j], depth[j]) = camera.project(skeleton.joints[j]);
    }
    let parts = parts(body, &skeleton, &camera, &joints, &depth);
    Projected { joints, parts }
}

/// A vector `len` down the limb's own axis.
fn down(len: f32) -> V3 {
    [0.0, -len, 0.0]
}

/// The posed figure in 3D, in the body frame.
struct Skeleton {
    /// In the order of [`JOINTS`].
    joints: [V3; NUM_JOINTS],
    /// Left, right.
    hand_tip: [V3; 2],
    /// Left, right.
    toe: [V3; 2],
    /// The torso box's corners and the neck (its hull is taken after projection).
    torso: Vec<V3>,
}

impl Skeleton {
    fn of(body: &Body, pose: &Pose) -> Self {
        use Dof::*;
        let g = |d: Dof| pose.get(d);
        let spine = Rot::x(g(SpinePitch))
            .mul(Rot::z(-g(SpineRoll)))
            .mul(Rot::y(g(Twist)));
        let neck = spine.apply([0.0, body.torso, 0.0]);
        let head = add(
            neck,
            spine
                .mul(Rot::x(g(NeckPitch)))
                .mul(Rot::z(-g(NeckRoll)))
                .apply([0.0, body.neck, 0.0]),
        );
        let mut sk = Skeleton {
            joints: [[0.0f32; 3]; NUM_JOINTS],
            hand_tip: [[0.0f32; 3]; 2],
            toe: [[0.0f32; 3]; 2],
            torso: Vec::with_capacity(10),
        };
        sk.joints[0] = head;
        sk.joints[1] = neck;
        for side in 0..2 {
            sk.arm(body, pose, spine, neck, side);
            sk.leg(body, pose, side);
        }
        // Torso: a box between the shoulder line and the hip line.
        for &dz in &[-body.torso_half_depth, body.torso_half_depth] {
            for j in [2, 3] {
                sk.torso
                    .push(add(sk.joints[j], spine.apply([0.0, 0.0, dz])));
            }
            for j in [8, 9] {
                sk.torso.push(add(sk.joints[j], [0.0, 0.0, dz]));
            }
        }
        sk.torso.push(neck);
        sk
    }

    /// Shoulder, elbow, wrist and hand tip of `side` (0 left, 1 right).
    fn arm(&mut self, body: &Body, pose: &Pose, spine: Rot, neck: V3, side: usize) {
        use Dof::*;
        let g = |d: Dof| pose.get(d);
        let s = if side == 0 { 1.0 } else { -1.0 };
        let (flex, abd, rot, elbow) = [
            (
                LeftShoulderFlex,
                LeftShoulderAbd,
                LeftShoulderRot,
                LeftElbow,
            ),
            (
                RightShoulderFlex,
                RightShoulderAbd,
                RightShoulderRot,
                RightElbow,
            ),
        ][side];
        let shoulder = add(
            neck,
            spine.apply([s * body.shoulder_half_width, -0.03, 0.0]),
        );
        let upper = spine
            .mul(Rot::z(s * g(abd)))
            .mul(Rot::x(-g(flex)))
            .mul(Rot::y(s * g(rot)));
        let elbow_p = add(shoulder, upper.apply(down(body.upper_arm)));
        let fore = upper.mul(Rot::x(-g(elbow)));
        let wrist = add(elbow_p, fore.apply(down(body.forearm)));
        self.hand_tip[side] = add(wrist, fore.apply(down(body.hand)));
        self.joints[2 + side] = shoulder;
        self.joints[4 + side] = elbow_p;
        self.joints[6 + side] = wrist;
    }

    /// Hip, knee, ankle and toe of `side` (0 left, 1 right).
    fn leg(&mut self, body: &Body, pose: &Pose, side: usize) {
        use Dof::*;
        let g = |d: Dof| pose.get(d);
        let s = if side == 0 { 1.0 } else { -1.0 };
        let (flex, abd, rot, knee) = [
            (LeftHipFlex, LeftHipAbd, LeftHipRot, LeftKnee),
            (RightHipFlex, RightHipAbd, RightHipRot, RightKnee),
        ][side];
        let pelvis_rot = Rot::I;
        let hip = pelvis_rot.apply([s * body.hip_half_width, 0.0, 0.0]);
        let thigh = pelvis_rot
            .mul(Rot::z(s * g(abd)))
            .mul(Rot::x(-g(flex)))
            .mul(Rot::y(s * g(rot)));
        let knee_p = add(hip, thigh.apply(down(body.thigh)));
        let shin = thigh.mul(Rot::x(g(knee)));
        let ankle = add(knee_p, shin.apply(down(body.shin)));
        // The foot points forward, turned with the hip.
        self.toe[side] = add(
            ankle,
            Rot::y(s * g(rot)).apply([0.0, -0.15 * body.foot, body.foot]),
        );
        self.joints[8 + side] = hip;
        self.joints[10 + side] = knee_p;
        self.joints[12 + side] = ankle;
    }
}

/// The camera: turned by yaw, orthographic projection, in-plane roll, scale and place.
struct Camera {
    view: Rot,
    /// Sine and cosine of the roll.
    roll: (f32, f32),
    scale: f32,
    centre: (f32, f32),
}

impl Camera {
    fn of(pose: &Pose) -> Self {
        use Dof::*;
        let g = |d: Dof| pose.get(d);
        Camera {
            view: Rot::y(-g(Yaw)),
            roll: g(Roll).to_radians().sin_cos(),
            scale: g(Scale),
            centre: (g(X), g(Y)),
        }
    }

    /// Where `p` lands in the image, and its depth.
    fn project(&self, p: V3) -> ([f32; 2], f32) {
        let ((sr, cr), (cx, cy), scale) = (self.roll, self.centre, self.scale);
        let q = self.view.apply(p);
        let (u, v) = (q[0], -q[1]);
        (
            [
                cx + scale * (cr * u - sr * v),
                cy + scale * (sr * u + cr * v),
            ],
            q[2],
        )
    }
}

/// The drawn parts of `sk`, whose joints `camera` placed at `joints` and `depth`.
fn parts(
    body: &Body,
    sk: &Skeleton,
    camera: &Camera,
    joints: &[[f32; 2]; NUM_JOINTS],
    depth: &[f32; NUM_JOINTS],
) -> Vec<PartShape> {
    let scale = camera.scale;
    let mut parts = Vec::with_capacity(NUM_PARTS);
    parts.push(PartShape {
        part: 0,
        shape: Shape::Capsule {
            a: joints[0],
            b: joints[0],
            r: scale * body.head_radius,
        },
        depth: depth[0],
    });
    let hull_pts: Vec<([f32; 2], f32)> = sk.torso.iter().map(|&p| camera.project(p)).collect();
    parts.push(PartShape {
        part: 1,
        shape: Shape::Polygon {
            points: convex_hull(hull_pts.iter().map(|p| p.0).collect()),
            r: scale * body.torso_radius,
        },
        depth: hull_pts.iter().map(|p| p.1).sum::<f32>() / hull_pts.len() as f32,
    });
    let mut seg = |part: usize, a: ([f32; 2], f32), b: ([f32; 2], f32), r: f32| {
        parts.push(PartShape {
            part,
            shape: Shape::Capsule {
                a: a.0,
                b: b.0,
                r: scale * r,
            },
            depth: 0.5 * (a.1 + b.1),
        })
    };
    let jp = |j: usize| (joints[j], depth[j]);
    let (j3, hand_tip) = (&sk.joints, &sk.hand_tip);
    for side in 0..2 {
        seg(2 + side, jp(2 + side), jp(4 + side), body.upper_arm_radius);
        seg(4 + side, jp(4 + side), jp(6 + side), body.forearm_radius);
        let tip = camera.project(hand_tip[side]);
        // The hand is a blob at the end of the forearm.
        let mid = camera.project(add(
            j3[6 + side],
            [
                0.6 * (hand_tip[side][0] - j3[6 + side][0]),
                0.6 * (hand_tip[side][1] - j3[6 + side][1]),
                0.6 * (hand_tip[side][2] - j3[6 + side][2]),
            ],
        ));
        seg(6 + side, mid, tip, body.hand_radius);
        seg(8 + side, jp(8 + side), jp(10 + side), body.thigh_radius);
        seg(10 + side, jp(10 + side), jp(12 + side), body.shin_radius);
        seg(
            12 + side,
            jp(12 + side),
            camera.project(sk.toe[side]),
            body.foot_radius,
        );
    }
    parts
}

/// Convex hull (Andrew's monotone chain), counter-clockwise in a y-down frame.
fn convex_hull(mut pts: Vec<[f32; 2]>) -> Vec<[f32; 2]> {
    pts.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
    pts.dedup();
    if pts.len() < 3 {
        return pts;
    }
    let cross = |o: [f32; 2], a: [f32; 2], b: [f32; 2]| {
        (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
    };
    let mut hull: Vec<[f32; 2]> = Vec::with_capacity(2 * pts.len());
    for pass in 0..2 {
        let start = hull.len();
        let iter: Box<dyn Iterator<Item = &[f32; 2]>> = if pass == 0 {
            Box::new(pts.iter())
        } else {
            Box::new(pts.iter().rev())
        };
        for &p in iter {
            while hull.len() >= start + 2
                && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0
            {
                hull.pop();
            }
            hull.push(p);
        }
        hull.pop();
    }
    hull
}

/// Places a figure: a random scale in `scale_range` and a random position that keeps its
/// bounding box inside the image (or, with `overflow` > 0, lets up to that fraction of the
/// box leave it).
pub fn place(body: &Body, pose: &mut Pose, rng: &mut Rng, scale_range: (f32, f32), overflow: f32) {
    pose.set(Dof::Scale, rng.range(scale_range.0, scale_range.1));
    pose.set(Dof::X, 0.0);
    pose.set(Dof::Y, 0.0);
    let b = project(body, pose).bounds();
    let (w, h) = (b[2] - b[0], b[3] - b[1]);
    let axis = |lo: f32, hi: f32, size: f32, rng: &mut Rng| {
        let m = 0.01 - overflow * size;
        let (a, z) = (m - lo, 1.0 - m - hi);
        if a >= z {
            0.5 * (a + z)
        } else {
            rng.range(a, z)
        }
    };
    let x = axis(b[0], b[2], w, rng);
    let y = axis(b[1], b[3], h, rng);
    pose.set(Dof::X, x);
    pose.set(Dof::Y, y);
}

#[cfg(test)]
mod tests;
