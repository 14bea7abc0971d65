//! Time and FLOPs per stage of a detection, recorded by the detector (or the student)
//! itself when asked, so that `stablekeypoints bench` times the code that runs.

use crate::ops::flops;
use std::time::{Duration, Instant};

/// A stage of a detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Frames or regions squared into model inputs.
    Preprocess,
    /// The VAE encoder.
    VaeEncode,
    /// The noise and the UNet up to its early exit, without the map recording.
    UnetToExit,
    /// The selected tokens' attention maps, recorded inside the UNet.
    MapRecording,
    /// Test-time augmentation: the warps, and the maps upsampled and warped back.
    Augmentation,
    /// A student's network.
    Network,
    /// Maps to keypoints: upsampling, peaks, mapping back to the frame.
    Extraction,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Preprocess,
        Stage::VaeEncode,
        Stage::UnetToExit,
        Stage::MapRecording,
        Stage::Augmentation,
        Stage::Network,
        Stage::Extraction,
    ];

    /// The name `bench` prints.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Preprocess => "preprocess",
            Stage::VaeEncode => "vae_encode",
            Stage::UnetToExit => "unet_to_exit",
            Stage::MapRecording => "map_recording",
            Stage::Augmentation => "augmentation",
            Stage::Network => "network",
            Stage::Extraction => "extraction",
        }
    }
}

/// Time and FLOPs (convolutions and matrix products, see [`crate::ops::flops`]) spent per
/// stage.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StageTimes {
    spent: [(Duration, u64); Stage::ALL.len()],
}

impl StageTimes {
    pub fn time(&self, stage: Stage) -> Duration {
        self.spent[stage as usize].0
    }

    pub fn flops(&self, stage: Stage) -> u64 {
        self.spent[stage as usize].1
    }

    fn add(&mut self, stage: Stage, time: Duration, flops: u64) {
        let s = &mut self.spent[stage as usize];
        s.0 += time;
        s.1 = s.1.wrapping_add(flops);
    }

    /// Moves `time` and `flops` from stage `from` to stage `to` (a part timed inside it).
    fn carve(&mut self, from: Stage, to: Stage, time: Duration, flops: u64) {
        let f = &mut self.spent[from as usize];
        f.0 = f.0.saturating_sub(time);
        f.1 = f.1.saturating_sub(flops);
        self.add(to, time, flops);
    }
}

/// Stage times being recorded: each lap adds the time since the previous one, and the
/// FLOPs this thread counted since, to its stage.
#[derive(Debug)]
pub(crate) struct Laps {
    pub times: StageTimes,
    last: Instant,
}

impl Laps {
    pub fn new() -> Self {
        Self {
            times: StageTimes::default(),
            last: Instant::now(),
        }
    }

    /// Starts a detection: what came before it counts nowhere.
    pub fn restart(&mut self) {
        flops::take();
        self.last = Instant::now();
    }

    pub fn lap(&mut self, stage: Stage) {
        self.lap_counting(stage, None);
    }

    /// A lap of `stage` with `flops` in place of those counted (an architecture's count
    /// for kernels that do not count theirs), if given.
    pub fn lap_counting(&mut self, stage: Stage, flops: Option<u64>) {
        let now = Instant::now();
        let counted = flops::take();
        self.times
            .add(stage, now - self.last, flops.unwrap_or(counted));
        self.last = now;
    }

    /// A lap of `stage` of which `part` (`time`, `flops`) was measured on its own.
    pub fn lap_with_part(&mut self, stage: Stage, part: Stage, time: Duration, flops: u64) {
        self.lap(stage);
        self.times.carve(stage, part, time, flops);
    }
}
