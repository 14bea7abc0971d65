//! Image files (png, jpg) decoded upright: the orientation their EXIF metadata records (a
//! JPEG's APP1 segment, a PNG's eXIf chunk) is applied, so that pixel coordinates refer to
//! the image as a viewer shows it.

use crate::error::{Error, Result};
use image::{DynamicImage, ImageDecoder, ImageReader};
use std::path::Path;

/// Decodes `path` and applies its EXIF orientation.
pub fn read_upright(path: &Path) -> Result<DynamicImage> {
    let bad = |e: image::ImageError| Error::Image {
        path: path.to_path_buf(),
        msg: e.to_string(),
    };
    let mut decoder = ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .into_decoder()
        .map_err(bad)?;
    let orientation = decoder.orientation().map_err(bad)?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(bad)?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// [`read_upright`] as RGB8.
pub fn read_rgb(path: &Path) -> Result<image::RgbImage> {
    Ok(read_upright(path)?.to_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::ImageEncoder;

    /// A little-endian TIFF header with one IFD entry: Orientation (0x0112) = `o`.
    pub(crate) fn exif_orientation(o: u16) -> Vec<u8> {
        let mut v = b"II*\0".to_vec();
        v.extend(8u32.to_le_bytes());
        v.extend(1u16.to_le_bytes());
        v.extend(0x0112u16.to_le_bytes());
        v.extend(3u16.to_le_bytes()); // SHORT
        v.extend(1u32.to_le_bytes());
        v.extend(o.to_le_bytes());
        v.extend([0, 0]);
        v.extend(0u32.to_le_bytes());
        v
    }

    /// 3x2 image, each pixel distinct: stored (x, y) -> value 40 * (y * 3 + x).
    fn stored() -> image::RgbImage {
        image::RgbImage::from_fn(3, 2, |x, y| {
            let v = (40 * (y * 3 + x)) as u8;
            image::Rgb([v, v, v])
        })
    }

    #[test]
    fn exif_orientation_is_applied_to_jpeg_and_png() {
        let dir = std::env::temp_dir().join(format!("skp-imagefile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = stored();
        let png = dir.join("o6.png");
        {
            let f = std::fs::File::create(&png).unwrap();
            let mut e = image::codecs::png::PngEncoder::new(f);
            e.set_exif_metadata(exif_orientation(6)).unwrap();
            e.write_image(img.as_raw(), 3, 2, image::ExtendedColorType::Rgb8)
                .unwrap();
        }
        let jpg = dir.join("o6.jpg");
        {
            let f = std::fs::File::create(&jpg).unwrap();
            let mut e = image::codecs::jpeg::JpegEncoder::new_with_quality(f, 100);
            e.set_exif_metadata(exif_orientation(6)).unwrap();
            e.write_image(img.as_raw(), 3, 2, image::ExtendedColorType::Rgb8)
                .unwrap();
        }
        let plain = dir.join("plain.png");
        img.save(&plain).unwrap();
        // Orientation 6: rotate 90 degrees clockwise to show upright, so the upright image
        // is 2x3 and its pixel (x, y) is the stored pixel (y, H - 1 - x).
        for (path, tol) in [(&png, 0i32), (&jpg, 12)] {
            let up = read_rgb(path).unwrap();
            assert_eq!(up.dimensions(), (2, 3), "{}", path.display());
            for y in 0..3u32 {
                for x in 0..2u32 {
                    let want = img.get_pixel(y, 1 - x)[0] as i32;
                    let got = up.get_pixel(x, y)[0] as i32;
                    assert!((got - want).abs() <= tol, "{} ({x},{y})", path.display());
                }
            }
        }
        assert_eq!(read_rgb(&plain).unwrap(), img);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
