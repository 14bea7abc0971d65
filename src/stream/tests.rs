use super::*;

fn kp(id: usize, x: f32, y: f32, score: f32) -> Keypoint {
    Keypoint { id, x, y, score }
}

/// The keypoints an inference of frame `i` gives in these tests.
fn infer(i: u64) -> Vec<Keypoint> {
    vec![
        kp(0, 0.1 * i as f32, 0.5, 0.25),
        kp(1, 0.5, 0.05 * i as f32, 0.5),
    ]
}

fn settings(interval: u64, gap: GapPolicy, batch: usize) -> StreamSettings {
    StreamSettings {
        interval,
        gap,
        batch_size: batch,
        batch_timeout: None,
    }
}

/// Runs frames 0..lates.len() (late where `lates` says) through a scheduler, inferring
/// batches at once; returns (frame, keypoints' first x, origin) in output order.
fn run(s: &StreamSettings, lates: &[bool]) -> Vec<(u64, Option<f32>, Origin)> {
    let mut sch = Scheduler::<u64>::default();
    let now = Instant::now();
    let mut out = Vec::new();
    let take = |sch: &mut Scheduler<u64>, out: &mut Vec<_>| {
        let b = sch.take_batch();
        let k = b.to_infer().map(|&i| infer(i)).collect();
        out.extend(sch.complete(b, k, s));
    };
    for (i, &late) in lates.iter().enumerate() {
        let p = sch.push(i as u64, late, now, s);
        out.extend(p.ready);
        if p.run_batch {
            take(&mut sch, &mut out);
        }
    }
    if sch.has_pending() {
        take(&mut sch, &mut out);
    }
    out.into_iter()
        .map(|r| (r.frame, r.keypoints.map(|k| k[0].x), r.origin))
        .collect()
}

#[test]
fn schedule_infers_every_interval_and_retries_after_skips() {
    let mut s = Schedule::default();
    let mut pattern = Vec::new();
    for _ in 0..7 {
        let due = s.due(3);
        pattern.push(due);
        if due {
            s.inferred()
        } else {
            s.skipped()
        }
    }
    assert_eq!(pattern, [true, false, false, true, false, false, true]);
    // A late due frame is skipped; the next one is due again.
    let mut s = Schedule::default();
    s.inferred();
    s.skipped();
    assert!(s.due(2));
    s.skipped(); // late
    assert!(s.due(2));
    assert!(Schedule::default().due(0));
}

#[test]
fn hold_last_repeats_the_last_inference_and_none_gives_nothing() {
    use Origin::*;
    let x = |i: u64| Some(0.1 * i as f32);
    let held = run(&settings(3, GapPolicy::HoldLast, 1), &[false; 5]);
    assert_eq!(
        held,
        [
            (0, x(0), Inference),
            (1, x(0), Interval),
            (2, x(0), Interval),
            (3, x(3), Inference),
            (4, x(3), Interval)
        ]
    );
    let none = run(&settings(3, GapPolicy::None, 1), &[false; 4]);
    assert_eq!(
        none,
        [
            (0, x(0), Inference),
            (1, None, Interval),
            (2, None, Interval),
            (3, x(3), Inference)
        ]
    );
}

#[test]
fn late_frames_carry_the_last_keypoints_under_every_policy() {
    use Origin::*;
    for gap in [GapPolicy::None, GapPolicy::HoldLast] {
        // Frame 1 is due (interval 1) but late; frame 0 late too: nothing to hold yet.
        let out = run(&settings(1, gap, 1), &[true, false, true, false]);
        assert_eq!(
            out,
            [
                (0, None, Late),
                (1, Some(0.1), Inference),
                (2, Some(0.1), Late),
                (3, Some(0.3), Inference)
            ],
            "{gap:?}"
        );
    }
}

#[test]
fn batches_give_the_results_of_single_frames_in_order() {
    for (interval, gap) in [
        (1, GapPolicy::HoldLast),
        (3, GapPolicy::None),
        (2, GapPolicy::HoldLast),
    ] {
        let lates = [
            false, false, true, false, false, false, false, true, false, false,
        ];
        let one = run(&settings(interval, gap, 1), &lates);
        let four = run(&settings(interval, gap, 4), &lates);
        assert_eq!(one, four, "interval {interval} {gap:?}");
    }
}

