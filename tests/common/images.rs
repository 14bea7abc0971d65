//! Synthetic frames, shared by the test crates of the workspace (each includes this file
//! from its own `common`).

/// Frame `t` of a synthetic clip: a bright disk moving along a circle over a dim, textured
/// background, planar RGB `[3, size, size]` in [0, 1].
pub fn frame(t: usize, frames: usize, size: usize) -> Vec<f32> {
    let s = size as f32;
    let phase = t as f32 / frames as f32 * std::f32::consts::TAU;
    let (cx, cy) = (
        s * (0.5 + 0.25 * phase.cos()),
        s * (0.5 + 0.25 * phase.sin()),
    );
    let rad = s * 0.12;
    let mut img = vec![0f32; 3 * size * size];
    for y in 0..size {
        for x in 0..size {
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            let d = ((fx - cx).powi(2) + (fy - cy).powi(2)).sqrt();
            // Anti-aliased disk edge.
            let a = (rad + 0.5 - d).clamp(0.0, 1.0);
            let tex = 0.15 + 0.05 * ((x * 7 + y * 13) % 5) as f32 / 4.0;
            let bg = [tex, tex * 0.8, 0.1 + 0.1 * y as f32 / s];
            let fg = [1.0, 0.95, 0.6];
            for c in 0..3 {
                img[c * size * size + y * size + x] = bg[c] * (1.0 - a) + fg[c] * a;
            }
        }
    }
    img
}
