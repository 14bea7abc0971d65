//! Random streams: every random choice of training is a pure function of
//! `(seed, stream tag, index)`, so a resumed run continues exactly like an uninterrupted one.

use crate::ops::rng::{mix64, Rng};

/// Random streams (tags of [`stream`]).
pub(super) const STREAM_INIT: u64 = 1;
pub(super) const STREAM_ORDER: u64 = 2;
pub(super) const STREAM_ITER: u64 = 3;
pub(super) const STREAM_VOTE_ORDER: u64 = 4;
pub(super) const STREAM_VOTE: u64 = 5;

/// Independent generator for `(seed, tag, index)`.
pub(super) fn stream(seed: u64, tag: u64, index: u64) -> Rng {
    Rng::new(mix64(mix64(mix64(seed) ^ tag) ^ index))
}

/// Item `i` of an endless sequence of seeded shuffles of `0..n` (one permutation per epoch,
/// like a shuffling data loader).
pub(super) fn shuffled_index(seed: u64, tag: u64, i: u64, n: usize) -> usize {
    let n64 = n as u64;
    let mut rng = stream(seed, tag, i / n64);
    let mut perm: Vec<usize> = (0..n).collect();
    for j in (1..n).rev() {
        perm.swap(j, rng.below(j + 1));
    }
    perm[(i % n64) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_independent_and_pure() {
        let a: Vec<u64> = (0..4)
            .map(|i| stream(7, STREAM_ITER, i).next_u64())
            .collect();
        let b: Vec<u64> = (0..4)
            .map(|i| stream(7, STREAM_ITER, i).next_u64())
            .collect();
        assert_eq!(a, b);
        let mut all: Vec<u64> = a.clone();
        all.push(stream(7, STREAM_VOTE, 0).next_u64());
        all.push(stream(8, STREAM_ITER, 0).next_u64());
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 6);
    }

    #[test]
    fn shuffled_index_visits_each_image_once_per_epoch() {
        for n in [1, 2, 7] {
            for epoch in 0..3u64 {
                let mut seen: Vec<usize> = (0..n as u64)
                    .map(|i| shuffled_index(3, STREAM_ORDER, epoch * n as u64 + i, n))
                    .collect();
                seen.sort();
                assert_eq!(seen, (0..n).collect::<Vec<_>>());
            }
        }
        // Different epochs are shuffled differently (for a large enough set).
        let e0: Vec<usize> = (0..20)
            .map(|i| shuffled_index(3, STREAM_ORDER, i, 20))
            .collect();
        let e1: Vec<usize> = (20..40)
            .map(|i| shuffled_index(3, STREAM_ORDER, i, 20))
            .collect();
        assert_ne!(e0, e1);
    }
}
