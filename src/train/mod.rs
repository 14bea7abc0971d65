//! Unsupervised training of the token embeddings (method.md section 3).
//!
//! Each optimiser step accumulates the gradient of `batch_size` images. Per image, an
//! untracked batch-2 pass gives all N maps of the image and of a random affine warp of it;
//! tokens are selected on host copies (Gaussian-KL candidates, furthest point sampling on
//! the warped maps) and the sharpening and equivariance MSEs are differentiated with respect
//! to the K selected maps. Then each of the two images gets a tracked pass (K maps, softmax
//! still over all N) with the embeddings as a [`Var`](candle_core::Var) - only they are
//! variables - and is backpropagated with those map gradients. After training, the K keypoint
//! tokens are chosen by a vote over `num_indices` images.
//!
//! Randomness is a pure function of `(seed, stream, index)`: the initial embeddings, which
//! image each iteration sees, its flip, warp and noise. A run resumed from a checkpoint
//! (embeddings, Adam moments, step) therefore continues exactly like an uninterrupted one.
//!
//! Modules: [`config`] (hyper-parameters), [`data`] (images and per-iteration samples),
//! `streams` (the random streams), [`objective`] (loss and gradient of one image pair),
//! [`trainer`] (state and optimiser step), `vote` (keypoint tokens after training),
//! [`checkpoint`] (save/resume), [`run`] (the whole loop with events); the maths of the
//! losses and the selection are in [`loss`] and [`select`], the optimiser in [`adam`].

pub mod adam;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod loss;
pub mod objective;
pub mod run;
pub mod select;
mod streams;
pub mod trainer;
mod vote;

pub use crate::model::identity::model_config_hash;
pub use crate::util::Fnv;
pub use checkpoint::checkpoint_path;
pub use config::TrainConfig;
pub use data::{ImageSample, MemoryImages, TrainData};
pub use objective::{SampleGrad, SampleLoss};
pub use run::{run, Event, Outcome, RunOptions};
pub use trainer::{StepStats, Trainer};
