//! Weight files: GGUF ([`gguf`]) and SafeTensors ([`safetensors`]), read through a memory map
//! so tensor bytes are used where they lie in the file ([`WeightBytes`]), never copied unless a
//! dtype must be converted.

pub mod gguf;
pub mod safetensors;

use crate::cpu::tensor_from_bytes;
use kiln_ir::{DType, Tensor};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

/// Why a weight file could not be read, or a tensor in it used.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    /// The file could not be opened or mapped.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is malformed: what is wrong and where.
    #[error("{file}: malformed at byte offset {offset}: {what}")]
    Malformed {
        /// The file (or `<memory>`).
        file: String,
        /// Byte offset of the bad field.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// A tensor of a type Kiln cannot run.
    #[error("{file}: tensor `{tensor}` has type {ty}, which Kiln does not support")]
    UnsupportedType {
        /// The file.
        file: String,
        /// The tensor.
        tensor: String,
        /// The type's name (and id).
        ty: String,
    },
    /// A tensor the model needs is not in the file.
    #[error("{file}: no tensor named `{tensor}`")]
    MissingTensor {
        /// The file.
        file: String,
        /// The tensor's name.
        tensor: String,
    },
    /// A metadata key the model needs is missing or has another type.
    #[error("{file}: metadata `{key}`: {what}")]
    Metadata {
        /// The file.
        file: String,
        /// The key.
        key: String,
        /// Missing, or what type it has instead of the expected one.
        what: String,
    },
    /// A tensor whose shape or dtype is not what the model declares.
    #[error("tensor `{tensor}`: expected {expected}, the file has {got}")]
    Shape {
        /// The tensor.
        tensor: String,
        /// What the model declares.
        expected: String,
        /// What the file holds.
        got: String,
    },
}

/// Where a file's bytes live: a read-only memory map, or memory (tests, fuzzing).
enum Backing {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl AsRef<[u8]> for Backing {
    fn as_ref(&self) -> &[u8] {
        match self {
            Backing::Mapped(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// The bytes of a whole weight file, shared by every tensor read from it.
#[derive(Clone)]
pub struct FileBytes(Arc<Backing>);

impl FileBytes {
    /// Maps `path` read-only.
    pub fn map(path: &std::path::Path) -> Result<FileBytes, WeightError> {
        let io = |source| WeightError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only; Kiln never writes through it. Like every reader of
        // memory-mapped weights (llama.cpp, safetensors), it assumes nobody truncates or
        // rewrites the file while it is open.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Ok(FileBytes(Arc::new(Backing::Mapped(map))))
    }

    /// Bytes already in memory.
    pub fn from_vec(bytes: Vec<u8>) -> FileBytes {
        FileBytes(Arc::new(Backing::Owned(bytes)))
    }

    /// All the bytes.
    pub fn as_slice(&self) -> &[u8] {
        (*self.0).as_ref()
    }

    /// A range of them, sharing this file (`range` must lie inside; checked).
    pub fn slice(&self, range: Range<usize>) -> Option<WeightBytes> {
        (range.start <= range.end && range.end <= self.as_slice().len()).then(|| WeightBytes {
            file: self.clone(),
            range,
        })
    }
}

/// The bytes of one tensor inside a weight file (no copy; cheap to clone).
#[derive(Clone)]
pub struct WeightBytes {
    file: FileBytes,
    range: Range<usize>,
}

impl WeightBytes {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.file.as_slice()[self.range.clone()]
    }

    /// Bytes held in memory (no file behind them).
    pub fn from_vec(bytes: Vec<u8>) -> WeightBytes {
        let n = bytes.len();
        WeightBytes {
            file: FileBytes::from_vec(bytes),
            range: 0..n,
        }
    }
}

impl std::fmt::Debug for WeightBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WeightBytes({} bytes)", self.range.len())
    }
}

/// A tensor stored in a weight file: name, dtype, shape in PyTorch order (outermost first)
/// and its little-endian bytes in Kiln's layout.
#[derive(Clone, Debug)]
pub struct WeightTensor {
    /// Name in the file.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape, outermost dim first.
    pub shape: Vec<usize>,
    /// The bytes (quantized blocks as stored).
    pub bytes: WeightBytes,
}

impl WeightTensor {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// A copy as an owned [`Tensor`].
    pub fn to_tensor(&self) -> Result<Tensor, WeightError> {
        tensor_from_bytes(self.dtype, self.shape.clone(), self.bytes.as_slice()).ok_or_else(|| {
            WeightError::Shape {
                tensor: self.name.clone(),
                expected: format!("{}{:?}", self.dtype, self.shape),
                got: format!("{} bytes", self.bytes.as_slice().len()),
            }
        })
    }
}
