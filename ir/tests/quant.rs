//! Kiln's GGUF dequantization against the `gguf` Python package, bit for bit.
//!
//! `fixtures/quant.safetensors` is made by `scripts/fixtures/make_quant_fixtures.py` (see its
//! header for the cases). For every type except `q8_k` the expected values are
//! `gguf.quants.dequantize` (gguf-py 0.19), which computes in f32 throughout: f16 fields are
//! widened with `astype(np.float32)`, quants become f32, and each product/sum is one f32
//! operation, in the same order as Kiln's per-type code (e.g. `(d * sc) * q - (dmin * mn)` for
//! `q4_k`). No float64 is involved anywhere in those paths, so every value must match exactly,
//! including the sign of zero. (Order would not matter anyway: every product is exact in f32,
//! see the `kiln_ir::quant` module docs.) gguf-py has no `q8_k`; its expectations come from the
//! script's transcription of ggml's `dequantize_row_q8_K` (`d * q` in f32).

use std::collections::BTreeMap;

use kiln_ir::quant::{dequantize, dequantize_block, dequantize_to_vec, QuantError, QuantType};
use proptest::prelude::*;
use safetensors::{Dtype, SafeTensors};

static FIXTURES: &[u8] = include_bytes!("fixtures/quant.safetensors");

/// One fixture case: raw GGUF blocks and the values the reference dequantized them to.
struct Case {
    qt: QuantType,
    name: String,
    raw: Vec<u8>,
    expected: Vec<f32>,
}

fn cases() -> Vec<Case> {
    let st = SafeTensors::deserialize(FIXTURES).expect("fixture file parses");
    let mut raws: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut expecteds: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    for (name, view) in st.tensors() {
        if let Some(case) = name.strip_suffix(".raw") {
            assert_eq!(view.dtype(), Dtype::U8, "{name}");
            raws.insert(case.to_string(), view.data().to_vec());
        } else if let Some(case) = name.strip_suffix(".expected") {
            assert_eq!(view.dtype(), Dtype::F32, "{name}");
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            expecteds.insert(case.to_string(), values);
        } else {
            panic!("unexpected fixture tensor {name}");
        }
    }
    assert_eq!(
        raws.keys().collect::<Vec<_>>(),
        expecteds.keys().collect::<Vec<_>>(),
        "every case has both .raw and .expected"
    );
    raws.into_iter()
        .map(|(name, raw)| {
            let type_name = name.split('.').next().unwrap_or_default();
            let qt = QuantType::from_name(type_name)
                .unwrap_or_else(|| panic!("fixture {name}: unknown type {type_name}"));
            let expected = expecteds.remove(&name).unwrap_or_default();
            Case {
                qt,
                name,
                raw,
                expected,
            }
        })
        .collect()
}

/// The fixture's metadata: one JSON document under `kiln_quant_fixtures`.
fn fixture_info() -> serde_json::Value {
    let (_, metadata) = SafeTensors::read_metadata(FIXTURES).expect("fixture header parses");
    let text = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get("kiln_quant_fixtures"))
        .expect("fixture metadata has kiln_quant_fixtures");
    serde_json::from_str(text).expect("kiln_quant_fixtures is JSON")
}

/// Asserts `got` equals `expected` bit for bit, reporting the first few mismatches.
fn assert_bits_eq(what: &str, got: &[f32], expected: &[f32]) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    let mismatches: Vec<String> = got
        .iter()
        .zip(expected)
        .enumerate()
        .filter(|(_, (g, e))| g.to_bits() != e.to_bits())
        .map(|(i, (g, e))| {
            format!(
                "[{i}] got {g:e} ({:#010x}) expected {e:e} ({:#010x})",
                g.to_bits(),
                e.to_bits()
            )
        })
        .collect();
    assert!(
        mismatches.is_empty(),
        "{what}: {} of {} values differ: {}",
        mismatches.len(),
        got.len(),
        mismatches[..mismatches.len().min(8)].join("; ")
    );
}

