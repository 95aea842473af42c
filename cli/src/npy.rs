//! NumPy `.npy` files (format version 1.0): float32 and int64 arrays, C order, little
//! endian — what `kiln logits` writes and `kiln verify` reads (dumps of
//! `scripts/hf_reference.py`).

use anyhow::{bail, Context};
use std::path::Path;

/// An array read from a `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values (int64 arrays converted).
    pub data: Vec<f64>,
}

/// Writes `data` (row-major, `shape`) as a float32 `.npy` file.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> anyhow::Result<()> {
    anyhow::ensure!(
        shape.iter().product::<usize>() == data.len(),
        "npy: shape {shape:?} does not match {} values",
        data.len()
    );
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
    // Magic (6) + version (2) + length (2) + header + newline, padded to 64 bytes.
    let total = (10 + header.len() + 1).div_ceil(64) * 64;
    header.push_str(&" ".repeat(total - 10 - header.len() - 1));
    header.push('\n');
    let mut out = Vec::with_capacity(total + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// Reads a float32, float64 or int64 `.npy` file (C order, little endian).
pub fn read(path: &Path) -> anyhow::Result<Array> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&bytes).with_context(|| format!("{}", path.display()))
}

fn parse(bytes: &[u8]) -> anyhow::Result<Array> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("not a .npy file");
    }
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize,
            12,
        ),
        v => bail!("unsupported .npy version {v}"),
    };
    let header = bytes
        .get(start..start + len)
        .context("truncated .npy header")?;
    let header = std::str::from_utf8(header).context("non-UTF-8 .npy header")?;
    let field = |key: &str| -> anyhow::Result<&str> {
        let at = header
            .find(&format!("'{key}'"))
            .with_context(|| format!("no '{key}' in the header"))?;
        Ok(header[at + key.len() + 2..].trim_start_matches([':', ' ']))
    };
    let descr = field("descr")?;
    let descr = descr
        .trim_start_matches('\'')
        .split('\'')
        .next()
        .unwrap_or("");
    if field("fortran_order")?.starts_with("True") {
        bail!("Fortran-ordered arrays are not supported");
    }
    let shape_text = field("shape")?;
    let close = shape_text.find(')').context("bad shape")?;
    let shape = shape_text[1..close]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().context("bad shape"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let n: usize = shape.iter().product();
    let data = &bytes[start + len..];
    let values: Vec<f64> = match descr {
        "<f4" => take(data, n, 4)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64)
            .collect(),
        "<f8" => take(data, n, 8)?
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
        "<i8" => take(data, n, 8)?
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f64)
            .collect(),
        other => bail!("unsupported dtype {other} (float32, float64, int64)"),
    };
    Ok(Array {
        shape,
        data: values,
    })
}

fn take(data: &[u8], n: usize, size: usize) -> anyhow::Result<&[u8]> {
    data.get(..n * size).with_context(|| {
        format!(
            "the data holds {} bytes, {n} values need {}",
            data.len(),
            n * size
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("kiln-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.npy");
        let data: Vec<f32> = (0..6).map(|x| x as f32 * 0.5).collect();
        write_f32(&p, &[2, 3], &data).unwrap();
        let a = read(&p).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, data.iter().map(|&x| x as f64).collect::<Vec<_>>());
        // The header is padded to a multiple of 64 bytes, then 6 floats.
        assert_eq!(std::fs::read(&p).unwrap().len() % 64, 24);
        write_f32(&p, &[3], &data[..3]).unwrap();
        assert_eq!(read(&p).unwrap().shape, vec![3]);
        assert!(parse(b"not npy").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
