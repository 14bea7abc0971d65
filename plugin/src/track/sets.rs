//! Tracking every set of keypoints of a frame on its own: the whole frame's and, with
//! top-down inference, each object's, keyed by the object's id. Each key has its own
//! [`Interpolator`] (frames wait for the next inference and are interpolated per object) and
//! its own [`KeypointSmoother`]; a frame leaves once every key has released it, in order.

use stablekeypoints::stream::{Interpolator, Origin, Tracked};
use stablekeypoints::track::{KeypointSmoother, OneEuroParams};
use stablekeypoints::Keypoint;

use std::collections::{BTreeMap, VecDeque};

use crate::meta::FrameKeypoints;

/// Whose keypoints a set is: the whole frame's, or an object's (by its id, stable across
/// frames).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    Frame,
    Object(u64),
}

impl Key {
    pub fn of(f: &FrameKeypoints) -> Self {
        f.object.as_ref().map_or(Key::Frame, |o| Key::Object(o.id))
    }

    /// The keys of a frame's sets; `None` for a set whose key an earlier set of the frame
    /// already has (it is passed on as it is).
    pub fn of_all(sets: &[FrameKeypoints]) -> Vec<Option<Self>> {
        let mut seen = Vec::with_capacity(sets.len());
        sets.iter()
            .map(|f| {
                let k = Self::of(f);
                (!seen.contains(&k)).then(|| {
                    seen.push(k);
                    k
                })
            })
            .collect()
    }
}

/// One set of a frame as it comes in: its key, keypoints and origin.
pub struct Set {
    pub key: Option<Key>,
    pub keypoints: Vec<Keypoint>,
    pub origin: Option<Origin>,
}

/// The keypoints and origin a set leaves with.
pub type Resolved = (Vec<Keypoint>, Option<Origin>);

/// A complete frame: what each of its sets leaves with, in the order they came.
pub struct Done<F> {
    pub frame: F,
    pub sets: Vec<Resolved>,
}

struct Waiting<F> {
    seq: u64,
    frame: F,
    sets: Vec<Option<Resolved>>,
}

/// Where the interpolator's frames point: a frame's sequence number and the set's place in
/// it ([`ABSENT`] for the frames a key is missing from).
type Slot = (u64, usize);
const ABSENT: usize = usize::MAX;

#[derive(Default)]
struct KeyState {
    interpolator: Interpolator<Slot>,
    /// The last frame (sequence number) that had this key.
    seen: u64,
}

/// The `interpolate` gap policy for every set of keypoints of a frame, and the hold-last
/// one (frames pass as they come).
pub struct Sets<F> {
    keys: BTreeMap<Key, KeyState>,
    waiting: VecDeque<Waiting<F>>,
    next: u64,
}

impl<F> Default for Sets<F> {
    fn default() -> Self {
        Self {
            keys: BTreeMap::new(),
            waiting: VecDeque::new(),
            next: 0,
        }
    }
}

impl<F> Sets<F> {
    /// One frame in, with its `sets`; the frames complete now out, in order. With
    /// `interpolate`, each key's frames between two inferences wait for the second and get
    /// the keypoints on the line between the two, as [`Interpolator`] places them; a key
    /// missing from a frame releases its waiting frames with the keypoints they carry (an
    /// object that leaves is held, not interpolated) and an object's starts afresh when it
    /// comes back. Objects missing for more than `forget_after` frames are forgotten.
    pub fn push(
        &mut self,
        frame: F,
        sets: Vec<Set>,
        interpolate: bool,
        forget_after: u64,
    ) -> Vec<Done<F>> {
        let seq = self.next;
        self.next += 1;
        self.waiting.push_back(Waiting {
            seq,
            frame,
            sets: vec![None; sets.len()],
        });
        if !interpolate {
            // Frames held before the policy changed leave first.
            self.release_all();
        }
        let origin = sets.iter().find_map(|s| s.origin);
        let mut released = Vec::new();
        for (i, s) in sets.into_iter().enumerate() {
            let Set {
                key,
                keypoints,
                origin,
            } = s;
            match key {
                Some(key) if interpolate => {
                    let st = self.keys.entry(key).or_default();
                    st.seen = seq;
                    released.extend(st.interpolator.push(Tracked {
                        frame: (seq, i),
                        keypoints: Some(keypoints),
                        origin,
                    }));
                }
                key => {
                    if let Some(key) = key {
                        self.keys.entry(key).or_default().seen = seq;
                    }
                    released.push(Tracked {
                        frame: (seq, i),
                        keypoints: Some(keypoints),
                        origin,
                    });
                }
            }
        }
        if interpolate {
            for (key, st) in &mut self.keys {
                if st.seen == seq {
                    continue;
                }
                released.extend(st.interpolator.push(Tracked {
                    frame: (seq, ABSENT),
                    keypoints: None,
                    origin,
                }));
                if matches!(key, Key::Object(_)) {
                    st.interpolator.flush();
                }
            }
        }
        self.keys.retain(|k, st| {
            *k == Key::Frame || st.interpolator.held() > 0 || seq - st.seen <= forget_after
        });
        self.resolve(released);
        self.complete()
    }

    /// The waiting frames, with the keypoints they carry (no later inference is coming).
    pub fn drain(&mut self) -> Vec<Done<F>> {
        self.release_all();
        self.complete()
    }

