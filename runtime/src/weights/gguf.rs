//! GGUF files (versions 2 and 3), as written by llama.cpp's converters: a header, typed
//! metadata, tensor descriptions and aligned tensor data.
//!
//! Every count, length and offset is checked against the file's size before it is used, so a
//! truncated or hostile file gives a [`WeightError::Malformed`] naming the byte offset, never a
//! panic or a huge allocation. Tensor data stays in the memory map ([`WeightBytes`]).

use super::{FileBytes, WeightBytes, WeightError, WeightTensor};
use kiln_ir::{DType, QuantType};
use std::collections::BTreeMap;
use std::path::Path;

/// The magic number at offset 0 (`GGUF` in ASCII).
pub const MAGIC: [u8; 4] = *b"GGUF";

/// Alignment of the tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// Most dims a tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    /// `uint8`.
    U8(u8),
    /// `int8`.
    I8(i8),
    /// `uint16`.
    U16(u16),
    /// `int16`.
    I16(i16),
    /// `uint32`.
    U32(u32),
    /// `int32`.
    I32(i32),
    /// `float32`.
    F32(f32),
    /// `bool`.
    Bool(bool),
    /// `string` (UTF-8; invalid sequences replaced).
    String(String),
    /// `array` of values of one type.
    Array(Vec<MetaValue>),
    /// `uint64`.
    U64(u64),
    /// `int64`.
    I64(i64),
    /// `float64`.
    F64(f64),
}

impl MetaValue {
    /// The value as an integer, if it is one (any width) that fits `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            MetaValue::U8(v) => v.into(),
            MetaValue::I8(v) => v.into(),
            MetaValue::U16(v) => v.into(),
            MetaValue::I16(v) => v.into(),
            MetaValue::U32(v) => v.into(),
            MetaValue::I32(v) => v.into(),
            MetaValue::U64(v) => i64::try_from(v).ok()?,
            MetaValue::I64(v) => v,
            _ => return None,
        })
    }

    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The value as a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The GGUF name of the value's type.
    pub fn type_name(&self) -> &'static str {
        match self {
            MetaValue::U8(_) => "u8",
            MetaValue::I8(_) => "i8",
            MetaValue::U16(_) => "u16",
            MetaValue::I16(_) => "i16",
            MetaValue::U32(_) => "u32",
            MetaValue::I32(_) => "i32",
            MetaValue::F32(_) => "f32",
            MetaValue::Bool(_) => "bool",
            MetaValue::String(_) => "string",
            MetaValue::Array(_) => "array",
            MetaValue::U64(_) => "u64",
            MetaValue::I64(_) => "i64",
            MetaValue::F64(_) => "f64",
        }
    }
}

/// One tensor's description in the file.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Its name.
    pub name: String,
    /// Dims in GGUF order (innermost first, as ggml's `ne`).
    pub dims: Vec<u64>,
    /// Its dtype.
    pub dtype: DType,
    /// Absolute byte offset of its data in the file.
    pub offset: u64,
    /// Bytes of data.
    pub len: u64,
}

impl TensorInfo {
    /// Shape in PyTorch order (outermost first).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A parsed GGUF file.
pub struct GgufFile {
    name: String,
    bytes: FileBytes,
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata, by key.
    pub metadata: BTreeMap<String, MetaValue>,
    /// Tensors, in file order.
    pub tensors: Vec<TensorInfo>,
    /// Alignment of the tensor data.
    pub alignment: u64,
    /// Absolute offset where the tensor data starts.
    pub data_offset: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// A ggml type id's name, for messages (`None` for ids ggml does not define).
pub fn ggml_type_name(id: u32) -> Option<&'static str> {
    const NAMES: [&str; 41] = [
        "F32",
        "F16",
        "Q4_0",
        "Q4_1",
        "Q4_2",
        "Q4_3",
        "Q5_0",
        "Q5_1",
        "Q8_0",
        "Q8_1",
        "Q2_K",
        "Q3_K",
        "Q4_K",
        "Q5_K",
        "Q6_K",
        "Q8_K",
        "IQ2_XXS",
        "IQ2_XS",
        "IQ3_XXS",
        "IQ1_S",
        "IQ4_NL",
        "IQ3_S",
        "IQ2_S",
        "IQ4_XS",
        "I8",
        "I16",
        "I32",
        "I64",
        "F64",
        "IQ1_M",
        "BF16",
        "Q4_0_4_4",
        "Q4_0_4_8",
        "Q4_0_8_8",
        "TQ1_0",
        "TQ2_0",
        "IQ4_NL_4_4",
        "IQ4_NL_4_8",
        "IQ4_NL_8_8",
        "MXFP4",
        "NVFP4",
    ];
    NAMES.get(id as usize).copied()
}

/// The Kiln dtype of a ggml type id, if Kiln supports it.
pub fn dtype_of_ggml(id: u32) -> Option<DType> {
    Some(match id {
        0 => DType::F32,
        1 => DType::F16,
        24 => DType::I8,
        25 => DType::I16,
        26 => DType::I32,
        27 => DType::I64,
        28 => DType::F64,
        30 => DType::BF16,
        _ => DType::Quant(QuantType::from_gguf_type_id(id)?),
    })
}

/// A bounds-checked little-endian reader over the header.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    file: &'a str,
}

