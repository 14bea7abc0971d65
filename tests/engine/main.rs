//! The engine's method against its references: fidelity to the PyTorch reference, the
//! evaluation metrics, the student's ONNX export, and training.

#[path = "../common/mod.rs"]
mod common;

mod eval;
mod fidelity;
mod onnx;
mod train;
