//! Image files (png, jpg) decoded upright: the orientation their EXIF metadata records (a
//! JPEG's APP1 segment, a PNG's eXIf chunk) is applied, so that pixel coordinates refer to
//! the image as a viewer shows it.

use crate::error::{Error, Result};
use crate::limits::MAX_IMAGE_PIXELS;
use crate::util::{available_memory, human_bytes};
use image::{DynamicImage, ImageDecoder, ImageReader};
use std::path::Path;

/// Decodes `path` and applies its EXIF orientation. The size its header declares is checked
/// before any pixel is allocated: at most [`MAX_IMAGE_PIXELS`], and what decoding holds (the
/// decoded image, its upright and RGB copies) must fit in the memory available.
pub fn read_upright(path: &Path) -> Result<DynamicImage> {
    let bad = |e: image::ImageError| Error::Image {
        path: path.to_path_buf(),
        msg: e.to_string(),
    };
    let mut reader = ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    // The decoders' own bound too (the default's 512 MiB of allocations refuses large
    // pictures that the checks below accept).
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_IMAGE_PIXELS * 8);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(bad)?;
    check_size(path, decoder.dimensions(), decoder.total_bytes())?;
    let orientation = decoder.orientation().map_err(bad)?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(bad)?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// Refuses an image of `width x height` pixels (`bytes` decoded) that is too large to decode.
fn check_size(path: &Path, (width, height): (u32, u32), bytes: u64) -> Result<()> {
    let too_large = |why: String| Error::Image {
        path: path.to_path_buf(),
        msg: format!("it declares {width}x{height} pixels: {why}; refused before decoding"),
    };
    let pixels = u64::from(width) * u64::from(height);
    if pixels > MAX_IMAGE_PIXELS {
        return Err(too_large(format!(
            "more than the {} megapixels an image may have",
            MAX_IMAGE_PIXELS / 1_000_000
        )));
    }
    // Decoded, upright and RGB8: three copies at most.
    let need = bytes.saturating_mul(3);
    if let Some(avail) = available_memory().filter(|&a| need > a) {
        return Err(too_large(format!(
            "decoding takes about {}, more than the {} of memory available",
            human_bytes(need),
            human_bytes(avail)
        )));
    }
    Ok(())
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

    /// A valid PNG signature and IHDR chunk declaring `w x h` RGB8 pixels, then one small
    /// IDAT and IEND: a few dozen bytes.
    fn png_declaring(w: u32, h: u32) -> Vec<u8> {
        fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
            out.extend((data.len() as u32).to_be_bytes());
            let start = out.len();
            out.extend(kind);
            out.extend(data);
            let crc = crc32(&out[start..]);
            out.extend(crc.to_be_bytes());
        }
        fn crc32(bytes: &[u8]) -> u32 {
            let mut c = 0xffff_ffffu32;
            for &b in bytes {
                c ^= u32::from(b);
                for _ in 0..8 {
                    c = if c & 1 != 0 {
                        0xedb8_8320 ^ (c >> 1)
                    } else {
                        c >> 1
                    };
                }
            }
            !c
        }
        let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend(w.to_be_bytes());
        ihdr.extend(h.to_be_bytes());
        ihdr.extend([8, 2, 0, 0, 0]); // 8-bit RGB, no interlace
        chunk(&mut v, b"IHDR", &ihdr);
        chunk(
            &mut v,
            b"IDAT",
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        );
        chunk(&mut v, b"IEND", &[]);
        v
    }

    #[test]
    fn an_image_declaring_a_huge_size_is_refused_before_decoding() {
        // Issue 24 (3): a 100-byte PNG declaring 30000x30000 pixels was decoded without a
        // limit (2.7 GB) and the process aborted.
        let dir = std::env::temp_dir().join(format!("skp-imagefile-big-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let png = dir.join("bomb.png");
        std::fs::write(&png, png_declaring(30000, 30000)).unwrap();
        // The same header under a JPEG name: the content decides.
        let misnamed = dir.join("bomb.jpg");
        std::fs::write(&misnamed, png_declaring(30000, 30000)).unwrap();
        // A real 8x8 JPEG whose SOF0 is edited to declare 60000x60000.
        let jpg = dir.join("bomb2.jpg");
        let mut j = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut j)
            .write_image(&[128; 8 * 8 * 3], 8, 8, image::ExtendedColorType::Rgb8)
            .unwrap();
        let sof = j.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
        j[sof + 5..sof + 9].copy_from_slice(&[0xea, 0x60, 0xea, 0x60]);
        std::fs::write(&jpg, &j).unwrap();
        for (path, size) in [
            (&png, "30000x30000"),
            (&misnamed, "30000x30000"),
            (&jpg, "60000x60000"),
        ] {
            let e = read_rgb(path).unwrap_err().to_string();
            assert!(
                e.contains(&path.display().to_string()) && e.contains(size),
                "{e}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
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