#[test]
fn fixtures_cover_every_type_and_case() {
    let cases = cases();
    for qt in QuantType::ALL {
        let names: Vec<&str> = cases
            .iter()
            .filter(|c| c.qt == qt)
            .map(|c| c.name.split('.').nth(1).unwrap_or_default())
            .collect();
        for required in ["zeros", "random_bytes", "scale_edges"] {
            assert!(
                names.contains(&required),
                "{qt}: no {required} case in {names:?}"
            );
        }
        if matches!(
            qt,
            QuantType::Q4_0 | QuantType::Q4_1 | QuantType::Q5_0 | QuantType::Q5_1 | QuantType::Q8_0
        ) {
            for required in ["normal", "large"] {
                assert!(
                    names.contains(&required),
                    "{qt}: no {required} case in {names:?}"
                );
            }
        }
    }
}

#[test]
fn dequantize_matches_gguf_bit_for_bit() {
    let cases = cases();
    assert!(!cases.is_empty());
    for case in &cases {
        let mut out = vec![f32::NAN; case.expected.len()];
        dequantize(case.qt, &case.raw, &mut out).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_bits_eq(&case.name, &out, &case.expected);
    }
}

#[test]
fn dequantize_to_vec_and_per_block_agree_with_the_fixtures() {
    for case in cases() {
        let got = dequantize_to_vec(case.qt, &case.raw).expect("whole blocks");
        assert_bits_eq(&case.name, &got, &case.expected);

        let mut per_block = vec![f32::NAN; case.expected.len()];
        let blocks = case.raw.chunks_exact(case.qt.block_bytes());
        let outs = per_block.chunks_exact_mut(case.qt.block_size());
        assert_eq!(blocks.len(), outs.len());
        for (block, out) in blocks.zip(outs) {
            dequantize_block(case.qt, block, out).expect("one block");
        }
        assert_bits_eq(&case.name, &per_block, &case.expected);
    }
}

#[test]
fn q8_k_ignores_bsums() {
    let case = cases()
        .into_iter()
        .find(|c| c.name == "q8_k.random_bytes")
        .expect("q8_k.random_bytes fixture");
    let mut raw = case.raw.clone();
    for block in raw.chunks_exact_mut(QuantType::Q8_K.block_bytes()) {
        for b in &mut block[260..292] {
            *b = !*b;
        }
    }
    assert_bits_eq(
        "q8_k with flipped bsums",
        &dequantize_to_vec(QuantType::Q8_K, &raw).expect("whole blocks"),
        &case.expected,
    );
}

#[test]
fn block_sizes_agree_with_gguf() {
    let info = fixture_info();
    let sizes = info["ggml_quant_sizes"]
        .as_object()
        .expect("ggml_quant_sizes is an object");
    assert_eq!(sizes.len(), QuantType::ALL.len());
    for qt in QuantType::ALL {
        let s = &sizes[qt.name()];
        assert_eq!(
            s["block_size"].as_u64(),
            Some(qt.block_size() as u64),
            "{qt}"
        );
        assert_eq!(
            s["type_size"].as_u64(),
            Some(qt.block_bytes() as u64),
            "{qt}"
        );
        assert_eq!(
            s["type_id"].as_u64(),
            Some(u64::from(qt.gguf_type_id())),
            "{qt}"
        );
    }
}

#[test]
fn type_ids_and_names_round_trip() {
    for qt in QuantType::ALL {
        assert_eq!(QuantType::from_gguf_type_id(qt.gguf_type_id()), Some(qt));
        assert_eq!(QuantType::from_name(qt.name()), Some(qt));
        assert_eq!(
            QuantType::from_name(&qt.name().to_ascii_uppercase()),
            Some(qt)
        );
        assert_eq!(qt.to_string(), qt.name());
    }
    // f32, f16, q4_2/q4_3 (removed), q8_1, iq2_xxs and bf16 are not block types Kiln knows.
    for id in [0, 1, 4, 5, 9, 16, 30, u32::MAX] {
        assert_eq!(QuantType::from_gguf_type_id(id), None, "id {id}");
    }
    for name in ["", "q4", "q4_2", "q8_1", "f16", "q4_k_m", " q4_0"] {
        assert_eq!(QuantType::from_name(name), None, "name {name:?}");
    }
}

