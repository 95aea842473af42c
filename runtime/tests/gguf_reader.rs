//! The GGUF reader against files written by a small independent writer
//! (`support/gguf_writer.rs`): every metadata type, every supported tensor dtype, alignment
//! and version variants, a corpus of malformed files (each with the error variant, the name
//! and the byte offset it must report), random mutations, and the real SmolLM2 file when it
//! is present.

#[path = "support/gguf_writer.rs"]
mod gguf_writer;

use gguf_writer::{bytes, ggml, gguf_string, ty, GgufWriter, TensorSpec};
use kiln_ir::{DType, QuantType};
use kiln_runtime::weights::gguf::{GgufFile, MetaValue};
use kiln_runtime::weights::{FileBytes, WeightError};
use proptest::prelude::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const FILE: &str = "test.gguf";

fn parse(b: Vec<u8>) -> Result<GgufFile, WeightError> {
    GgufFile::parse(FileBytes::from_vec(b), FILE)
}

/// Asserts `b` is refused as malformed at byte `offset` with a message holding every needle
/// (and the offset, and the file name).
#[track_caller]
fn expect_malformed(b: Vec<u8>, offset: usize, needles: &[&str]) {
    match parse(b) {
        Err(e @ WeightError::Malformed { .. }) => {
            let WeightError::Malformed {
                file, offset: got, ..
            } = &e
            else {
                unreachable!()
            };
            let msg = e.to_string();
            assert_eq!(file, FILE, "{msg}");
            assert_eq!(*got, offset as u64, "wrong offset in: {msg}");
            assert!(
                msg.contains(&format!("byte offset {offset}")),
                "offset missing in: {msg}"
            );
            for n in needles {
                assert!(msg.contains(n), "`{n}` missing in: {msg}");
            }
        }
        Err(e) => panic!("expected Malformed, got {e:?}"),
        Ok(f) => panic!("expected Malformed, parsed {f:?}"),
    }
}

/// (ggml id, Kiln dtype, elements per block, bytes per block), from ggml's type traits.
fn dtype_table() -> Vec<(u32, DType, u64, u64)> {
    use QuantType::*;
    vec![
        (0, DType::F32, 1, 4),
        (1, DType::F16, 1, 2),
        (30, DType::BF16, 1, 2),
        (28, DType::F64, 1, 8),
        (24, DType::I8, 1, 1),
        (25, DType::I16, 1, 2),
        (26, DType::I32, 1, 4),
        (27, DType::I64, 1, 8),
        (2, DType::Quant(Q4_0), 32, 18),
        (3, DType::Quant(Q4_1), 32, 20),
        (6, DType::Quant(Q5_0), 32, 22),
        (7, DType::Quant(Q5_1), 32, 24),
        (8, DType::Quant(Q8_0), 32, 34),
        (10, DType::Quant(Q2_K), 256, 84),
        (11, DType::Quant(Q3_K), 256, 110),
        (12, DType::Quant(Q4_K), 256, 144),
        (13, DType::Quant(Q5_K), 256, 176),
        (14, DType::Quant(Q6_K), 256, 210),
        (15, DType::Quant(Q8_K), 256, 292),
    ]
}

fn data_len(id: u32, dims: &[u64]) -> usize {
    let (_, _, per, size) = dtype_table().into_iter().find(|e| e.0 == id).unwrap();
    (dims.iter().product::<u64>() / per * size) as usize
}

/// A tensor of type `id` with random data of the right size.
fn tensor(name: &str, dims: &[u64], id: u32, seed: u64) -> TensorSpec {
    TensorSpec::new(name, dims, id, bytes(data_len(id, dims), seed))
}

/// Every metadata type once, nested arrays and arrays of strings included.
fn all_values() -> Vec<(&'static str, MetaValue)> {
    use MetaValue::*;
    vec![
        ("t.u8", U8(0xfe)),
        ("t.i8", I8(-128)),
        ("t.u16", U16(0xbeef)),
        ("t.i16", I16(-12345)),
        ("t.u32", U32(0xdead_beef)),
        ("t.i32", I32(i32::MIN)),
        ("t.f32", F32(-1.5e-7)),
        ("t.bool.true", Bool(true)),
        ("t.bool.false", Bool(false)),
        ("t.string", String("héllo, ünïcode ✓".into())),
        ("t.string.empty", String(std::string::String::new())),
        ("t.u64", U64(u64::MAX)),
        ("t.i64", I64(i64::MIN)),
        ("t.f64", F64(f64::INFINITY)),
        ("t.array.u8", Array(vec![U8(1), U8(2), U8(3)])),
        ("t.array.i32", Array(vec![I32(-1), I32(7)])),
        ("t.array.f32", Array(vec![F32(0.5), F32(-0.0)])),
        ("t.array.bool", Array(vec![Bool(true), Bool(false)])),
        ("t.array.u64", Array(vec![U64(1 << 40)])),
        ("t.array.f64", Array(vec![F64(std::f64::consts::PI)])),
        ("t.array.empty", Array(vec![])),
        (
            "t.array.string",
            Array(vec![
                String("a".into()),
                String("".into()),
                String("Ġ t".into()),
            ]),
        ),
        (
            "t.array.nested",
            Array(vec![
                Array(vec![U32(1), U32(2)]),
                Array(vec![U32(3)]),
                Array(vec![U32(4), U32(5), U32(6)]),
            ]),
        ),
        (
            "t.array.nested.strings",
            Array(vec![
                Array(vec![String("x".into())]),
                Array(vec![String("y".into()), String("z".into())]),
            ]),
        ),
        (
            "t.array.nested3",
            Array(vec![Array(vec![Array(vec![I16(-2), I16(3)])])]),
        ),
    ]
}