#[test]
fn a_batch_runs_when_full_or_when_a_frame_arrives_after_the_timeout() {
    let s = settings(1, GapPolicy::HoldLast, 3);
    let t0 = Instant::now();
    let mut sch = Scheduler::<u64>::default();
    assert!(!sch.push(0, false, t0, &s).run_batch);
    assert!(!sch.push(1, false, t0, &s).run_batch);
    let p = sch.push(2, false, t0, &s);
    assert!(p.run_batch && p.ready.is_empty());
    let b = sch.take_batch();
    assert_eq!(b.to_infer().copied().collect::<Vec<_>>(), [0, 1, 2]);
    // Frames behind the batch (not due) wait in it without being inferred.
    let s = StreamSettings {
        interval: 2,
        batch_timeout: Some(Duration::from_millis(50)),
        ..s
    };
    let mut sch = Scheduler::<u64>::default();
    assert!(!sch.push(0, false, t0, &s).run_batch);
    let p = sch.push(1, false, t0 + Duration::from_millis(49), &s);
    assert!(!p.run_batch && p.ready.is_empty());
    assert!(
        sch.push(2, false, t0 + Duration::from_millis(50), &s)
            .run_batch
    );
    let b = sch.take_batch();
    assert_eq!(
        (b.num_infer(), b.to_infer().copied().collect::<Vec<_>>()),
        (2, vec![0, 2])
    );
    let k = vec![infer(0), infer(2)];
    let out = sch.complete(b, k, &s);
    let origins: Vec<Origin> = out.iter().map(|r| r.origin).collect();
    assert_eq!(
        origins,
        [Origin::Inference, Origin::Interval, Origin::Inference]
    );
    assert_eq!(out[1].keypoints, Some(infer(0)));
    assert!(!sch.has_pending());
}

#[test]
fn verdicts_count_interval_and_late_skips() {
    let s = settings(2, GapPolicy::HoldLast, 1);
    let mut sch = Scheduler::<u64>::default();
    let now = Instant::now();
    let mut verdicts = Vec::new();
    for (i, late) in [false, false, true, false].into_iter().enumerate() {
        let p = sch.push(i as u64, late, now, &s);
        verdicts.push(p.verdict);
        if p.run_batch {
            let b = sch.take_batch();
            let k = b.to_infer().map(|&i| infer(i)).collect();
            sch.complete(b, k, &s);
        }
    }
    use Verdict::*;
    assert_eq!(verdicts, [Infer, Interval, Late, Infer]);
}

#[test]
fn flush_drops_queued_frames_and_the_next_frame_is_inferred() {
    let s = settings(3, GapPolicy::HoldLast, 4);
    let mut sch = Scheduler::<u64>::default();
    let now = Instant::now();
    sch.push(0, false, now, &s);
    sch.push(1, false, now, &s);
    sch.flush();
    assert!(!sch.has_pending());
    let p = sch.push(10, false, now, &s);
    assert_eq!(p.verdict, Verdict::Infer);
    let b = sch.take_batch();
    let out = sch.complete(b, vec![infer(10)], &s);
    assert_eq!(out[0].index, 2, "indices go on across a flush");
    // Nothing of before the flush is held.
    let mut sch = Scheduler::<u64>::default();
    let one = settings(2, GapPolicy::HoldLast, 1);
    let b = {
        sch.push(0, false, now, &one);
        sch.take_batch()
    };
    sch.complete(b, vec![infer(0)], &one);
    sch.flush();
    let late = sch.push(1, true, now, &one);
    assert_eq!(late.ready[0].keypoints, None);
}

