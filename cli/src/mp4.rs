//! The header times of an MP4 (ISO BMFF) file. mp4mux stamps the creation and modification
//! times of `mvhd`, `tkhd` and `mdhd` with the clock, so the same frames would give other
//! bytes on every run; `process` sets them to the input's modification time instead.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Seconds from 1904-01-01 (the MP4 epoch) to 1970-01-01.
pub const MP4_EPOCH_OFFSET: u64 = 2_082_844_800;

/// Sets the creation and modification times of every `mvhd`, `tkhd` and `mdhd` in the file's
/// top-level `moov` to `time` (seconds since 1904), in place. Returns how many boxes were
/// set; a file without `moov` is an error.
pub fn set_times(path: &Path, time: u64) -> io::Result<usize> {
    let mut f = File::options().read(true).write(true).open(path)?;
    let len = f.metadata()?.len();
    let mut off = 0u64;
    while off + 8 <= len {
        f.seek(SeekFrom::Start(off))?;
        let mut head = [0u8; 16];
        let n = if off + 16 <= len { 16 } else { 8 };
        f.read_exact(&mut head[..n])?;
        let (hdr, size) = box_size(&head[..n], len - off)
            .ok_or_else(|| io::Error::other(format!("bad MP4 box at byte {off}")))?;
        if &head[4..8] == b"moov" {
            let mut body = vec![0u8; (size - hdr) as usize];
            f.seek(SeekFrom::Start(off + hdr))?;
            f.read_exact(&mut body)?;
            let set = patch(&mut body, time);
            f.seek(SeekFrom::Start(off + hdr))?;
            f.write_all(&body)?;
            f.sync_all()?;
            return Ok(set);
        }
        off += size;
    }
    Err(io::Error::other("no moov box (not an MP4 file?)"))
}

/// (header length, box length) of the box starting `head`, `left` bytes before the end of
/// its parent; None when malformed.
fn box_size(head: &[u8], left: u64) -> Option<(u64, u64)> {
    let size = u32::from_be_bytes(head[..4].try_into().ok()?) as u64;
    let (hdr, size) = match size {
        0 => (8, left),
        1 => (16, u64::from_be_bytes(head.get(8..16)?.try_into().ok()?)),
        s => (8, s),
    };
    (size >= hdr && size <= left).then_some((hdr, size))
}

/// Sets the times in the boxes of `buf` (the body of `moov`, `trak` or `mdia`).
fn patch(buf: &mut [u8], time: u64) -> usize {
    let mut off = 0usize;
    let mut set = 0;
    while off + 8 <= buf.len() {
        let head_end = (off + 16).min(buf.len());
        let Some((hdr, size)) = box_size(&buf[off..head_end], (buf.len() - off) as u64) else {
            break;
        };
        let (hdr, size) = (hdr as usize, size as usize);
        let kind: [u8; 4] = buf[off + 4..off + 8].try_into().expect("4 bytes");
        let body = &mut buf[off + hdr..off + size];
        match &kind {
            b"trak" | b"mdia" => set += patch(body, time),
            b"mvhd" | b"tkhd" | b"mdhd" => set += set_box_times(body, time),
            _ => {}
        }
        off += size;
    }
    set
}

/// A full box's version 0 (32-bit times) or 1 (64-bit) creation and modification times.
fn set_box_times(body: &mut [u8], time: u64) -> usize {
    match body.first() {
        Some(0) if body.len() >= 12 => {
            let t = (time.min(u32::MAX as u64) as u32).to_be_bytes();
            body[4..8].copy_from_slice(&t);
            body[8..12].copy_from_slice(&t);
            1
        }
        Some(1) if body.len() >= 20 => {
            body[4..12].copy_from_slice(&time.to_be_bytes());
            body[12..20].copy_from_slice(&time.to_be_bytes());
            1
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(body);
        v
    }

    /// A full box of `version` with times `t` (filled with 0xAA bytes), then `rest`.
    fn timed(kind: &[u8; 4], version: u8, rest: &[u8]) -> Vec<u8> {
        let mut body = vec![version, 0, 0, 0];
        body.extend(std::iter::repeat_n(0xAA, if version == 0 { 8 } else { 16 }));
        body.extend_from_slice(rest);
        boxed(kind, &body)
    }

    #[test]
    fn times_are_set_in_every_header_and_nothing_else() {
        let mdhd = timed(b"mdhd", 0, &[1, 2, 3, 4]);
        let mdia = boxed(b"mdia", &[mdhd, boxed(b"hdlr", &[9; 12])].concat());
        let trak = boxed(b"trak", &[timed(b"tkhd", 1, &[5; 8]), mdia].concat());
        let udta = boxed(b"udta", &timed(b"mvhd", 0, &[])); // not a header where it is
        let moov = boxed(b"moov", &[timed(b"mvhd", 0, &[7; 4]), trak, udta].concat());
        let ftyp = boxed(b"ftyp", b"isomiso2");
        // A 64-bit size mdat before moov, as large files have.
        let mut mdat = 1u32.to_be_bytes().to_vec();
        mdat.extend_from_slice(b"mdat");
        mdat.extend_from_slice(&(16u64 + 5).to_be_bytes());
        mdat.extend_from_slice(&[0xAA; 5]);
        let file = [ftyp.clone(), mdat.clone(), moov.clone()].concat();
        let dir = std::env::temp_dir().join(format!("skp-mp4-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.mp4");
        std::fs::write(&path, &file).unwrap();
        let t = 0x0102_0304u64;
        assert_eq!(set_times(&path, t).unwrap(), 3);
        let out = std::fs::read(&path).unwrap();
        assert_eq!(out.len(), file.len());
        // Expected by hand: every 0xAA time byte of the three headers becomes the time.
        let moov_at = ftyp.len() + mdat.len();
        let mut expect = file.clone();
        let t32 = [1u8, 2, 3, 4];
        let t64 = [0u8, 0, 0, 0, 1, 2, 3, 4];
        let mvhd = moov_at + 8 + 8 + 4;
        for (at, bytes) in [
            (mvhd, &t32[..]),
            (mvhd + 4, &t32[..]),
            (moov_at + 8 + 24 + 8 + 8 + 4, &t64[..]),
            (moov_at + 8 + 24 + 8 + 8 + 4 + 8, &t64[..]),
        ] {
            expect[at..at + bytes.len()].copy_from_slice(bytes);
        }
        let mdhd = moov_at + 8 + 24 + 8 + 36 + 8 + 8 + 4;
        expect[mdhd..mdhd + 4].copy_from_slice(&t32);
        expect[mdhd + 4..mdhd + 8].copy_from_slice(&t32);
        assert_eq!(out, expect);
        // The udta's mvhd-like box and mdat's bytes are untouched.
        assert_eq!(&out[ftyp.len()..ftyp.len() + mdat.len()], &mdat[..]);
        std::fs::write(&path, &ftyp).unwrap();
        assert!(set_times(&path, t)
            .unwrap_err()
            .to_string()
            .contains("moov"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
