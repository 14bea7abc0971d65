//! The frame constructor (`FrameRef::new`) with arbitrary sizes, strides and plane lengths:
//! it must reject every layout it cannot read, and resampling an accepted frame must stay
//! in bounds and give colours in [0, 1].
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use stablekeypoints::frame::{to_model_input, CropMode, FrameRef, PixelFormat, YuvMatrix};

#[derive(Arbitrary, Debug)]
struct Input {
    format: u8,
    /// Small sizes most of the time, any usize sometimes (overflow checks).
    width: Size,
    height: Size,
    strides: [Size; 3],
    /// Plane lengths, taken modulo the data length + 1 (planes may overlap).
    lens: [u16; 3],
    offsets: [u16; 3],
    size: u8,
    crop: bool,
    bt709: bool,
    full_range: bool,
    data: Vec<u8>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Size {
    Small(u8),
    Any(usize),
}

impl Size {
    fn get(self) -> usize {
        match self {
            Size::Small(v) => v as usize,
            Size::Any(v) => v,
        }
    }
}

const FORMATS: [PixelFormat; 12] = [
    PixelFormat::Rgb,
    PixelFormat::Bgr,
    PixelFormat::Rgba,
    PixelFormat::Bgra,
    PixelFormat::Rgbx,
    PixelFormat::Bgrx,
    PixelFormat::Argb,
    PixelFormat::Abgr,
    PixelFormat::Xrgb,
    PixelFormat::Xbgr,
    PixelFormat::I420,
    PixelFormat::Nv12,
];

fuzz_target!(|input: Input| {
    let format = FORMATS[input.format as usize % FORMATS.len()];
    let data = &input.data[..];
    let plane = |i: usize| -> &[u8] {
        let start = input.offsets[i] as usize % (data.len() + 1);
        let len = input.lens[i] as usize % (data.len() - start + 1);
        &data[start..start + len]
    };
    let planes = [
        (plane(0), input.strides[0].get()),
        (plane(1), input.strides[1].get()),
        (plane(2), input.strides[2].get()),
    ];
    let (w, h) = (input.width.get(), input.height.get());
    let Ok(mut frame) = FrameRef::new(format, w, h, planes) else {
        return;
    };
    frame.matrix = if input.bt709 {
        YuvMatrix::Bt709
    } else {
        YuvMatrix::Bt601
    };
    frame.full_range = input.full_range;
    let size = input.size as usize % 24 + 1;
    let crop = if input.crop {
        CropMode::CenterCrop
    } else {
        CropMode::Letterbox
    };
    let (pixels, fit) = to_model_input(&frame, size, crop);
    assert_eq!(pixels.len(), 3 * size * size);
    assert!(pixels.iter().all(|v| (0.0..=1.0).contains(v)), "colour out of range");
    let (x, y) = fit.to_frame(0.5, 0.5);
    assert!(x >= 0.0 && x <= w as f32 && y >= 0.0 && y <= h as f32);
});
