//! The landmark label CSV parser (`LabelSet::parse`): any text gives rows of one consistent
//! width with finite, non-negative visible points, or an error naming the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stablekeypoints::eval::LabelSet;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("fuzz/labels.csv");
    match LabelSet::parse(&text, path) {
        Ok(set) => {
            assert!(!set.rows.is_empty());
            for row in &set.rows {
                assert_eq!(row.points.len(), set.num_landmarks);
                assert!(row.image.starts_with("fuzz") || row.image.is_absolute());
                for p in row.points.iter().flatten() {
                    assert!(p.iter().all(|v| v.is_finite() && *v >= 0.0), "{p:?}");
                }
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("fuzz/labels.csv"), "error does not name the file: {msg}");
        }
    }
});
