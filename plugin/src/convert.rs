//! Model input for the formats the core does not read itself: GStreamer's `VideoConverter`
//! turns each frame into packed RGB in buffers kept from frame to frame.

use gst::glib;

/// The packed format frames are converted to, and the core's name for it.
pub const RGB_FORMAT: gst_video::VideoFormat = gst_video::VideoFormat::Rgbx;
pub const CORE_FORMAT: stablekeypoints::PixelFormat = stablekeypoints::PixelFormat::Rgbx;

/// Converts frames of one `VideoInfo` to [`RGB_FORMAT`] at the same size.
pub struct ToRgb {
    converter: gst_video::VideoConverter,
    out: gst_video::VideoInfo,
    /// One output buffer per frame of a batch, reused.
    slots: Vec<gst::Buffer>,
}

impl ToRgb {
    pub fn new(input: &gst_video::VideoInfo) -> Result<Self, glib::BoolError> {
        let out = gst_video::VideoInfo::builder(RGB_FORMAT, input.width(), input.height())
            .fps(input.fps())
            .par(input.par())
            .interlace_mode(input.interlace_mode())
            .build()?;
        let mut config = gst_video::VideoConverterConfig::new();
        // Plain rounding: the same bytes for the same frame, whatever came before.
        config.set_dither_method(gst_video::VideoDitherMethod::None);
        let converter = gst_video::VideoConverter::new(input, &out, Some(config))?;
        Ok(Self {
            converter,
            out,
            slots: Vec::new(),
        })
    }

    /// The [`RGB_FORMAT`] frame's stride in bytes.
    pub fn stride(&self) -> usize {
        self.out.stride()[0] as usize
    }

    /// Converts `frames` (of the input `VideoInfo`) and returns their RGB planes, one per
    /// frame, [`ToRgb::stride`] bytes per row.
    pub fn convert<T>(
        &mut self,
        frames: &[gst_video::VideoFrameRef<T>],
    ) -> Result<Vec<gst::BufferMap<'_, gst::buffer::Readable>>, glib::BoolError> {
        while self.slots.len() < frames.len() {
            self.slots.push(gst::Buffer::with_size(self.out.size())?);
        }
        for (frame, slot) in frames.iter().zip(&mut self.slots) {
            let buf = slot
                .get_mut()
                .expect("only this converter holds its buffers");
            let mut dest = gst_video::VideoFrameRef::from_buffer_ref_writable(buf, &self.out)
                .map_err(|_| glib::bool_error!("cannot map the conversion buffer"))?;
            self.converter.frame_ref(frame, &mut dest);
        }
        self.slots[..frames.len()]
            .iter()
            .map(|b| b.map_readable())
            .collect()
    }
}