/// A small valid file: some metadata and two tensors, the last ending at the end of the file.
fn small_file() -> GgufWriter {
    GgufWriter::new()
        .kv("general.architecture", MetaValue::String("llama".into()))
        .kv("llama.block_count", MetaValue::U32(2))
        .kv("llama.rope.freq_base", MetaValue::F32(10000.0))
        .kv("tokenizer.ggml.add_bos_token", MetaValue::Bool(true))
        .kv(
            "tokenizer.ggml.tokens",
            MetaValue::Array(vec![
                MetaValue::String("<s>".into()),
                MetaValue::String("hi".into()),
            ]),
        )
        .kv(
            "nested",
            MetaValue::Array(vec![MetaValue::Array(vec![MetaValue::I8(1)])]),
        )
        .tensor(tensor("norm.weight", &[8], ggml::F32, 1))
        .tensor(tensor("blk.0.w", &[32, 2], ggml::Q8_0, 2))
}

/// Uses everything a parsed file offers (what a loader would do).
fn touch(f: &GgufFile) {
    for t in &f.tensors {
        let w = f.tensor(&t.name).expect("listed tensors are there");
        assert_eq!(w.bytes.as_slice().len() as u64, t.len);
        assert_eq!(w.numel(), t.shape().iter().product::<usize>());
        let _ = w.to_tensor();
    }
    for (k, v) in &f.metadata {
        let _ = (
            v.as_i64(),
            v.as_f64(),
            v.as_bool(),
            v.as_str(),
            v.type_name(),
        );
        let _ = f.get_usize(k);
        let _ = f.get_f64(k);
        let _ = f.get_bool(k);
        let _ = f.get_str(k);
        let _ = f.get_str_array(k);
        let _ = f.get_f64_array(k);
        let _ = f.get_i64_array(k);
        let _ = f.require_usize(k);
        let _ = f.require_str(k);
    }
    let _ = f.tensor_bytes();
    let _ = format!("{f:?}");
}

// ---------------------------------------------------------------- well-formed files

#[test]
fn every_metadata_type_round_trips() {
    let mut w = GgufWriter::new();
    for (k, v) in all_values() {
        w = w.kv(k, v);
    }
    let f = parse(w.build()).unwrap();
    assert_eq!(f.metadata.len(), all_values().len());
    for (k, v) in all_values() {
        assert_eq!(f.get(k), Some(&v), "{k}");
    }
    assert!(f.tensors.is_empty());
    touch(&f);
}

#[test]
fn typed_getters() {
    let mut w = GgufWriter::new();
    for (k, v) in all_values() {
        w = w.kv(k, v);
    }
    let f = parse(w.build()).unwrap();
    assert_eq!(f.get_usize("t.u32").unwrap(), Some(0xdead_beef));
    assert_eq!(f.get_usize("t.u8").unwrap(), Some(0xfe));
    assert_eq!(f.require_usize("t.u16").unwrap(), 0xbeef);
    assert_eq!(f.get_f64("t.f32").unwrap(), Some(f64::from(-1.5e-7f32)));
    assert_eq!(f.get_f64("t.i8").unwrap(), Some(-128.0));
    assert_eq!(f.get_bool("t.bool.true").unwrap(), Some(true));
    assert_eq!(f.require_str("t.string").unwrap(), "héllo, ünïcode ✓");
    assert_eq!(
        f.get_str_array("t.array.string").unwrap(),
        Some(vec!["a", "", "Ġ t"])
    );
    assert_eq!(f.get_i64_array("t.array.i32").unwrap(), Some(vec![-1, 7]));
    assert_eq!(
        f.get_f64_array("t.array.f32").unwrap(),
        Some(vec![0.5, -0.0])
    );
    assert_eq!(f.get_i64_array("t.array.empty").unwrap(), Some(vec![]));
    assert_eq!(f.get_usize("absent").unwrap(), None);
    // Wrong types and missing keys are `Metadata` errors naming the key.
    for (r, key) in [
        (f.get_usize("t.i8").map(|_| ()), "t.i8"),
        (f.get_usize("t.u64").map(|_| ()), "t.u64"),
        (f.get_usize("t.string").map(|_| ()), "t.string"),
        (f.get_bool("t.u8").map(|_| ()), "t.u8"),
        (f.get_str("t.u8").map(|_| ()), "t.u8"),
        (f.get_str_array("t.array.u8").map(|_| ()), "t.array.u8"),
        (f.get_i64_array("t.array.f32").map(|_| ()), "t.array.f32"),
        (f.require_str("absent").map(|_| ()), "absent"),
        (f.require_usize("absent").map(|_| ()), "absent"),
    ] {
        match r {
            Err(WeightError::Metadata { key: k, file, .. }) => {
                assert_eq!(k, key);
                assert_eq!(file, FILE);
            }
            other => panic!("{key}: expected a Metadata error, got {other:?}"),
        }
    }
}

