//! SafeTensors files, one or sharded (`model.safetensors.index.json`), read through a memory
//! map: the JSON header is parsed into the `safetensors` crate's types, every offset is
//! checked here (with checked arithmetic: a hostile header gives a
//! [`WeightError::Malformed`], never a panic), and tensor bytes stay in the map.

use super::{FileBytes, WeightError, WeightTensor};
use ::safetensors::tensor::Metadata;
use ::safetensors::Dtype;
use kiln_ir::DType;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// The file a single-file checkpoint is saved as.
pub const SINGLE_FILE: &str = "model.safetensors";

/// The index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Largest JSON header accepted (the `safetensors` crate's limit).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// One `.safetensors` file: its bytes and parsed header.
struct Shard {
    name: String,
    bytes: FileBytes,
    /// Absolute offset of the data section (8 + header length).
    data_start: usize,
    header: Metadata,
}

/// A SafeTensors checkpoint: one file or several shards, tensors by name.
pub struct SafeTensorsFile {
    shards: Vec<Shard>,
    /// Tensor names in file order (shard by shard, by data offset).
    names: Vec<String>,
    /// Which shard holds each tensor.
    shard_of: HashMap<String, usize>,
}

impl std::fmt::Debug for SafeTensorsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafeTensorsFile")
            .field(
                "shards",
                &self.shards.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .field("tensors", &self.names.len())
            .finish()
    }
}

fn malformed(file: &str, offset: u64, what: impl Into<String>) -> WeightError {
    WeightError::Malformed {
        file: file.to_string(),
        offset,
        what: what.into(),
    }
}

/// Byte offset in `text` of a serde_json error's line and column (0 when it has none).
fn json_offset(text: &str, e: &serde_json::Error) -> u64 {
    if e.line() == 0 {
        return 0;
    }
    let line_start: usize = text
        .split_inclusive('\n')
        .take(e.line() - 1)
        .map(str::len)
        .sum();
    (line_start + e.column().saturating_sub(1)).min(text.len()) as u64
}

/// The Kiln dtype of a SafeTensors dtype, if Kiln has it.
pub fn dtype_of_safetensors(d: Dtype) -> Option<DType> {
    Some(match d {
        Dtype::BOOL => DType::Bool,
        Dtype::U8 => DType::U8,
        Dtype::I8 => DType::I8,
        Dtype::I16 => DType::I16,
        Dtype::I32 => DType::I32,
        Dtype::U32 => DType::U32,
        Dtype::I64 => DType::I64,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        _ => return None,
    })
}

impl Shard {
    /// Parses and checks the header of `bytes` (`name` for messages).
    fn parse(bytes: FileBytes, name: &str) -> Result<Shard, WeightError> {
        let data = bytes.as_slice();
        let len = data.len() as u64;
        let Some(n) = data.get(..8) else {
            return Err(malformed(
                name,
                0,
                format!("{len} bytes: too short for the 8-byte header length"),
            ));
        };
        let n = u64::from_le_bytes(n.try_into().expect("8 bytes"));
        if n > MAX_HEADER_BYTES || n > len - 8 {
            return Err(malformed(
                name,
                0,
                format!(
                    "header length {n} is larger than the {} bytes after it (or than {MAX_HEADER_BYTES})",
                    len - 8
                ),
            ));
        }
        let data_start = 8 + n as usize;
        let text = std::str::from_utf8(&data[8..data_start]).map_err(|e| {
            malformed(
                name,
                8 + e.valid_up_to() as u64,
                "the JSON header is not valid UTF-8",
            )
        })?;
        let header: Metadata = serde_json::from_str(text).map_err(|e| {
            malformed(
                name,
                8 + json_offset(text, &e),
                format!("bad JSON header: {e}"),
            )
        })?;
        // The tensors' data must tile the data section exactly: in offset order, each starts
        // where the previous ended, holds shape × dtype size bytes, and the last ends at the
        // end of the file.
        let mut tensors: Vec<_> = header.tensors().into_iter().collect();
        tensors.sort_by_key(|(_, t)| t.data_offsets);
        let mut end = 0usize;
        for (tname, t) in &tensors {
            let (s, e) = t.data_offsets;
            let bytes_needed = t
                .shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .and_then(|n| n.checked_mul(t.dtype.size()));
            let Some(bytes_needed) = bytes_needed else {
                return Err(malformed(
                    name,
                    8,
                    format!(
                        "tensor `{tname}`: shape {:?} of {:?} overflows the byte count",
                        t.shape, t.dtype
                    ),
                ));
            };
            if s != end || e < s {
                return Err(malformed(
                    name,
                    8,
                    format!(
                        "tensor `{tname}`: data offsets [{s}, {e}] leave a gap or overlap (the previous tensor ends at {end})"
                    ),
                ));
            }
            if e - s != bytes_needed {
                return Err(malformed(
                    name,
                    8,
                    format!(
                        "tensor `{tname}`: data offsets [{s}, {e}] hold {} bytes, but {:?} {:?} needs {bytes_needed}",
                        e - s,
                        t.dtype,
                        t.shape
                    ),
                ));
            }
            end = e;
        }
        let data_len = data.len() - data_start;
        if end != data_len {
            let last = tensors.last().map_or("(none)", |(n, _)| n.as_str());
            return Err(malformed(
                name,
                data_start as u64,
                format!(
                    "the tensors' data ends at {end} (last tensor `{last}`), but the data section holds {data_len} bytes"
                ),
            ));
        }
        Ok(Shard {
            name: name.to_string(),
            bytes,
            data_start,
            header,
        })
    }