/// Frames through a hold-last scheduler (interval 3), then an interpolator.
#[test]
fn interpolation_puts_held_frames_on_the_line_between_inferences() {
    let s = settings(3, GapPolicy::HoldLast, 1);
    let resolved = {
        let mut sch = Scheduler::<u64>::default();
        let now = Instant::now();
        let mut out = Vec::new();
        for i in 0..5 {
            let p = sch.push(i, false, now, &s);
            out.extend(p.ready);
            if p.run_batch {
                let b = sch.take_batch();
                let k = b.to_infer().map(|&i| infer(i)).collect();
                out.extend(sch.complete(b, k, &s));
            }
        }
        out
    };
    let mut it = Interpolator::default();
    let mut out = Vec::new();
    let mut waiting = Vec::new();
    for r in resolved {
        out.extend(it.push(Tracked {
            frame: r.frame,
            keypoints: r.keypoints,
            origin: Some(r.origin),
        }));
        waiting.push(it.held());
    }
    assert_eq!(waiting, [0, 1, 2, 0, 1]);
    out.extend(it.drain());
    let frames: Vec<u64> = out.iter().map(|t| t.frame).collect();
    assert_eq!(frames, [0, 1, 2, 3, 4], "order kept");
    let (a, b) = (infer(0), infer(3));
    for (i, t) in [(1, 1.0 / 3.0), (2, 2.0 / 3.0)] {
        let k = out[i].keypoints.as_ref().unwrap();
        assert_eq!(out[i].origin, Some(Origin::Interpolated));
        for j in 0..2 {
            assert!((k[j].x - (a[j].x + (b[j].x - a[j].x) * t)).abs() < 1e-6);
            assert!((k[j].y - (a[j].y + (b[j].y - a[j].y) * t)).abs() < 1e-6);
        }
    }
    // Released at the end with the last inference's keypoints, still marked held.
    assert_eq!(out[4].keypoints, Some(infer(3)));
    assert_eq!(out[4].origin, Some(Origin::Interval));
}

#[test]
fn late_frames_and_frames_without_keypoints_release_the_held_ones() {
    let t = |frame, k: Option<u64>, origin| Tracked {
        frame,
        keypoints: k.map(infer),
        origin: Some(origin),
    };
    let mut it = Interpolator::default();
    assert_eq!(it.push(t(0, Some(0), Origin::Inference)).len(), 1);
    assert!(it.push(t(1, Some(0), Origin::Interval)).is_empty());
    let out = it.push(t(2, Some(0), Origin::Late));
    assert_eq!(out.iter().map(|t| t.frame).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(out[0].keypoints, Some(infer(0)));
    assert!(it.push(t(3, Some(0), Origin::Interval)).is_empty());
    let out = it.push(Tracked {
        frame: 4,
        keypoints: None,
        origin: None,
    });
    assert_eq!(out.len(), 2);
    // Nothing inferred yet (or after a flush): held frames are not held.
    let mut it = Interpolator::default();
    assert_eq!(it.push(t(0, Some(0), Origin::Interval)).len(), 1);
    it.push(t(1, Some(1), Origin::Inference));
    it.flush();
    assert_eq!(it.push(t(2, Some(1), Origin::Interval)).len(), 1);
}

#[test]
fn latency_of_batches_and_look_ahead() {
    let ms = Duration::from_millis;
    let frame = Some(ms(40));
    assert_eq!(inference_latency(ms(7), 1, 3, None, frame), ms(7));
    // A batch of 4 waits 3 frames (interval 1), or the timeout plus one frame.
    assert_eq!(inference_latency(ms(7), 4, 1, None, frame), ms(28 + 120));
    assert_eq!(
        inference_latency(ms(7), 4, 1, Some(ms(50)), frame),
        ms(28 + 90)
    );
    assert_eq!(
        inference_latency(ms(7), 4, 2, Some(ms(500)), frame),
        ms(28 + 240)
    );
    assert_eq!(
        inference_latency(ms(7), 4, 1, Some(ms(50)), None),
        ms(28 + 50)
    );
    assert_eq!(interpolation_latency(4, frame), ms(120));
    assert_eq!(interpolation_latency(1, frame), Duration::ZERO);
    // Absurd values saturate instead of overflowing.
    let hour = Some(Duration::from_secs(3600));
    assert!(interpolation_latency(u64::MAX, hour) >= Duration::from_secs(3600 * 1000));
    assert!(inference_latency(Duration::MAX, 64, u64::MAX, None, hour) == Duration::MAX);
}

#[test]
fn origins_round_trip_their_names() {
    for o in [
        Origin::Inference,
        Origin::Interval,
        Origin::Late,
        Origin::Interpolated,
    ] {
        assert_eq!(Origin::parse(o.as_str()), Some(o));
        assert_eq!(o.inferred(), o != Origin::Inference);
    }
    assert_eq!(Origin::parse("held"), None);
}
