//! A small GGUF writer for tests, built by hand from the format's specification (not from the
//! reader under test): header, key-value pairs, tensor descriptions, padding and data. Every
//! field can be set to a hostile value, and [`Layout`] records where each field landed so
//! tests can check the byte offsets that errors name.
#![allow(dead_code)]

use kiln_runtime::weights::gguf::MetaValue;

/// GGUF metadata type ids.
pub mod ty {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// ggml tensor type ids.
pub mod ggml {
    pub const F32: u32 = 0;
    pub const F16: u32 = 1;
    pub const Q4_0: u32 = 2;
    pub const Q8_0: u32 = 8;
    pub const IQ2_XXS: u32 = 16;
    pub const I8: u32 = 24;
    pub const I16: u32 = 25;
    pub const I32: u32 = 26;
    pub const I64: u32 = 27;
    pub const F64: u32 = 28;
    pub const BF16: u32 = 30;
}

/// A GGUF string: u64 length, then the bytes.
pub fn gguf_string(s: &[u8]) -> Vec<u8> {
    let mut out = (s.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(s);
    out
}

/// The type id and encoded bytes of a metadata value. An array's element type is that of its
/// first item (`u8` when it is empty).
pub fn encode(v: &MetaValue) -> (u32, Vec<u8>) {
    match v {
        MetaValue::U8(x) => (ty::U8, x.to_le_bytes().to_vec()),
        MetaValue::I8(x) => (ty::I8, x.to_le_bytes().to_vec()),
        MetaValue::U16(x) => (ty::U16, x.to_le_bytes().to_vec()),
        MetaValue::I16(x) => (ty::I16, x.to_le_bytes().to_vec()),
        MetaValue::U32(x) => (ty::U32, x.to_le_bytes().to_vec()),
        MetaValue::I32(x) => (ty::I32, x.to_le_bytes().to_vec()),
        MetaValue::F32(x) => (ty::F32, x.to_le_bytes().to_vec()),
        MetaValue::Bool(x) => (ty::BOOL, vec![u8::from(*x)]),
        MetaValue::String(s) => (ty::STRING, gguf_string(s.as_bytes())),
        MetaValue::U64(x) => (ty::U64, x.to_le_bytes().to_vec()),
        MetaValue::I64(x) => (ty::I64, x.to_le_bytes().to_vec()),
        MetaValue::F64(x) => (ty::F64, x.to_le_bytes().to_vec()),
        MetaValue::Array(items) => {
            let elem = items.first().map_or(ty::U8, |i| encode(i).0);
            let mut out = elem.to_le_bytes().to_vec();
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                let (t, bytes) = encode(item);
                assert_eq!(t, elem, "a GGUF array holds values of one type");
                out.extend(bytes);
            }
            (ty::ARRAY, out)
        }
    }
}

/// One tensor description and its data.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    /// Name (raw bytes, so invalid UTF-8 can be written).
    pub name: Vec<u8>,
    /// Dims in GGUF order (innermost first).
    pub dims: Vec<u64>,
    /// ggml type id.
    pub ty: u32,
    /// Offset relative to the data section; `None` places it after the previous tensor,
    /// aligned.
    pub offset: Option<u64>,
    /// Bytes written at the offset (their count need not match the dims).
    pub data: Vec<u8>,
}

impl TensorSpec {
    /// A tensor with the given data, placed automatically.
    pub fn new(name: &str, dims: &[u64], ty: u32, data: Vec<u8>) -> TensorSpec {
        TensorSpec {
            name: name.as_bytes().to_vec(),
            dims: dims.to_vec(),
            ty,
            offset: None,
            data,
        }
    }

    /// The same at an explicit offset.
    pub fn at(mut self, offset: u64) -> TensorSpec {
        self.offset = Some(offset);
        self
    }
}

/// A GGUF file to write; every field may be set to a hostile value.
#[derive(Clone, Debug)]
pub struct GgufWriter {
    /// The first four bytes.
    pub magic: [u8; 4],
    /// The version field.
    pub version: u32,
    /// Tensor count written instead of the real one.
    pub tensor_count: Option<u64>,
    /// Metadata count written instead of the real one.
    pub kv_count: Option<u64>,
    /// Key (raw bytes), type id, encoded value.
    pub kvs: Vec<(Vec<u8>, u32, Vec<u8>)>,
    /// Tensors.
    pub tensors: Vec<TensorSpec>,
    /// Alignment used for padding (write `general.alignment` with [`GgufWriter::alignment`]).
    pub align: u64,
    /// Pad the file after the last tensor's data to the alignment.
    pub pad_end: bool,
}

