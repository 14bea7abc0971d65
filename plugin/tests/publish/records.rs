//! Harness tests: the output buffer is the input buffer with its bytes and metadata, no
//! record without metadata, records equal to the metadata field by field, pixels in the size of
//! the element's caps.

use super::*;

#[test]
fn passthrough_same_buffer_one_record_per_frame_with_metadata() {
    let path = scratch().join("harness.jsonl");
    let mut h = harness(
        &format!("location={}", path.display()),
        "video/x-raw,format=RGB,width=100,height=50,framerate=25/1",
    );
    let metas = [meta(0, false), meta(2, true)];
    let inputs = [
        buffer(0, Some(&metas[0])),
        buffer(1, None),
        buffer(2, Some(&metas[1])),
    ];
    for b in &inputs {
        let ptr = b.as_ptr();
        h.push(b.clone()).unwrap();
        let out = h.pull().unwrap();
        assert_eq!(out.as_ptr(), ptr, "the very same buffer leaves (no copy)");
        assert_eq!(
            out.map_readable().unwrap().as_slice(),
            b.map_readable().unwrap().as_slice()
        );
        assert_eq!(
            FrameKeypoints::from_buffer(&out).map(|r| r.unwrap().keypoints),
            FrameKeypoints::from_buffer(b).map(|r| r.unwrap().keypoints)
        );
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let recs = lines(&path);
    assert_eq!(recs.len(), 2, "no record for the buffer without metadata");
    assert_record_is(&recs[0], &metas[0], 0, 100, 50);
    assert_record_is(&recs[1], &metas[1], 2, 100, 50);
    assert_eq!(recs[1].pts, Some(80_000_000));
    assert_eq!(recs[1].duration, Some(40_000_000));
    assert_eq!(recs[1].running_time, Some(80_000_000));
    assert_eq!(h.element().unwrap().property::<u64>("records-sent"), 2);
    assert_eq!(h.element().unwrap().property::<u64>("records-dropped"), 0);
}

#[test]
fn pixels_refer_to_the_frame_at_the_element() {
    // After a scaler: the normalised positions stay, the pixels follow the caps.
    let m = meta(1, false);
    let frame = |m: &FrameKeypoints| {
        let mut b = gst::Buffer::from_mut_slice(vec![90u8; 100 * 50 * 3]);
        {
            let b = b.get_mut().unwrap();
            b.set_pts(gst::ClockTime::ZERO);
            m.attach(b);
        }
        b
    };
    let path = scratch().join("scaled.jsonl");
    init();
    let mut h = gst_check::Harness::new_parse(&format!(
        "videoscale ! capsfilter caps=video/x-raw,width=200,height=150 \
         ! stablekeypointspublish location={}",
        path.display()
    ));
    h.set_src_caps_str("video/x-raw,format=RGB,width=100,height=50,framerate=25/1");
    h.push(frame(&m)).unwrap();
    assert!(h.push_event(gst::event::Eos::new()));
    assert_record_is(&lines(&path)[0], &m, 0, 200, 150);
    // Caps of another size without a scaler (a crop or border changed the frame): no
    // record, rather than one at the wrong place.
    let path = scratch().join("other-size.jsonl");
    let mut h = harness(
        &format!("location={}", path.display()),
        "video/x-raw,format=RGB,width=200,height=150,framerate=25/1",
    );
    h.push(buffer(0, Some(&m))).unwrap();
    assert!(h.push_event(gst::event::Eos::new()));
    assert!(lines(&path).is_empty());
    // Without video caps: the size the keypoints were computed on.
    let path = scratch().join("any-caps.jsonl");
    let mut h = harness(&format!("location={}", path.display()), "application/x-foo");
    h.push(buffer(0, Some(&m))).unwrap();
    assert!(h.push_event(gst::event::Eos::new()));
    assert_record_is(&lines(&path)[0], &m, 0, 100, 50);
}
