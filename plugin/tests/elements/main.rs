//! The elements after inference, each on its own and in pipelines: the boxes source, the
//! track, pose and overlay elements, DL Streamer interop, and every element's properties as
//! `gst-inspect-1.0` shows them against `docs/elements.md`.

#[path = "../common/mod.rs"]
mod common;

mod boxes;
mod dlstreamer;
mod overlay;
mod pose;
mod properties;
mod track;
mod track_objects;