#[test]
fn every_supported_dtype_with_shape_reversed() {
    let mut w = GgufWriter::new();
    let mut expect = Vec::new();
    for (i, (id, dtype, per, _)) in dtype_table().into_iter().enumerate() {
        let inner = per * 2;
        let dims = [inner, 3];
        let name = format!("t{i}.{dtype}");
        let spec = tensor(&name, &dims, id, i as u64 + 10);
        expect.push((name, dtype, vec![3, inner as usize], spec.data.clone()));
        w = w.tensor(spec);
    }
    // Rank 0, 1, 3 and 4 too.
    for (name, dims) in [
        ("scalar", vec![]),
        ("r1", vec![5]),
        ("r3", vec![2, 3, 4]),
        ("r4", vec![2, 1, 3, 2]),
    ] {
        let spec = tensor(name, &dims, ggml::F32, 99);
        let shape = dims.iter().rev().map(|&d| d as usize).collect();
        expect.push((name.to_string(), DType::F32, shape, spec.data.clone()));
        w = w.tensor(spec);
    }
    let (file, layout) = w.build_with_layout();
    let f = parse(file).unwrap();
    assert_eq!(f.tensors.len(), expect.len());
    assert_eq!(f.data_offset as usize, layout.data_offset);
    for ((name, dtype, shape, data), at) in expect.iter().zip(&layout.tensor_at) {
        let t = f.tensor(name).unwrap();
        assert_eq!(&t.name, name);
        assert_eq!(t.dtype, *dtype, "{name}");
        assert_eq!(&t.shape, shape, "{name}");
        assert_eq!(t.bytes.as_slice(), &data[..], "{name}");
        let info = f.info(name).unwrap();
        assert_eq!(info.offset as usize, *at, "{name}");
        assert_eq!(info.offset % 32, 0, "{name}");
        let owned = t.to_tensor().unwrap();
        assert_eq!(owned.dtype(), *dtype);
        assert_eq!(owned.shape(), &shape[..]);
    }
    assert_eq!(
        f.tensor_bytes(),
        expect.iter().map(|e| e.3.len() as u64).sum::<u64>()
    );
    assert!(matches!(
        f.tensor("nope"),
        Err(WeightError::MissingTensor { ref tensor, .. }) if tensor == "nope"
    ));
    touch(&f);
}

#[test]
fn custom_alignment() {
    for a in [1u32, 8, 64, 4096] {
        let w = GgufWriter::new()
            .alignment(a)
            .tensor(tensor("a", &[3], ggml::F32, 1))
            .tensor(tensor("b", &[5], ggml::F16, 2))
            .tensor(tensor("c", &[32], ggml::Q4_0, 3));
        let (file, layout) = w.build_with_layout();
        let f = parse(file).unwrap();
        assert_eq!(f.alignment, u64::from(a));
        assert_eq!(f.data_offset as usize, layout.data_offset);
        assert_eq!(f.data_offset % u64::from(a), 0);
        for (t, at) in f.tensors.iter().zip(&layout.tensor_at) {
            assert_eq!(t.offset as usize, *at, "alignment {a}: {}", t.name);
            assert_eq!((t.offset - f.data_offset) % u64::from(a), 0);
        }
        assert_eq!(
            f.tensor("c").unwrap().bytes.as_slice(),
            &w.tensors[2].data[..]
        );
    }
}

#[test]
fn versions_2_and_3() {
    for version in [2, 3] {
        let mut w = small_file();
        w.version = version;
        let f = parse(w.build()).unwrap();
        assert_eq!(f.version, version);
        assert_eq!(f.tensors.len(), 2);
        assert_eq!(f.require_str("general.architecture").unwrap(), "llama");
    }
}