#[test]
fn bytes_for_and_elements_for() {
    for qt in QuantType::ALL {
        let (bs, bb) = (qt.block_size(), qt.block_bytes());
        assert_eq!(qt.bytes_for(0), Some(0));
        assert_eq!(qt.bytes_for(3 * bs), Some(3 * bb));
        assert_eq!(qt.bytes_for(3 * bs + 1), None);
        assert_eq!(qt.elements_for(0), Some(0));
        assert_eq!(qt.elements_for(3 * bb), Some(3 * bs));
        assert_eq!(qt.elements_for(3 * bb - 1), None);
    }
    // Counts that would overflow usize give None, not a panic.
    let (q4, q8) = (QuantType::Q4_0, QuantType::Q8_0);
    assert_eq!(q8.bytes_for(usize::MAX / 32 * 32), None);
    assert_eq!(
        q4.bytes_for(usize::MAX / 32 * 32),
        Some(usize::MAX / 32 * 18)
    );
    assert_eq!(q4.elements_for(usize::MAX / 18 * 18), None);
}

#[test]
fn wrong_byte_length_is_a_byte_length_error() {
    for qt in QuantType::ALL {
        let (bs, bb) = (qt.block_size(), qt.block_bytes());
        let mut out = vec![0.0; 2 * bs];
        for actual in [0, 1, bb, 2 * bb - 1, 2 * bb + 1, 3 * bb] {
            let bytes = vec![0u8; actual];
            assert_eq!(
                dequantize(qt, &bytes, &mut out),
                Err(QuantError::ByteLength {
                    qt,
                    elements: 2 * bs,
                    expected: 2 * bb,
                    actual,
                }),
                "{qt} with {actual} bytes"
            );
        }
        // Empty output wants empty input.
        assert_eq!(
            dequantize(qt, &[0u8; 1], &mut []),
            Err(QuantError::ByteLength {
                qt,
                elements: 0,
                expected: 0,
                actual: 1,
            })
        );
        assert_eq!(dequantize(qt, &[], &mut []), Ok(()));
    }
}

#[test]
fn partial_block_output_is_a_partial_block_error() {
    for qt in QuantType::ALL {
        let bs = qt.block_size();
        for elements in [1, bs - 1, bs + 1, 2 * bs + 7] {
            let mut out = vec![0.0; elements];
            // Whatever the bytes, the element count is checked first.
            for bytes in [
                vec![],
                vec![0u8; qt.block_bytes()],
                vec![0u8; 3 * qt.block_bytes()],
            ] {
                assert_eq!(
                    dequantize(qt, &bytes, &mut out),
                    Err(QuantError::PartialBlock {
                        qt,
                        elements,
                        block_size: bs,
                    }),
                    "{qt} with {elements} elements"
                );
            }
        }
    }
}

#[test]
fn errors_leave_the_output_untouched() {
    let mut out = vec![7.0f32; 64];
    assert!(dequantize(QuantType::Q4_0, &[0xFF; 35], &mut out).is_err());
    assert!(out.iter().all(|&x| x == 7.0));
}

#[test]
fn dequantize_to_vec_rejects_partial_blocks() {
    for qt in QuantType::ALL {
        let bb = qt.block_bytes();
        assert_eq!(dequantize_to_vec(qt, &[]), Ok(vec![]));
        for bytes in [1, bb - 1, bb + 1, 5 * bb - 2] {
            assert_eq!(
                dequantize_to_vec(qt, &vec![0u8; bytes]),
                Err(QuantError::PartialBlockBytes {
                    qt,
                    bytes,
                    block_bytes: bb,
                }),
                "{qt} with {bytes} bytes"
            );
        }
        assert_eq!(
            dequantize_to_vec(qt, &vec![0u8; 2 * bb]).map(|v| v.len()),
            Ok(2 * qt.block_size())
        );
    }
}

