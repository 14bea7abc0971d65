use super::*;

#[test]
fn neutral_pose_matches_hand_computed_joints() {
    let b = Body::default();
    let p = Pose::neutral();
    let pr = project(&b, &p);
    let (cx, cy, s) = (0.5, 0.52, 0.8);
    let close = |a: [f32; 2], e: [f32; 2]| (a[0] - e[0]).abs() < 1e-5 && (a[1] - e[1]).abs() < 1e-5;
    // Pelvis at (cx, cy); the torso straight up; the neck above it.
    assert!(
        close(pr.joints[1], [cx, cy - s * b.torso]),
        "{:?}",
        pr.joints[1]
    );
    assert!(close(pr.joints[0], [cx, cy - s * (b.torso + b.neck)]));
    // Facing the camera the person's left is on the image's right.
    assert!(close(pr.joints[8], [cx + s * b.hip_half_width, cy]));
    assert!(close(pr.joints[9], [cx - s * b.hip_half_width, cy]));
    assert!(close(
        pr.joints[10],
        [cx + s * b.hip_half_width, cy + s * b.thigh]
    ));
    assert!(close(
        pr.joints[12],
        [cx + s * b.hip_half_width, cy + s * (b.thigh + b.shin)]
    ));
    // Arms 10 degrees out from the shoulders.
    let sh = [cx + s * b.shoulder_half_width, cy - s * (b.torso - 0.03)];
    assert!(close(pr.joints[2], sh));
    let (sn, cs) = 10f32.to_radians().sin_cos();
    assert!(close(
        pr.joints[4],
        [sh[0] + s * b.upper_arm * sn, sh[1] + s * b.upper_arm * cs]
    ));
}

#[test]
fn joint_angles_bend_the_way_a_person_does() {
    let b = Body::default();
    let mut p = Pose::neutral();
    // Seen from the person's left (yaw 90), the person faces the image's left.
    p.set(Dof::Yaw, 90.0);
    p.set(Dof::LeftShoulderAbd, 0.0);
    p.set(Dof::LeftElbow, 90.0);
    p.set(Dof::LeftKnee, 90.0);
    p.set(Dof::LeftHipFlex, 0.0);
    let pr = project(&b, &p);
    let s = 0.8;
    // A bent elbow brings the wrist forward, a bent knee takes the ankle backwards.
    assert!(pr.joints[6][0] - pr.joints[4][0] < -0.99 * s * b.forearm);
    assert!(pr.joints[12][0] - pr.joints[10][0] > 0.99 * s * b.shin);
    // A raised arm (flexion 90) points forward; abduction 90 points it sideways, which
    // this view sees end-on.
    let mut q = p.clone();
    q.set(Dof::LeftShoulderFlex, 90.0);
    let raised = project(&b, &q).joints;
    assert!(raised[4][0] - raised[2][0] < -0.99 * s * b.upper_arm);
    q.set(Dof::LeftShoulderFlex, 0.0);
    q.set(Dof::LeftShoulderAbd, 90.0);
    let side = project(&b, &q).joints;
    assert!((side[4][0] - side[2][0]).abs() < 1e-4 && (side[4][1] - side[2][1]).abs() < 1e-4);
}

#[test]
fn placement_keeps_the_figure_in_the_image() {
    let mut rng = Rng::new(3);
    for _ in 0..200 {
        let b = Body::sample(&mut rng, 0.06);
        let mut p = Pose::random_articulation(&mut rng, 1.0, 180.0);
        place(&b, &mut p, &mut rng, (0.5, 0.9), 0.0);
        let bb = project(&b, &p).bounds();
        if bb[2] - bb[0] < 0.98 && bb[3] - bb[1] < 0.98 {
            assert!(
                bb[0] >= 0.0 && bb[1] >= 0.0 && bb[2] <= 1.0 && bb[3] <= 1.0,
                "{bb:?}"
            );
        }
    }
}