    /// A new stream: waiting frames are dropped, nothing is interpolated across.
    pub fn flush(&mut self) {
        *self = Self::default();
    }

    fn release_all(&mut self) {
        let released: Vec<_> = self
            .keys
            .values_mut()
            .flat_map(|st| st.interpolator.drain())
            .collect();
        self.resolve(released);
    }

    fn resolve(&mut self, released: Vec<Tracked<Slot>>) {
        let Some(first) = self.waiting.front().map(|w| w.seq) else {
            return;
        };
        for t in released {
            let (seq, i) = t.frame;
            if i == ABSENT || seq < first {
                continue;
            }
            if let Some(w) = self.waiting.get_mut((seq - first) as usize) {
                w.sets[i] = Some((t.keypoints.unwrap_or_default(), t.origin));
            }
        }
    }

    fn complete(&mut self) -> Vec<Done<F>> {
        let mut out = Vec::new();
        while self
            .waiting
            .front()
            .is_some_and(|w| w.sets.iter().all(Option::is_some))
        {
            let w = self.waiting.pop_front().expect("checked");
            out.push(Done {
                frame: w.frame,
                sets: w.sets.into_iter().map(|s| s.expect("checked")).collect(),
            });
        }
        out
    }
}

/// One-Euro smoothers per key, as the frames leave.
#[derive(Default)]
pub struct Smoothers {
    keys: BTreeMap<Key, (KeypointSmoother, u64)>,
    /// Frames smoothed so far.
    frames: u64,
}

impl Smoothers {
    /// Smooths the keypoints of `key` at time `t` (seconds).
    pub fn smooth(&mut self, key: Key, keypoints: &mut [Keypoint], t: f64, p: &OneEuroParams) {
        let (s, seen) = self.keys.entry(key).or_default();
        *seen = self.frames;
        s.smooth(keypoints, t, p);
    }

    /// One frame has left: objects not smoothed for more than `forget_after` frames start
    /// afresh.
    pub fn frame_done(&mut self, forget_after: u64) {
        let now = self.frames;
        self.keys
            .retain(|k, (_, seen)| *k == Key::Frame || now - *seen <= forget_after);
        self.frames += 1;
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kp(x: f32) -> Vec<Keypoint> {
        vec![Keypoint {
            id: 0,
            x,
            y: 0.5,
            score: 1.0,
        }]
    }

    fn set(key: Key, x: f32, origin: Origin) -> Set {
        Set {
            key: Some(key),
            keypoints: kp(x),
            origin: Some(origin),
        }
    }

    fn xs(d: &Done<u32>) -> Vec<(f32, Option<Origin>)> {
        d.sets.iter().map(|(k, o)| (k[0].x, *o)).collect()
    }

    #[test]
    fn each_object_is_interpolated_on_its_own_and_one_that_leaves_is_held() {
        use Origin::*;
        let (a, b, c) = (Key::Object(1), Key::Object(2), Key::Object(3));
        let mut s: Sets<u32> = Sets::default();
        assert_eq!(
            s.push(
                0,
                vec![set(a, 0.0, Inference), set(b, 0.5, Inference)],
                true,
                10
            )
            .len(),
            1
        );
        // Held: a and b between two inferences; c appears on a held frame.
        assert!(s
            .push(
                1,
                vec![set(a, 0.0, Interval), set(b, 0.5, Interval)],
                true,
                10
            )
            .is_empty());
        assert!(s
            .push(
                2,
                vec![
                    set(a, 0.0, Interval),
                    set(b, 0.5, Interval),
                    set(c, 0.9, Interval)
                ],
                true,
                10
            )
            .is_empty());
        // b has left by the next inference: its frames are held, not interpolated.
        let out = s.push(
            3,
            vec![set(a, 0.3, Inference), set(c, 0.6, Inference)],
            true,
            10,
        );
        assert_eq!(out.iter().map(|d| d.frame).collect::<Vec<_>>(), [1, 2, 3]);
        let close = |got: Vec<(f32, Option<Origin>)>, want: &[(f32, Origin)]| {
            assert_eq!(got.len(), want.len());
            for ((x, o), (wx, wo)) in got.iter().zip(want) {
                assert!(
                    (x - wx).abs() < 1e-6 && *o == Some(*wo),
                    "{got:?} vs {want:?}"
                );
            }
        };
        close(xs(&out[0]), &[(0.1, Interpolated), (0.5, Interval)]);
        // c had no inference before: it keeps what it carries.
        close(
            xs(&out[1]),
            &[(0.2, Interpolated), (0.5, Interval), (0.9, Interval)],
        );
        close(xs(&out[2]), &[(0.3, Inference), (0.6, Inference)]);
    }

    #[test]
    fn objects_missing_long_enough_are_forgotten_but_not_the_frame() {
        let mut s: Sets<u32> = Sets::default();
        s.push(
            0,
            vec![set(Key::Object(7), 0.1, Origin::Inference)],
            true,
            2,
        );
        s.push(1, vec![set(Key::Frame, 0.1, Origin::Inference)], true, 2);
        for i in 2..6 {
            assert_eq!(s.push(i, Vec::new(), true, 2).len(), 1);
        }
        assert_eq!(s.keys.keys().copied().collect::<Vec<_>>(), [Key::Frame]);
    }
}