impl<'a> Reader<'a> {
    fn err(&self, offset: usize, what: impl Into<String>) -> WeightError {
        WeightError::Malformed {
            file: self.file.to_string(),
            offset: offset as u64,
            what: what.into(),
        }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], WeightError> {
        if n > self.remaining() {
            return Err(self.err(
                self.pos,
                format!(
                    "{what} needs {n} bytes but the file ends after {}",
                    self.remaining()
                ),
            ));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], WeightError> {
        Ok(self.take(N, what)?.try_into().expect("take gives N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32, WeightError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, WeightError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A count of items that each take at least `min_bytes`: refused when the rest of the
    /// file cannot hold that many (no allocation is sized from an unchecked count).
    fn count(&mut self, what: &str, min_bytes: usize) -> Result<usize, WeightError> {
        let at = self.pos;
        let n = self.u64(what)?;
        let fits = (self.remaining() / min_bytes.max(1)) as u64;
        if n > fits {
            return Err(self.err(
                at,
                format!(
                    "{what} is {n}, but the {} bytes left hold at most {fits}",
                    self.remaining()
                ),
            ));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String, WeightError> {
        let n = self.count(&format!("length of {what}"), 1)?;
        Ok(String::from_utf8_lossy(self.take(n, what)?).into_owned())
    }

    /// A metadata value of type `ty`, whose type field is at `ty_at` (`depth` guards nested
    /// arrays).
    fn value(
        &mut self,
        ty: u32,
        ty_at: usize,
        key: &str,
        depth: u32,
    ) -> Result<MetaValue, WeightError> {
        let at = self.pos;
        Ok(match ty {
            0 => MetaValue::U8(self.array::<1>(key)?[0]),
            1 => MetaValue::I8(self.array::<1>(key)?[0] as i8),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(key)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(key)?)),
            4 => MetaValue::U32(u32::from_le_bytes(self.array(key)?)),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(key)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(key)?)),
            7 => match self.array::<1>(key)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(self.err(at, format!("`{key}`: bool byte {b} is not 0 or 1"))),
            },
            8 => MetaValue::String(self.string(&format!("string `{key}`"))?),
            9 => {
                if depth >= 4 {
                    return Err(self.err(at, format!("`{key}`: arrays nested too deeply")));
                }
                let elem = self.u32(&format!("element type of array `{key}`"))?;
                let min = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8..=12 => 8,
                    _ => {
                        return Err(
                            self.err(at, format!("`{key}`: unknown array element type {elem}"))
                        )
                    }
                };
                let n = self.count(&format!("length of array `{key}`"), min)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem, at, key, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(u64::from_le_bytes(self.array(key)?)),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(key)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(key)?)),
            _ => return Err(self.err(ty_at, format!("`{key}`: unknown metadata type {ty}"))),
        })
    }
}

impl GgufFile {
    /// Maps and parses the file at `path`.
    pub fn open(path: &Path) -> Result<GgufFile, WeightError> {
        let bytes = FileBytes::map(path)?;
        GgufFile::parse(bytes, &path.display().to_string())
    }