/// Where the fields of a written file lie.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    /// Offset of each key-value pair (its key's length field).
    pub kv_at: Vec<usize>,
    /// Offset of each value (after its type field).
    pub value_at: Vec<usize>,
    /// Offset of each tensor description (its name's length field).
    pub info_at: Vec<usize>,
    /// Offset of each tensor's rank field.
    pub n_dims_at: Vec<usize>,
    /// Offset of each tensor's type field.
    pub type_at: Vec<usize>,
    /// Offset of each tensor's data-offset field.
    pub offset_at: Vec<usize>,
    /// Where the header ends (before padding).
    pub header_end: usize,
    /// Start of the data section.
    pub data_offset: usize,
    /// Absolute start of each tensor's data.
    pub tensor_at: Vec<usize>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter {
            magic: *b"GGUF",
            version: 3,
            tensor_count: None,
            kv_count: None,
            kvs: Vec::new(),
            tensors: Vec::new(),
            align: 32,
            pad_end: false,
        }
    }
}

impl GgufWriter {
    /// An empty version-3 file.
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    /// Adds a metadata value.
    pub fn kv(mut self, key: &str, v: MetaValue) -> GgufWriter {
        let (t, bytes) = encode(&v);
        self.kvs.push((key.as_bytes().to_vec(), t, bytes));
        self
    }

    /// Adds a raw metadata entry (type id and value bytes as given).
    pub fn raw_kv(mut self, key: &str, t: u32, bytes: Vec<u8>) -> GgufWriter {
        self.kvs.push((key.as_bytes().to_vec(), t, bytes));
        self
    }

    /// Sets the alignment and writes it as `general.alignment` (u32).
    pub fn alignment(mut self, a: u32) -> GgufWriter {
        self.align = a.into();
        self.kv("general.alignment", MetaValue::U32(a))
    }

    /// Adds a tensor.
    pub fn tensor(mut self, t: TensorSpec) -> GgufWriter {
        self.tensors.push(t);
        self
    }

    /// The file's bytes.
    pub fn build(&self) -> Vec<u8> {
        self.build_with_layout().0
    }

    /// The file's bytes and where its fields lie.
    pub fn build_with_layout(&self) -> (Vec<u8>, Layout) {
        let mut out = Vec::new();
        let mut l = Layout::default();
        out.extend_from_slice(&self.magic);
        out.extend_from_slice(&self.version.to_le_bytes());
        let n_t = self.tensor_count.unwrap_or(self.tensors.len() as u64);
        let n_kv = self.kv_count.unwrap_or(self.kvs.len() as u64);
        out.extend_from_slice(&n_t.to_le_bytes());
        out.extend_from_slice(&n_kv.to_le_bytes());
        for (key, t, bytes) in &self.kvs {
            l.kv_at.push(out.len());
            out.extend(gguf_string(key));
            out.extend_from_slice(&t.to_le_bytes());
            l.value_at.push(out.len());
            out.extend_from_slice(bytes);
        }
        let align = self.align.max(1);
        let mut offsets = Vec::new();
        let mut cursor = 0u64;
        for t in &self.tensors {
            let off = t.offset.unwrap_or_else(|| cursor.div_ceil(align) * align);
            cursor = cursor.max(off.saturating_add(t.data.len() as u64));
            offsets.push(off);
        }
        for (t, &off) in self.tensors.iter().zip(&offsets) {
            l.info_at.push(out.len());
            out.extend(gguf_string(&t.name));
            l.n_dims_at.push(out.len());
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            l.type_at.push(out.len());
            out.extend_from_slice(&t.ty.to_le_bytes());
            l.offset_at.push(out.len());
            out.extend_from_slice(&off.to_le_bytes());
        }
        l.header_end = out.len();
        if self.tensors.is_empty() && !self.pad_end {
            l.data_offset = out.len();
            return (out, l);
        }
        let data_offset = (out.len() as u64).div_ceil(align) * align;
        out.resize(data_offset as usize, 0);
        l.data_offset = data_offset as usize;
        for (t, &off) in self.tensors.iter().zip(&offsets) {
            let start = (data_offset as usize).wrapping_add(off as usize);
            l.tensor_at.push(start);
            if t.data.is_empty() {
                continue;
            }
            let end = start + t.data.len();
            if out.len() < end {
                out.resize(end, 0);
            }
            out[start..end].copy_from_slice(&t.data);
        }
        if self.pad_end {
            let end = (out.len() as u64).div_ceil(align) * align;
            out.resize(end as usize, 0);
        }
        (out, l)
    }
}

/// `n` deterministic pseudo-random bytes (seeded).
pub fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}
