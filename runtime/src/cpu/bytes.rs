//! Host memory: 64-byte aligned byte buffers, and tensors to and from their little-endian
//! bytes (the layout generated kernels read and write).

use half::{bf16, f16};
use kiln_ir::{DType, Storage, Tensor};

/// A 64-byte aligned chunk (the unit [`AlignedBytes`] allocates in).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Chunk([u8; 64]);

/// A zero-initialized, 64-byte aligned byte buffer.
#[derive(Clone, Default)]
pub struct AlignedBytes {
    chunks: Vec<Chunk>,
    len: usize,
}

impl std::fmt::Debug for AlignedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBytes({} bytes)", self.len)
    }
}

impl AlignedBytes {
    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> AlignedBytes {
        AlignedBytes {
            chunks: vec![Chunk([0; 64]); len.div_ceil(64).max(1)],
            len,
        }
    }

    /// A copy of `bytes`.
    pub fn from_slice(bytes: &[u8]) -> AlignedBytes {
        let mut a = AlignedBytes::zeroed(bytes.len());
        a.as_mut_slice().copy_from_slice(bytes);
        a
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Grows (zero-filled) to at least `len` bytes; never shrinks.
    pub fn reserve_len(&mut self, len: usize) {
        if len > self.len {
            let chunks = len.div_ceil(64);
            if chunks > self.chunks.len() {
                self.chunks.resize(chunks, Chunk([0; 64]));
            }
            self.len = len;
        }
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `chunks` holds at least `len` initialized bytes, contiguous.
        unsafe { std::slice::from_raw_parts(self.chunks.as_ptr().cast(), self.len) }
    }

    /// The bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `self` is borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.chunks.as_mut_ptr().cast(), self.len) }
    }

    /// Base address for generated code.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.chunks.as_mut_ptr().cast()
    }
}

/// A tensor's elements as little-endian bytes (bools one byte each, quantized blocks as is).
pub fn tensor_bytes(t: &Tensor) -> Vec<u8> {
    fn le<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        if cfg!(target_endian = "little") {
            // SAFETY: plain numbers without padding; on a little-endian machine their
            // memory is already the little-endian bytes.
            let bytes = unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), v.len() * N) };
            return bytes.to_vec();
        }
        v.iter().flat_map(|&x| f(x)).collect()
    }
    match t.storage() {
        Storage::F32(v) => le(v, f32::to_le_bytes),
        Storage::F16(v) => le(v, f16::to_le_bytes),
        Storage::BF16(v) => le(v, bf16::to_le_bytes),
        Storage::F64(v) => le(v, f64::to_le_bytes),
        Storage::I8(v) => le(v, i8::to_le_bytes),
        Storage::I16(v) => le(v, i16::to_le_bytes),
        Storage::I32(v) => le(v, i32::to_le_bytes),
        Storage::I64(v) => le(v, i64::to_le_bytes),
        Storage::U8(v) => v.clone(),
        Storage::U32(v) => le(v, u32::to_le_bytes),
        Storage::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
        Storage::Quant(_, b) => b.clone(),
    }
}

/// A tensor of `dtype` and `shape` from little-endian bytes (`None` if the byte count does
/// not match).
pub fn tensor_from_bytes(dtype: DType, shape: Vec<usize>, bytes: &[u8]) -> Option<Tensor> {
    fn read<T: Copy + Default, const N: usize>(b: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        if cfg!(target_endian = "little") && std::mem::size_of::<T>() == N {
            let mut out = vec![T::default(); b.len() / N];
            // SAFETY: `out` holds exactly `b.len() / N` plain numbers of N bytes, any bit
            // pattern of which is valid; little-endian bytes are their memory.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    b.as_ptr(),
                    out.as_mut_ptr().cast::<u8>(),
                    out.len() * N,
                )
            };
            return out;
        }
        b.chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunks_exact gives N bytes")))
            .collect()
    }
    let n: usize = shape.iter().product();
    let want = match dtype {
        DType::Quant(q) => q.bytes_for(n)?,
        d => n * d.size_bytes()?,
    };
    let b = bytes.get(..want)?;
    let storage = match dtype {
        DType::F32 => Storage::F32(read(b, f32::from_le_bytes)),
        DType::F16 => Storage::F16(read(b, f16::from_le_bytes)),
        DType::BF16 => Storage::BF16(read(b, bf16::from_le_bytes)),
        DType::F64 => Storage::F64(read(b, f64::from_le_bytes)),
        DType::I8 => Storage::I8(read(b, i8::from_le_bytes)),
        DType::I16 => Storage::I16(read(b, i16::from_le_bytes)),
        DType::I32 => Storage::I32(read(b, i32::from_le_bytes)),
        DType::I64 => Storage::I64(read(b, i64::from_le_bytes)),
        DType::U8 => Storage::U8(b.to_vec()),
        DType::U32 => Storage::U32(read(b, u32::from_le_bytes)),
        DType::Bool => Storage::Bool(b.iter().map(|&x| x != 0).collect()),
        DType::Quant(q) => Storage::Quant(q, b.to_vec()),
    };
    Tensor::new(shape, storage).ok()
}