#[test]
fn dequantize_block_wants_exactly_one_block() {
    for qt in QuantType::ALL {
        let (bs, bb) = (qt.block_size(), qt.block_bytes());
        let block = vec![0u8; bb];
        for elements in [0, bs - 1, bs + 1, 2 * bs] {
            let mut out = vec![0.0; elements];
            assert_eq!(
                dequantize_block(qt, &block, &mut out),
                Err(QuantError::NotOneBlock {
                    qt,
                    elements,
                    block_size: bs,
                }),
                "{qt} with {elements} elements"
            );
        }
        let mut out = vec![0.0; bs];
        for actual in [0, bb - 1, bb + 1, 2 * bb] {
            assert_eq!(
                dequantize_block(qt, &vec![0u8; actual], &mut out),
                Err(QuantError::ByteLength {
                    qt,
                    elements: bs,
                    expected: bb,
                    actual,
                }),
                "{qt} block of {actual} bytes"
            );
        }
        assert_eq!(dequantize_block(qt, &block, &mut out), Ok(()));
    }
}

#[test]
fn error_messages_name_the_type_and_counts() {
    let q = QuantType::Q4_K;
    assert_eq!(
        QuantError::ByteLength {
            qt: q,
            elements: 512,
            expected: 288,
            actual: 287
        }
        .to_string(),
        "q4_k: 512 elements take 288 bytes, got 287"
    );
    assert_eq!(
        QuantError::PartialBlock {
            qt: q,
            elements: 300,
            block_size: 256
        }
        .to_string(),
        "q4_k: 300 elements is not a whole number of 256-element blocks"
    );
    assert_eq!(
        QuantError::PartialBlockBytes {
            qt: q,
            bytes: 145,
            block_bytes: 144
        }
        .to_string(),
        "q4_k: 145 bytes is not a whole number of 144-byte blocks"
    );
    assert_eq!(
        QuantError::NotOneBlock {
            qt: q,
            elements: 512,
            block_size: 256
        }
        .to_string(),
        "q4_k: a block holds 256 elements, the output has 512"
    );
}

fn any_quant_type() -> impl Strategy<Value = QuantType> {
    prop::sample::select(QuantType::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// No input length or content makes any entry point panic; `dequantize` succeeds exactly
    /// when the lengths fit, and then agrees with `dequantize_to_vec`.
    #[test]
    fn never_panics(
        qt in any_quant_type(),
        bytes in prop::collection::vec(any::<u8>(), 0..1200),
        elements in 0usize..1100,
    ) {
        let mut out = vec![0.0f32; elements];
        let result = dequantize(qt, &bytes, &mut out);
        let fits = qt.bytes_for(elements) == Some(bytes.len());
        prop_assert_eq!(result.is_ok(), fits);

        let as_vec = dequantize_to_vec(qt, &bytes);
        prop_assert_eq!(as_vec.is_ok(), bytes.len() % qt.block_bytes() == 0);
        if fits {
            let as_vec = as_vec.unwrap_or_default();
            prop_assert_eq!(as_vec.len(), out.len());
            prop_assert!(as_vec.iter().zip(&out).all(|(a, b)| a.to_bits() == b.to_bits()));
        }

        let mut one = vec![0.0f32; elements.min(qt.block_size())];
        let block_result = dequantize_block(qt, &bytes, &mut one);
        prop_assert_eq!(
            block_result.is_ok(),
            one.len() == qt.block_size() && bytes.len() == qt.block_bytes()
        );
    }

    /// Whole blocks of arbitrary bytes always dequantize (NaN and inf scales included).
    #[test]
    fn whole_blocks_of_any_bytes_dequantize(
        qt in any_quant_type(),
        blocks in 0usize..4,
        seed in any::<u64>(),
    ) {
        let mut state = seed;
        let bytes: Vec<u8> = (0..blocks * qt.block_bytes())
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (state >> 56) as u8
            })
            .collect();
        let out = dequantize_to_vec(qt, &bytes);
        prop_assert_eq!(out.map(|v| v.len()), Ok(blocks * qt.block_size()));
    }
}