    /// Parses a GGUF file held in `bytes`; `name` is used in error messages.
    pub fn parse(bytes: FileBytes, name: &str) -> Result<GgufFile, WeightError> {
        let data = bytes.as_slice();
        let mut r = Reader {
            bytes: data,
            pos: 0,
            file: name,
        };
        let magic = r.array::<4>("the magic number")?;
        if magic != MAGIC {
            return Err(r.err(
                0,
                format!("not a GGUF file (magic {magic:02x?}, expected \"GGUF\")"),
            ));
        }
        let version = r.u32("the version")?;
        if version == 1 {
            return Err(r.err(4, "GGUF version 1 (32-bit counts) is not supported; re-convert the file with a current llama.cpp"));
        }
        if !(2..=3).contains(&version) {
            return Err(r.err(4, format!("unknown GGUF version {version}")));
        }
        let n_tensors_at = r.pos;
        let n_tensors = r.u64("the tensor count")?;
        // A key-value pair takes at least 8 (key length) + 4 (type) + 1 bytes.
        let n_kv = r.count("the metadata count", 13)?;
        let mut metadata = BTreeMap::new();
        let mut alignment_at = 0;
        for _ in 0..n_kv {
            let at = r.pos;
            let key = r.string("a metadata key")?;
            let ty_at = r.pos;
            let ty = r.u32(&format!("the type of `{key}`"))?;
            if key == "general.alignment" {
                alignment_at = r.pos;
            }
            let value = r.value(ty, ty_at, &key, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(r.err(at, format!("metadata key `{key}` appears twice")));
            }
        }
        // A tensor description takes at least 8 (name) + 4 (dims) + 4 (type) + 8 (offset).
        if n_tensors > (r.remaining() / 24) as u64 {
            return Err(r.err(
                n_tensors_at,
                format!(
                    "tensor count is {n_tensors}, but the {} bytes left hold at most {}",
                    r.remaining(),
                    r.remaining() / 24
                ),
            ));
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_i64() {
                Some(a) if a > 0 && (a as u64).is_power_of_two() => a as u64,
                _ => {
                    return Err(r.err(
                        alignment_at,
                        format!("general.alignment is {v:?}; it must be a power of two"),
                    ))
                }
            },
        };
        let mut raw = Vec::with_capacity(n_tensors as usize);
        let mut names = std::collections::HashSet::new();
        for _ in 0..n_tensors {
            let at = r.pos;
            let tname = r.string("a tensor name")?;
            if !names.insert(tname.clone()) {
                return Err(r.err(at, format!("tensor `{tname}` appears twice")));
            }
            let n_dims_at = r.pos;
            let n_dims = r.u32(&format!("the rank of `{tname}`"))?;
            if n_dims > MAX_DIMS {
                return Err(r.err(
                    n_dims_at,
                    format!("tensor `{tname}` has {n_dims} dims; GGUF allows at most {MAX_DIMS}"),
                ));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64(&format!("a dim of `{tname}`"))?);
            }
            let ty_at = r.pos;
            let ty = r.u32(&format!("the type of `{tname}`"))?;
            let offset_at = r.pos;
            let offset = r.u64(&format!("the data offset of `{tname}`"))?;
            raw.push((tname, dims, n_dims_at, ty, ty_at, offset, offset_at));
        }
        let data_offset = (r.pos as u64).div_ceil(alignment) * alignment;
        let file_len = data.len() as u64;
        let mut tensors = Vec::with_capacity(raw.len());
        for (tname, dims, dims_at, ty, ty_at, offset, offset_at) in raw {
            let type_label = match ggml_type_name(ty) {
                Some(n) => format!("{n} (ggml type {ty})"),
                None => format!("unknown ggml type {ty}"),
            };
            let Some(dtype) = dtype_of_ggml(ty) else {
                if ggml_type_name(ty).is_none() {
                    return Err(r.err(ty_at, format!("tensor `{tname}`: {type_label}")));
                }
                return Err(WeightError::UnsupportedType {
                    file: name.to_string(),
                    tensor: tname,
                    ty: type_label,
                });
            };
            // The product of the non-zero dims must fit ggml's `int64_t`: then so does every
            // partial product of the shape, in any order (a zero dim does not excuse huge
            // others, whose product a user of the shape may compute first).
            let nonzero = dims
                .iter()
                .filter(|&&d| d != 0)
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .filter(|&n| n <= i64::MAX as u64);
            let numel = nonzero.map(|n| if dims.contains(&0) { 0 } else { n });
            let Some(numel) = numel else {
                return Err(r.err(
                    dims_at,
                    format!("tensor `{tname}`: dims {dims:?} overflow the element count"),
                ));
            };
            let len = match dtype {
                DType::Quant(q) => {
                    let inner = dims.first().copied().unwrap_or(1);
                    if inner % q.block_size() as u64 != 0 {
                        return Err(r.err(
                            ty_at,
                            format!(
                                "tensor `{tname}` ({type_label}): its first dim {inner} is not a multiple of the block size {}",
                                q.block_size()
                            ),
                        ));
                    }
                    (numel / q.block_size() as u64).checked_mul(q.block_bytes() as u64)
                }
                d => numel.checked_mul(d.size_bytes().unwrap_or(1) as u64),
            };
            let start = data_offset.checked_add(offset);
            let end = start.zip(len).and_then(|(s, l)| s.checked_add(l));
            let (Some(start), Some(len), Some(end)) = (start, len, end) else {
                return Err(r.err(
                    offset_at,
                    format!("tensor `{tname}`: offset {offset} and size overflow"),
                ));
            };
            if offset % alignment != 0 {
                return Err(r.err(
                    offset_at,
                    format!("tensor `{tname}`: data offset {offset} is not a multiple of the alignment {alignment}"),
                ));
            }
            if end > file_len {
                return Err(r.err(
                    offset_at,
                    format!(
                        "tensor `{tname}`: data at {start}..{end} ({len} bytes of {type_label} {dims:?}) runs past the end of the file ({file_len} bytes)"
                    ),
                ));
            }
            tensors.push(TensorInfo {
                name: tname,
                dims,
                dtype,
                offset: start,
                len,
            });
        }
        // Tensors may not overlap.
        let mut order: Vec<&TensorInfo> = tensors.iter().filter(|t| t.len > 0).collect();
        order.sort_by_key(|t| t.offset);
        for w in order.windows(2) {
            if w[0].offset + w[0].len > w[1].offset {
                return Err(r.err(
                    w[1].offset as usize,
                    format!(
                        "tensor `{}` (bytes {}..{}) overlaps tensor `{}` (from byte {})",
                        w[0].name,
                        w[0].offset,
                        w[0].offset + w[0].len,
                        w[1].name,
                        w[1].offset
                    ),
                ));
            }
        }
        Ok(GgufFile {
            name: name.to_string(),
            bytes,
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
        })
    }

    /// The file's name (as given to [`GgufFile::open`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Total bytes of tensor data.
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.len).sum()
    }

    /// The description of tensor `name`.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Tensor `name` with its bytes (no copy).
    pub fn tensor(&self, name: &str) -> Result<WeightTensor, WeightError> {
        let info = self.info(name).ok_or_else(|| WeightError::MissingTensor {
            file: self.name.clone(),
            tensor: name.to_string(),
        })?;
        Ok(WeightTensor {
            name: info.name.clone(),
            dtype: info.dtype,
            shape: info.shape(),
            bytes: self.bytes_of(info),
        })
    }

    fn bytes_of(&self, info: &TensorInfo) -> WeightBytes {
        self.bytes
            .slice(info.offset as usize..(info.offset + info.len) as usize)
            .expect("tensor ranges were checked against the file's length")
    }

    /// Metadata value `key`.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    fn meta_err(&self, key: &str, what: String) -> WeightError {
        WeightError::Metadata {
            file: self.name.clone(),
            key: key.to_string(),
            what,
        }
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        want: &str,
        f: impl Fn(&'a MetaValue) -> Option<T>,
    ) -> Result<Option<T>, WeightError> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(v) => f(v).map(Some).ok_or_else(|| {
                self.meta_err(key, format!("expected {want}, found {}", v.type_name()))
            }),
        }
    }

    /// Metadata `key` as a non-negative integer (`None` if absent; an error if another type).
    pub fn get_usize(&self, key: &str) -> Result<Option<usize>, WeightError> {
        self.typed(key, "a non-negative integer", |v| {
            v.as_i64().and_then(|i| usize::try_from(i).ok())
        })
    }

    /// Metadata `key` as a number.
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>, WeightError> {
        self.typed(key, "a number", MetaValue::as_f64)
    }

    /// Metadata `key` as a bool.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, WeightError> {
        self.typed(key, "a bool", MetaValue::as_bool)
    }

    /// Metadata `key` as a string.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>, WeightError> {
        self.typed(key, "a string", MetaValue::as_str)
    }

    /// Metadata `key` as an array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Option<Vec<&str>>, WeightError> {
        self.typed(key, "an array of strings", |v| {
            v.as_array()?.iter().map(MetaValue::as_str).collect()
        })
    }

    /// Metadata `key` as an array of numbers.
    pub fn get_f64_array(&self, key: &str) -> Result<Option<Vec<f64>>, WeightError> {
        self.typed(key, "an array of numbers", |v| {
            v.as_array()?.iter().map(MetaValue::as_f64).collect()
        })
    }

    /// Metadata `key` as an array of integers.
    pub fn get_i64_array(&self, key: &str) -> Result<Option<Vec<i64>>, WeightError> {
        self.typed(key, "an array of integers", |v| {
            v.as_array()?.iter().map(MetaValue::as_i64).collect()
        })
    }

    /// A required non-negative integer.
    pub fn require_usize(&self, key: &str) -> Result<usize, WeightError> {
        self.get_usize(key)?
            .ok_or_else(|| self.meta_err(key, "missing".into()))
    }

    /// A required string.
    pub fn require_str(&self, key: &str) -> Result<&str, WeightError> {
        self.get_str(key)?
            .ok_or_else(|| self.meta_err(key, "missing".into()))
    }
}