    /// Tensor names in data-offset order.
    fn names(&self) -> Vec<String> {
        let mut t: Vec<_> = self.header.tensors().into_iter().collect();
        t.sort_by_key(|(_, t)| t.data_offsets);
        t.into_iter().map(|(n, _)| n).collect()
    }
}

impl SafeTensorsFile {
    /// Maps and parses one `.safetensors` file.
    pub fn open(path: &Path) -> Result<SafeTensorsFile, WeightError> {
        let bytes = FileBytes::map(path)?;
        SafeTensorsFile::parse(bytes, &path.display().to_string())
    }

    /// Parses a `.safetensors` file held in `bytes`; `name` is used in error messages.
    pub fn parse(bytes: FileBytes, name: &str) -> Result<SafeTensorsFile, WeightError> {
        let shard = Shard::parse(bytes, name)?;
        let names = shard.names();
        let shard_of = names.iter().map(|n| (n.clone(), 0)).collect();
        Ok(SafeTensorsFile {
            shards: vec![shard],
            names,
            shard_of,
        })
    }

    /// Opens the checkpoint in `dir`: `model.safetensors`, or the shards listed by
    /// `model.safetensors.index.json` (every tensor it names must be in its shard).
    pub fn open_dir(dir: &Path) -> Result<SafeTensorsFile, WeightError> {
        let single = dir.join(SINGLE_FILE);
        if single.is_file() {
            return SafeTensorsFile::open(&single);
        }
        let index_path = dir.join(INDEX_FILE);
        let index_name = index_path.display().to_string();
        let text = std::fs::read_to_string(&index_path).map_err(|source| WeightError::Io {
            path: index_path.clone(),
            source: if source.kind() == std::io::ErrorKind::NotFound {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "neither {SINGLE_FILE} nor {INDEX_FILE} is in {}",
                        dir.display()
                    ),
                )
            } else {
                source
            },
        })?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            malformed(
                &index_name,
                json_offset(&text, &e),
                format!("bad JSON: {e}"),
            )
        })?;
        let Some(map) = json.get("weight_map").and_then(|m| m.as_object()) else {
            return Err(malformed(
                &index_name,
                0,
                "no `weight_map` object mapping tensor names to shard files",
            ));
        };
        let mut weight_map = Vec::with_capacity(map.len());
        for (tensor, file) in map {
            let file = file
                .as_str()
                .filter(|f| !f.is_empty() && *f != ".." && !f.contains(['/', '\\']) && *f != ".");
            let Some(file) = file else {
                return Err(malformed(
                    &index_name,
                    0,
                    format!(
                        "`weight_map` entry of `{tensor}` is not a shard file name in this folder"
                    ),
                ));
            };
            weight_map.push((tensor.clone(), file.to_string()));
        }
        let files: BTreeSet<&str> = weight_map.iter().map(|(_, f)| f.as_str()).collect();
        let mut shards = Vec::with_capacity(files.len());
        let mut shard_index = HashMap::new();
        for file in files {
            shard_index.insert(file.to_string(), shards.len());
            let path = dir.join(file);
            let bytes = FileBytes::map(&path)?;
            shards.push(Shard::parse(bytes, &path.display().to_string())?);
        }
        let mut shard_of = HashMap::with_capacity(weight_map.len());
        for (tensor, file) in &weight_map {
            let i = shard_index[file];
            if shards[i].header.info(tensor).is_none() {
                return Err(WeightError::MissingTensor {
                    file: shards[i].name.clone(),
                    tensor: tensor.clone(),
                });
            }
            shard_of.insert(tensor.clone(), i);
        }
        // Shard by shard, in data order; a tensor a shard holds but the index assigns to
        // another shard (or does not list) is not part of the checkpoint.
        let names = shards
            .iter()
            .enumerate()
            .flat_map(|(i, s)| {
                let shard_of = &shard_of;
                s.names()
                    .into_iter()
                    .filter(move |n| shard_of.get(n) == Some(&i))
            })
            .collect();
        Ok(SafeTensorsFile {
            shards,
            names,
            shard_of,
        })
    }

    /// Tensor names, in file order.
    pub fn names(&self) -> Vec<&str> {
        self.names.iter().map(String::as_str).collect()
    }

    /// Tensor `name` with its bytes (no copy). Its dtype must be one Kiln has.
    pub fn tensor(&self, name: &str) -> Result<WeightTensor, WeightError> {
        let missing = || WeightError::MissingTensor {
            file: self
                .shards
                .first()
                .map_or(String::new(), |s| s.name.clone()),
            tensor: name.to_string(),
        };
        let &i = self.shard_of.get(name).ok_or_else(missing)?;
        let shard = &self.shards[i];
        let info = shard.header.info(name).ok_or_else(missing)?;
        let Some(dtype) = dtype_of_safetensors(info.dtype) else {
            return Err(WeightError::UnsupportedType {
                file: shard.name.clone(),
                tensor: name.to_string(),
                ty: format!("{:?}", info.dtype),
            });
        };
        let (s, e) = info.data_offsets;
        let bytes = shard
            .bytes
            .slice(shard.data_start + s..shard.data_start + e)
            .ok_or_else(|| {
                malformed(
                    &shard.name,
                    8,
                    format!("tensor `{name}`: data offsets [{s}, {e}] lie outside the file"),
                )
            })?;
        Ok(WeightTensor {
            name: name.to_string(),
            dtype,
            shape: info.shape.clone(),
            bytes,
        })
    }

    /// The `__metadata__` strings of the (first) file, if it has them.
    pub fn metadata(&self) -> Option<&HashMap<String, String>> {
        self.shards.first()?.header.metadata().as_ref()
    }
}