#[test]
fn trailing_padding_and_zero_sized_tensors() {
    let mut w = small_file().tensor(TensorSpec::new("empty", &[0, 4], ggml::F32, vec![]));
    w.pad_end = true;
    let f = parse(w.build()).unwrap();
    let t = f.tensor("empty").unwrap();
    assert_eq!(t.shape, vec![4, 0]);
    assert!(t.bytes.as_slice().is_empty());
    touch(&f);
}

#[test]
fn invalid_utf8_is_replaced_not_refused() {
    let mut w = small_file();
    w.kvs.push((b"bad\xffkey".to_vec(), ty::U8, vec![1]));
    let f = parse(w.build()).unwrap();
    assert_eq!(f.get("bad\u{fffd}key"), Some(&MetaValue::U8(1)));
}

// ---------------------------------------------------------------- malformed files

#[test]
fn bad_magic() {
    let mut w = small_file();
    w.magic = *b"GGML";
    expect_malformed(w.build(), 0, &["not a GGUF file"]);
    expect_malformed(b"GG".to_vec(), 0, &["magic"]);
    expect_malformed(Vec::new(), 0, &["magic"]);
}

#[test]
fn versions_1_and_99() {
    for (v, needle) in [(1, "version 1"), (99, "version 99"), (0, "version 0")] {
        let mut w = small_file();
        w.version = v;
        expect_malformed(w.build(), 4, &[needle]);
    }
}

#[test]
fn every_prefix_is_refused() {
    let (file, layout) = small_file().build_with_layout();
    assert!(parse(file.clone()).is_ok());
    assert_eq!(
        file.len(),
        layout.tensor_at[1] + data_len(ggml::Q8_0, &[32, 2])
    );
    for n in 0..file.len() {
        match parse(file[..n].to_vec()) {
            Err(WeightError::Malformed { offset, .. }) => {
                assert!(offset as usize <= n, "prefix {n}: offset {offset}")
            }
            other => panic!("prefix of {n} bytes: {other:?}"),
        }
    }
}

