//! Tensors saved by PyTorch's `torch.save` (the zip format of torch >= 1.6), read with
//! candle's unpickler: the reference's `embedding.pt`, `indices.pt` and `regressor.pt`, each
//! one tensor. candle's own `.pth` readers only handle dictionaries of tensors.

use crate::error::{Error, Result};
use candle_core::pickle::{Object, Stack, TensorInfo};
use candle_core::Tensor;
use std::io::Read;
use std::path::Path;

type Zip = zip::ZipArchive<std::io::BufReader<std::fs::File>>;

/// An error about `path` (I/O-kind, as the file is not what is expected).
fn bad(path: &Path, m: String) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(m),
    }
}

/// The single tensor saved in `path` (a tensor, a `Parameter`, or a dictionary holding one
/// tensor). Errors name the file.
pub fn read_tensor(path: &Path) -> Result<Tensor> {
    let (mut zip, dir, obj) = unpickle(path)?;
    let info = one_tensor(path, obj, &dir)?;
    read_data(path, &mut zip, &info)
}

/// The archive, its record folder (`<name>/data`) and its unpickled object.
fn unpickle(path: &Path) -> Result<(Zip, String, Object)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| {
        bad(
            path,
            format!("not a PyTorch file (a torch.save zip archive of torch >= 1.6): {e}"),
        )
    })?;
    let pickles: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok())
        .filter(|n| n.ends_with("/data.pkl"))
        .map(|n| n.into_owned())
        .collect();
    let [pkl] = pickles.as_slice() else {
        return Err(bad(
            path,
            format!(
                "not a PyTorch file: expected one `<name>/data.pkl` in the archive, found {}",
                pickles.len()
            ),
        ));
    };
    let dir = pkl
        .strip_suffix(".pkl")
        .expect("suffix checked")
        .to_string();
    let obj = {
        let entry = zip
            .by_name(pkl)
            .map_err(|e| bad(path, format!("cannot read {pkl}: {e}")))?;
        let mut reader = std::io::BufReader::new(entry);
        let mut stack = Stack::empty();
        stack
            .read_loop(&mut reader)
            .and_then(|_| stack.finalize())
            .map_err(|e| bad(path, format!("cannot unpickle {pkl}: {e}")))?
    };
    Ok((zip, dir, obj))
}

/// The one tensor `obj` is or holds (a dictionary of exactly one tensor), contiguous.
fn one_tensor(path: &Path, obj: Object, dir: &str) -> Result<TensorInfo> {
    let name = || Object::Unicode("tensor".into());
    let info = match obj {
        Object::Dict(entries) => {
            let mut found = Vec::new();
            for (_, v) in entries {
                if let Ok(Some(i)) = v.into_tensor_info(name(), Path::new(dir)) {
                    found.push(i);
                }
            }
            if found.len() != 1 {
                return Err(bad(
                    path,
                    format!(
                        "expected one tensor, found a dictionary of {} tensors",
                        found.len()
                    ),
                ));
            }
            found.pop().expect("one")
        }
        obj => obj
            .into_tensor_info(name(), Path::new(dir))
            .map_err(|e| bad(path, format!("cannot read the saved tensor: {e}")))?
            .ok_or_else(|| bad(path, "the file holds no tensor".into()))?,
    };
    let layout = &info.layout;
    if !layout.is_contiguous() {
        return Err(bad(
            path,
            format!(
                "the saved tensor is not contiguous (shape {:?}, strides {:?}); save x.contiguous()",
                layout.dims(),
                layout.stride()
            ),
        ));
    }
    Ok(info)
}

/// The tensor's bytes from its storage record.
fn read_data(path: &Path, zip: &mut Zip, info: &TensorInfo) -> Result<Tensor> {
    let layout = &info.layout;
    let unreadable =
        |e: std::io::Error| bad(path, format!("cannot read tensor data {}: {e}", info.path));
    let mut entry = zip
        .by_name(&info.path)
        .map_err(|e| bad(path, format!("missing tensor data {}: {e}", info.path)))?;
    // candle's layout offset of a saved tensor counts bytes into its storage record.
    let skip = layout.start_offset() as u64;
    if std::io::copy(&mut entry.by_ref().take(skip), &mut std::io::sink()).map_err(unreadable)?
        != skip
    {
        return Err(bad(path, format!("tensor data {} is truncated", info.path)));
    }
    let bytes = layout.shape().elem_count() * info.dtype.size_in_bytes();
    let mut data = Vec::with_capacity(bytes);
    entry
        .take(bytes as u64)
        .read_to_end(&mut data)
        .map_err(unreadable)?;
    if data.len() != bytes {
        return Err(bad(
            path,
            format!(
                "tensor data {} is truncated: {} of {bytes} bytes for a {:?} tensor of shape {:?}",
                info.path,
                data.len(),
                info.dtype,
                layout.dims()
            ),
        ));
    }
    Ok(Tensor::from_raw_buffer(
        &data,
        info.dtype,
        layout.dims(),
        &candle_core::Device::Cpu,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_torch_files_are_errors_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("skp-torchfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("embedding.pt");
        std::fs::write(&p, b"not a zip").unwrap();
        let e = read_tensor(&p).unwrap_err().to_string();
        assert!(
            e.contains("embedding.pt") && e.contains("not a PyTorch file"),
            "{e}"
        );
        let e = read_tensor(&dir.join("missing.pt"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.pt"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