/// Fails within a second (nothing is sized from the hostile count).
#[track_caller]
fn expect_fast_malformed(b: Vec<u8>, offset: usize, needles: &[&str]) {
    let start = Instant::now();
    expect_malformed(b, offset, needles);
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn huge_counts_and_lengths_fail_fast() {
    // Tensor count.
    let mut w = small_file();
    w.tensor_count = Some(u64::MAX);
    expect_fast_malformed(w.build(), 8, &["tensor count", &u64::MAX.to_string()]);
    w.tensor_count = Some(1 << 40);
    expect_fast_malformed(w.build(), 8, &["tensor count"]);
    // Metadata count.
    let mut w = small_file();
    w.kv_count = Some(u64::MAX);
    expect_fast_malformed(w.build(), 16, &["metadata count"]);
    // A key's length.
    let mut w = GgufWriter::new();
    w.kv_count = Some(1);
    let mut b = w.build();
    let at = b.len();
    b.extend_from_slice(&u64::MAX.to_le_bytes());
    b.extend_from_slice(&[0; 32]);
    expect_fast_malformed(b, at, &["metadata key"]);
    // A string value's length.
    let (b, l) = GgufWriter::new()
        .raw_kv("s", ty::STRING, [u64::MAX.to_le_bytes(), [0; 8]].concat())
        .build_with_layout();
    expect_fast_malformed(b, l.value_at[0], &["`s`"]);
    // An array's length, of bytes and of strings.
    for elem in [ty::U8, ty::STRING, ty::ARRAY] {
        let mut v = elem.to_le_bytes().to_vec();
        v.extend_from_slice(&(1u64 << 40).to_le_bytes());
        v.extend_from_slice(&[0; 64]);
        let (b, l) = GgufWriter::new()
            .raw_kv("arr", ty::ARRAY, v)
            .build_with_layout();
        expect_fast_malformed(b, l.value_at[0] + 4, &["array `arr`", "1099511627776"]);
    }
    // A string inside an array.
    let mut v = ty::STRING.to_le_bytes().to_vec();
    v.extend_from_slice(&2u64.to_le_bytes());
    v.extend(gguf_string(b"ok"));
    v.extend_from_slice(&u64::MAX.to_le_bytes());
    v.extend_from_slice(&[0; 16]);
    let (b, l) = GgufWriter::new()
        .raw_kv("toks", ty::ARRAY, v)
        .build_with_layout();
    expect_fast_malformed(b, l.value_at[0] + 4 + 8 + 10, &["`toks`"]);
    // A tensor name's length.
    let mut w = GgufWriter::new();
    w.tensor_count = Some(1);
    let mut b = w.build();
    let at = b.len();
    b.extend_from_slice(&u64::MAX.to_le_bytes());
    b.extend_from_slice(&[0; 32]);
    expect_fast_malformed(b, at, &["tensor name"]);
}

#[test]
fn too_many_dims() {
    for n in [5u32, u32::MAX] {
        let mut w = small_file();
        w.tensors[1].dims = vec![32, 1, 1, 1, 1];
        let (mut b, l) = w.build_with_layout();
        b[l.n_dims_at[1]..l.n_dims_at[1] + 4].copy_from_slice(&n.to_le_bytes());
        expect_malformed(b, l.n_dims_at[1], &["`blk.0.w`", &format!("{n} dims")]);
    }
}

#[test]
fn unknown_metadata_type() {
    let (b, l) = small_file()
        .raw_kv("weird.key", 13, vec![0; 8])
        .build_with_layout();
    expect_malformed(b, l.value_at[6] - 4, &["`weird.key`", "metadata type 13"]);
}

#[test]
fn unknown_array_element_type() {
    let mut v = 13u32.to_le_bytes().to_vec();
    v.extend_from_slice(&1u64.to_le_bytes());
    v.extend_from_slice(&[0; 8]);
    let (b, l) = small_file()
        .raw_kv("weird.array", ty::ARRAY, v)
        .build_with_layout();
    expect_malformed(b, l.value_at[6], &["`weird.array`", "element type 13"]);
}

#[test]
fn bool_byte_2() {
    let (b, l) = small_file()
        .raw_kv("flag", ty::BOOL, vec![2])
        .build_with_layout();
    expect_malformed(b, l.value_at[6], &["`flag`", "bool byte 2"]);
    // Inside an array too.
    let mut v = ty::BOOL.to_le_bytes().to_vec();
    v.extend_from_slice(&3u64.to_le_bytes());
    v.extend_from_slice(&[1, 0, 7]);
    let (b, l) = small_file()
        .raw_kv("flags", ty::ARRAY, v)
        .build_with_layout();
    expect_malformed(b, l.value_at[6] + 12 + 2, &["`flags`", "bool byte 7"]);
}

#[test]
fn arrays_nested_too_deeply() {
    let mut v = MetaValue::U8(1);
    for _ in 0..6 {
        v = MetaValue::Array(vec![v]);
    }
    let b = GgufWriter::new().kv("deep", v).build();
    match parse(b) {
        Err(WeightError::Malformed { what, .. }) => assert!(what.contains("`deep`"), "{what}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn duplicate_key() {
    let (b, l) = small_file()
        .kv("llama.block_count", MetaValue::U32(3))
        .build_with_layout();
    expect_malformed(b, l.kv_at[6], &["`llama.block_count`", "twice"]);
}

#[test]
fn duplicate_tensor_name() {
    let (b, l) = small_file()
        .tensor(tensor("norm.weight", &[8], ggml::F32, 3))
        .build_with_layout();
    expect_malformed(b, l.info_at[2], &["`norm.weight`", "twice"]);
}

#[test]
fn unknown_ggml_type() {
    let mut w = small_file();
    w.tensors[1].ty = 200;
    let (b, l) = w.build_with_layout();
    expect_malformed(b, l.type_at[1], &["`blk.0.w`", "unknown ggml type 200"]);
}

#[test]
fn known_but_unsupported_type() {
    for (id, name) in [(ggml::IQ2_XXS, "IQ2_XXS"), (9, "Q8_1"), (23, "IQ4_XS")] {
        let mut w = small_file();
        w.tensors[1].ty = id;
        match parse(w.build()) {
            Err(e @ WeightError::UnsupportedType { .. }) => {
                let WeightError::UnsupportedType { file, tensor, ty } = &e else {
                    unreachable!()
                };
                assert_eq!(file, FILE);
                assert_eq!(tensor, "blk.0.w");
                assert!(ty.contains(name), "{ty}");
                assert!(e.to_string().contains(name));
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn quantized_first_dim_not_a_block_multiple() {
    let mut w = small_file();
    w.tensors[1].dims = vec![33, 2];
    let (b, l) = w.build_with_layout();
    expect_malformed(
        b,
        l.type_at[1],
        &["`blk.0.w`", "first dim 33", "block size 32"],
    );
    let w = small_file().tensor(TensorSpec::new("k", &[128], 12, vec![0; 144]));
    let (b, l) = w.build_with_layout();
    expect_malformed(b, l.type_at[2], &["`k`", "block size 256"]);
}

#[test]
fn element_count_overflow() {
    for dims in [
        vec![1u64 << 32, 1 << 32],
        vec![u64::MAX],
        vec![1 << 63],
        vec![1 << 21, 1 << 21, 1 << 21],
        // A zero dim does not make huge others fine: the shape's product overflows in any
        // order that multiplies the big dims first.
        vec![0, 1 << 40, 1 << 40],
        vec![1 << 40, 1 << 40, 0],
        vec![0, u64::MAX],
    ] {
        let w = small_file().tensor(TensorSpec::new("big", &dims, ggml::F32, vec![]).at(0));
        let (b, l) = w.build_with_layout();
        expect_malformed(b, l.n_dims_at[2], &["`big`", "overflow"]);
    }
}

#[test]
fn byte_size_or_offset_overflow() {
    // 2^61 f64 elements: the count fits, the byte size (2^64) does not.
    let w = small_file().tensor(TensorSpec::new("big", &[1 << 61], ggml::F64, vec![]).at(0));
    let (b, l) = w.build_with_layout();
    expect_malformed(b, l.offset_at[2], &["`big`", "overflow"]);
    let w = small_file().tensor(TensorSpec::new("far", &[8], ggml::F32, vec![]).at(u64::MAX - 31));
    let (b, l) = w.build_with_layout();
    expect_malformed(b, l.offset_at[2], &["`far`", "overflow"]);
}

#[test]
fn data_offset_not_aligned() {
    let w = small_file().tensor(tensor("odd", &[4], ggml::F32, 5).at(4096 + 4));
    let (b, l) = w.build_with_layout();
    expect_malformed(b, l.offset_at[2], &["`odd`", "4100", "alignment 32"]);
}

#[test]
fn tensor_data_past_end_of_file() {
    let mut w = small_file();
    w.tensors[1].data.truncate(60);
    let (b, l) = w.build_with_layout();
    expect_malformed(b, l.offset_at[1], &["`blk.0.w`", "past the end"]);
    let w = small_file().tensor(TensorSpec::new("beyond", &[8], ggml::F32, vec![]).at(1 << 20));
    let (b, l) = w.build_with_layout();
    expect_malformed(b, l.offset_at[2], &["`beyond`", "past the end"]);
}

#[test]
fn overlapping_tensors() {
    let w = GgufWriter::new()
        .tensor(tensor("first", &[16], ggml::F32, 1).at(0))
        .tensor(tensor("second", &[8], ggml::F32, 2).at(32));
    let (b, l) = w.build_with_layout();
    expect_malformed(b, l.tensor_at[1], &["`first`", "`second`", "overlaps"]);
    // Same start.
    let w = GgufWriter::new()
        .tensor(tensor("a", &[8], ggml::F32, 1).at(0))
        .tensor(tensor("b", &[8], ggml::F32, 2).at(0));
    let (b, l) = w.build_with_layout();
    expect_malformed(b, l.tensor_at[0], &["`a`", "`b`", "overlaps"]);
    // Touching is fine.
    let w = GgufWriter::new()
        .tensor(tensor("a", &[8], ggml::F32, 1).at(0))
        .tensor(tensor("b", &[8], ggml::F32, 2).at(32));
    assert!(parse(w.build()).is_ok());
}

#[test]
fn bad_alignment() {
    for a in [0u32, 3, 48, 1000] {
        let w = small_file().alignment(a);
        let (b, l) = w.build_with_layout();
        expect_malformed(b, l.value_at[6], &["general.alignment", "power of two"]);
    }
    // Not an integer.
    let (b, l) = small_file()
        .kv("general.alignment", MetaValue::String("32".into()))
        .build_with_layout();
    expect_malformed(b, l.value_at[6], &["general.alignment", "power of two"]);
}

// ---------------------------------------------------------------- random files

fn arb_meta() -> impl Strategy<Value = MetaValue> {
    let leaf = prop_oneof![
        any::<u8>().prop_map(MetaValue::U8),
        any::<i8>().prop_map(MetaValue::I8),
        any::<u16>().prop_map(MetaValue::U16),
        any::<i16>().prop_map(MetaValue::I16),
        any::<u32>().prop_map(MetaValue::U32),
        any::<i32>().prop_map(MetaValue::I32),
        any::<u64>().prop_map(MetaValue::U64),
        any::<i64>().prop_map(MetaValue::I64),
        any::<bool>().prop_map(MetaValue::Bool),
        prop::num::f32::ANY
            .prop_filter("no NaN", |x| !x.is_nan())
            .prop_map(MetaValue::F32),
        prop::num::f64::ANY
            .prop_filter("no NaN", |x| !x.is_nan())
            .prop_map(MetaValue::F64),
        ".{0,12}".prop_map(MetaValue::String),
    ];
    // Arrays of one element type: build from one leaf repeated with other values of its kind.
    leaf.prop_recursive(3, 24, 6, |inner| {
        (inner, 0usize..6).prop_map(|(v, n)| MetaValue::Array(vec![v; n]))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_metadata_round_trips(values in prop::collection::vec(arb_meta(), 0..8)) {
        let mut w = GgufWriter::new();
        for (i, v) in values.iter().enumerate() {
            w = w.kv(&format!("k{i}"), v.clone());
        }
        let f = parse(w.build()).unwrap();
        for (i, v) in values.iter().enumerate() {
            let got = f.get(&format!("k{i}"));
            // Arrays deeper than the reader allows are refused, never misread.
            prop_assert_eq!(got, Some(v));
        }
    }

    #[test]
    fn mutations_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<Option<prop::sample::Index>>(),
    ) {
        let mut b = small_file().alignment(64).build();
        for (i, v) in edits {
            let i = i.index(b.len());
            b[i] = v;
        }
        if let Some(c) = cut {
            b.truncate(c.index(b.len()));
        }
        if let Ok(f) = parse(b) {
            touch(&f);
        }
    }

    #[test]
    fn header_field_mutations_never_panic(
        field in 0usize..64,
        value in prop_oneof![Just(u64::MAX), Just(0u64), Just(1 << 32), Just(1 << 63), any::<u64>()],
    ) {
        // Overwrite an 8-byte-wide window at a header position with a hostile integer.
        let (mut b, l) = small_file().build_with_layout();
        let at = (field * 4).min(l.header_end - 8);
        b[at..at + 8].copy_from_slice(&value.to_le_bytes());
        if let Ok(f) = parse(b) {
            touch(&f);
        }
    }
}

/// Regression inputs found by fuzzing (`runtime/fuzz`), kept in `tests/fixtures/gguf/`.
#[test]
fn fuzz_regressions() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "gguf" || x == "bin") {
            let b = std::fs::read(&path).unwrap();
            if let Ok(f) = parse(b) {
                touch(&f);
            }
        }
    }
}

// ---------------------------------------------------------------- the real SmolLM2 file

/// `KILN_SMOLLM2_GGUF`, else `tests/models/…` under the workspace root (where CI puts it),
/// else `/work/models/…`.
fn smollm2_path() -> Option<PathBuf> {
    const NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::var_os("KILN_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .into_iter()
        .chain([
            root.join("tests/models").join(NAME),
            PathBuf::from("/work/models").join(NAME),
        ])
        .find(|p| p.is_file())
}

/// Values as the `gguf` Python package reports them for this file.
#[test]
fn smollm2_q4_1_file() {
    let Some(path) = smollm2_path() else {
        println!("skipped: SmolLM2-135M-Instruct.Q4_1.gguf not found (set KILN_SMOLLM2_GGUF)");
        return;
    };
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.tensors.len(), 272);
    assert_eq!(f.metadata.len(), 33);
    assert_eq!(f.alignment, 32);
    assert_eq!(f.data_offset, 1_785_664);
    assert_eq!(f.require_str("general.architecture").unwrap(), "llama");
    assert_eq!(
        f.require_str("general.name").unwrap(),
        "Smollm2 135M 8k Lc100K Mix1 Ep2"
    );
    assert_eq!(
        f.get_str_array("general.languages").unwrap(),
        Some(vec!["en"])
    );
    for (k, v) in [
        ("llama.block_count", 30),
        ("llama.context_length", 8192),
        ("llama.embedding_length", 576),
        ("llama.feed_forward_length", 1536),
        ("llama.attention.head_count", 9),
        ("llama.attention.head_count_kv", 3),
        ("llama.vocab_size", 49152),
        ("llama.rope.dimension_count", 64),
        ("general.file_type", 3),
        ("tokenizer.ggml.bos_token_id", 1),
        ("tokenizer.ggml.eos_token_id", 2),
        ("tokenizer.ggml.padding_token_id", 2),
        ("general.quantization_version", 2),
    ] {
        assert_eq!(f.get(k), Some(&MetaValue::U32(v)), "{k}");
    }
    assert_eq!(
        f.get("llama.rope.freq_base"),
        Some(&MetaValue::F32(100000.0))
    );
    assert_eq!(
        f.get("llama.attention.layer_norm_rms_epsilon"),
        Some(&MetaValue::F32(1e-5))
    );
    assert_eq!(
        f.get_bool("tokenizer.ggml.add_bos_token").unwrap(),
        Some(false)
    );
    assert_eq!(
        f.get_bool("tokenizer.ggml.add_space_prefix").unwrap(),
        Some(false)
    );
    assert_eq!(f.require_str("tokenizer.ggml.model").unwrap(), "gpt2");
    assert_eq!(f.require_str("tokenizer.ggml.pre").unwrap(), "smollm");
    assert_eq!(f.require_str("tokenizer.chat_template").unwrap().len(), 368);
    let tokens = f.get_str_array("tokenizer.ggml.tokens").unwrap().unwrap();
    assert_eq!(tokens.len(), 49152);
    assert_eq!(
        (tokens[0], tokens[100], tokens[49151]),
        ("<|endoftext|>", "t", "ectable")
    );
    let merges = f.get_str_array("tokenizer.ggml.merges").unwrap().unwrap();
    assert_eq!(merges.len(), 48900);
    assert_eq!((merges[0], merges[48899]), ("Ġ t", "ect able"));
    let types = f
        .get_i64_array("tokenizer.ggml.token_type")
        .unwrap()
        .unwrap();
    assert_eq!(types.len(), 49152);
    assert_eq!(types.iter().sum::<i64>(), 49186);
    assert!(matches!(
        f.get("tokenizer.ggml.token_type")
            .unwrap()
            .as_array()
            .unwrap()[0],
        MetaValue::I32(3)
    ));

    let count = |d: DType| f.tensors.iter().filter(|t| t.dtype == d).count();
    assert_eq!(count(DType::Quant(QuantType::Q4_1)), 210);
    assert_eq!(count(DType::F32), 61);
    assert_eq!(count(DType::Quant(QuantType::Q8_0)), 1);
    let sum = |b: &[u8]| b.iter().map(|&x| u64::from(x)).sum::<u64>();
    for (name, shape, dtype, offset, len, byte_sum, head) in [
        (
            "token_embd.weight",
            vec![49152, 576],
            DType::Quant(QuantType::Q8_0),
            1_785_664,
            30_081_024,
            3_670_375_898,
            [50, 25, 214, 13, 19, 247, 229, 238],
        ),
        (
            "blk.0.ffn_down.weight",
            vec![576, 1536],
            DType::Quant(QuantType::Q4_1),
            31_868_992,
            552_960,
            69_261_129,
            [85, 48, 208, 184, 2, 7, 101, 49],
        ),
        (
            "blk.29.attn_v.weight",
            vec![192, 576],
            DType::Quant(QuantType::Q4_1),
            82_775_872,
            69_120,
            8_696_592,
            [94, 45, 32, 183, 103, 82, 41, 232],
        ),
        (
            "output_norm.weight",
            vec![576],
            DType::F32,
            98_360_128,
            2304,
            156_277,
            [0, 0, 225, 63, 0, 0, 233, 63],
        ),
    ] {
        let t = f.tensor(name).unwrap();
        assert_eq!(t.shape, shape, "{name}");
        assert_eq!(t.dtype, dtype, "{name}");
        let info = f.info(name).unwrap();
        assert_eq!((info.offset, info.len), (offset, len), "{name}");
        assert_eq!(sum(t.bytes.as_slice()), byte_sum, "{name}");
        assert_eq!(t.bytes.as_slice()[..8], head, "{name}");
    }
    assert_eq!(f.tensors[0].name, "token_embd.weight");
    assert_eq!(f.tensors[271].name, "output_norm.weight");
    let norm = f.tensor("output_norm.weight").unwrap().to_tensor().unwrap();
    let kiln_ir::Storage::F32(v) = norm.storage() else {
        panic!("f32 storage")
    };
    assert_eq!(v[..4], [1.7578125, 1.8203125, 1.78125, 1.6015625]);
    let last = f.tensors.last().unwrap();
    assert_eq!(
        last.offset + last.len,
        std::fs::metadata(&path).unwrap().len()
    );
    touch(&f);
}

/// Writes this file's well-formed GGUF files into the folder named by `KILN_GGUF_FUZZ_SEEDS`,
/// as a seed corpus for the fuzzer (`runtime/fuzz/README.md`); does nothing otherwise.
#[test]
fn write_fuzz_seeds() {
    let Some(dir) = std::env::var_os("KILN_GGUF_FUZZ_SEEDS").map(PathBuf::from) else {
        return;
    };
    std::fs::create_dir_all(&dir).unwrap();
    let mut all = GgufWriter::new();
    for (k, v) in all_values() {
        all = all.kv(k, v);
    }
    let mut dtypes = GgufWriter::new().alignment(16);
    for (i, (id, _, per, _)) in dtype_table().into_iter().enumerate() {
        dtypes = dtypes.tensor(tensor(&format!("t{i}"), &[per, 1], id, i as u64));
    }
    let mut v2 = small_file();
    v2.version = 2;
    let mut padded = small_file().alignment(64);
    padded.pad_end = true;
    for (name, w) in [
        ("small", small_file()),
        ("v2", v2),
        ("padded", padded),
        ("metadata", all),
        ("dtypes", dtypes),
    ] {
        std::fs::write(dir.join(format!("{name}.gguf")), w.build()).unwrap();
    }
}
