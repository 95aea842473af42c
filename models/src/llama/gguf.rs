//! Llama-family GGUF files: tensor names and layouts mapped to Hugging Face's, one table per
//! architecture.
//!
//! llama.cpp's converter permutes the rows of `q_proj` and `k_proj` of `llama` files so that
//! its interleaved RoPE gives what Hugging Face's half-split RoPE gives; [`load_weights`]
//! undoes that (moving whole rows, so quantized blocks are untouched) and the model code
//! stays the Hugging Face model. Qwen2 files are not permuted.

use super::LlamaConfig;
use kiln_runtime::weights::gguf::GgufFile;
use kiln_runtime::weights::{WeightBytes, WeightError, WeightTensor};

/// An architecture Kiln runs from GGUF (`general.architecture`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// `llama`: Llama 2 and 3, SmolLM2, Mistral 7B, TinyLlama (Q/K rows permuted).
    Llama,
    /// `qwen2`: Qwen2 and Qwen2.5 (biases on Q/K/V, rows not permuted).
    Qwen2,
}

impl Arch {
    /// The architecture named in `general.architecture`.
    pub fn from_name(name: &str) -> Option<Arch> {
        match name {
            "llama" => Some(Arch::Llama),
            "qwen2" => Some(Arch::Qwen2),
            _ => None,
        }
    }

    /// The key prefix of its metadata (`llama.block_count`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }

    /// Its tensor-name table.
    fn table(self) -> &'static [Rule] {
        match self {
            Arch::Llama => LLAMA,
            Arch::Qwen2 => QWEN2,
        }
    }

    /// Whether the converter permuted Q/K rows for interleaved RoPE.
    fn permuted(self) -> bool {
        self == Arch::Llama
    }
}

/// How a tensor's rows are laid out in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rows {
    /// As in Hugging Face's checkpoint.
    Plain,
    /// Rotary-permuted query rows (heads: `num_attention_heads`).
    Query,
    /// Rotary-permuted key rows (heads: `num_key_value_heads`).
    Key,
}

/// One entry of a name table: `{n}` stands for the layer index.
struct Rule {
    gguf: &'static str,
    hf: &'static str,
    rows: Rows,
}

const fn rule(gguf: &'static str, hf: &'static str, rows: Rows) -> Rule {
    Rule { gguf, hf, rows }
}

/// `llama` files.
const LLAMA: &[Rule] = &[
    rule(
        "token_embd.weight",
        "model.embed_tokens.weight",
        Rows::Plain,
    ),
    rule("output_norm.weight", "model.norm.weight", Rows::Plain),
    rule("output.weight", "lm_head.weight", Rows::Plain),
    rule(
        "blk.{n}.attn_norm.weight",
        "model.layers.{n}.input_layernorm.weight",
        Rows::Plain,
    ),
    rule(
        "blk.{n}.attn_q.weight",
        "model.layers.{n}.self_attn.q_proj.weight",
        Rows::Query,
    ),
    rule(
        "blk.{n}.attn_k.weight",
        "model.layers.{n}.self_attn.k_proj.weight",
        Rows::Key,
    ),
    rule(
        "blk.{n}.attn_v.weight",
        "model.layers.{n}.self_attn.v_proj.weight",
        Rows::Plain,
    ),
    rule(
        "blk.{n}.attn_output.weight",
        "model.layers.{n}.self_attn.o_proj.weight",
        Rows::Plain,
    ),
    rule(
        "blk.{n}.attn_q.bias",
        "model.layers.{n}.self_attn.q_proj.bias",
        Rows::Query,
    ),
    rule(
        "blk.{n}.attn_k.bias",
        "model.layers.{n}.self_attn.k_proj.bias",
        Rows::Key,
    ),
    rule(
        "blk.{n}.attn_v.bias",
        "model.layers.{n}.self_attn.v_proj.bias",
        Rows::Plain,
    ),
    rule(
        "blk.{n}.attn_output.bias",
        "model.layers.{n}.self_attn.o_proj.bias",
        Rows::Plain,
    ),
    rule(
        "blk.{n}.ffn_norm.weight",
        "model.layers.{n}.post_attention_layernorm.weight",
        Rows::Plain,
    ),
    rule(
        "blk.{n}.ffn_gate.weight",
        "model.layers.{n}.mlp.gate_proj.weight",
        Rows::Plain,
    ),
    rule(
        "blk.{n}.ffn_up.weight",
        "model.layers.{n}.mlp.up_proj.weight",
        Rows::Plain,
    ),
    rule(
        "blk.{n}.ffn_down.weight",
        "model.layers.{n}.mlp.down_proj.weight",
        Rows::Plain,
    ),
];

/// `qwen2` files: Llama's names, no permutation.
const QWEN2: &[Rule] = &[
    rule(
        "token_embd.weight",
        "model.embed_tokens.weight",
        Rows::Plain,
    ),
    rule("output_norm.weight", "model.norm.weight", Rows::Plain),
    rule("output.weight", "lm_head.weight", Rows::Plain),
    rule(
        "blk.{n}.attn_norm.weight",
        "model.layers.{n}.input_layernorm.weight",
        Rows::Plain,
    ),
    rule(
        "blk.{n}.attn_q.weight",
        "model.layers.{n}.self_attn.q_proj.weight",
        Rows::Plain,
    ),
    rule(
        "blk.{n}.attn_k.weight",
        "model.layers.{n}.self_attn.k_proj.weight",
        Rows::Plain,
    ),
    rule(
        "blk.{n}.attn_v.weight",
        "model.layers.{n}.self_attn.v_proj.weight",
        Rows::Plain,
    ),
    rule(
        "blk.{n}.attn_output.weight",
        "model.layers.{n}.self_attn.o_proj.weight",
        Rows::Plain,
    ),
    rule(
        "blk.{n}.attn_q.bias",
        "model.layers.{n}.self_attn.q_proj.bias",
        Rows::Plain,
    ),
    rule(
        "blk.{n}.attn_k.bias",
        "model.layers.{n}.self_attn.k_proj.bias",
        Rows::Plain,
    ),
    rule(
        "blk.{n}.attn_v.bias",
        "model.layers.{n}.self_attn.v_proj.bias",
        Rows::Plain,
    ),
    rule(
        "blk.{n}.ffn_norm.weight",
        "model.layers.{n}.post_attention_layernorm.weight",
        Rows::Plain,
    ),
    rule(
        "blk.{n}.ffn_gate.weight",
        "model.layers.{n}.mlp.gate_proj.weight",
        Rows::Plain,
    ),
    rule(
        "blk.{n}.ffn_up.weight",
        "model.layers.{n}.mlp.up_proj.weight",
        Rows::Plain,
    ),
    rule(
        "blk.{n}.ffn_down.weight",
        "model.layers.{n}.mlp.down_proj.weight",
        Rows::Plain,
    ),
];

/// Matches `name` against `pattern` (with one optional `{n}`), giving the layer index.
fn match_pattern(pattern: &str, name: &str) -> Option<Option<usize>> {
    match pattern.split_once("{n}") {
        None => (pattern == name).then_some(None),
        Some((pre, post)) => {
            let mid = name.strip_prefix(pre)?.strip_suffix(post)?;
            let ok = !mid.is_empty() && mid.bytes().all(|b| b.is_ascii_digit());
            ok.then(|| mid.parse().ok()).flatten().map(Some)
        }
    }
}

/// The Hugging Face name of GGUF tensor `name` in architecture `arch`, if the table has it.
pub fn hf_name(arch: Arch, name: &str) -> Option<String> {
    find(arch, name).map(|(hf, _)| hf)
}

fn find(arch: Arch, name: &str) -> Option<(String, Rows)> {
    arch.table().iter().find_map(|r| {
        let layer = match_pattern(r.gguf, name)?;
        let hf = match layer {
            Some(n) => r.hf.replace("{n}", &n.to_string()),
            None => r.hf.to_string(),
        };
        Some((hf, r.rows))
    })
}

/// The architecture of a GGUF file, or an error naming it when Kiln has no table for it.
pub fn arch_of(file: &GgufFile) -> Result<Arch, WeightError> {
    let name = file.require_str("general.architecture")?;
    Arch::from_name(name).ok_or_else(|| WeightError::Metadata {
        file: file.name().to_string(),
        key: "general.architecture".into(),
        what: format!("`{name}` is not a Llama-family architecture Kiln supports (llama, qwen2)"),
    })
}

/// Loaded weights: Hugging Face name and tensor (bytes shared with the file, except the
/// un-permuted Q/K rows), plus the file's tensors the table does not know.
pub struct GgufWeights {
    /// `(hf_name, tensor)` in file order.
    pub tensors: Vec<(String, WeightTensor)>,
    /// Names of tensors in the file that no rule maps (not used by the model).
    pub unmapped: Vec<String>,
}

/// Maps every tensor of `file` to its Hugging Face name, undoing the rotary permutation.
pub fn load_weights(file: &GgufFile, cfg: &LlamaConfig) -> Result<GgufWeights, WeightError> {
    let arch = arch_of(file)?;
    let mut tensors = Vec::new();
    let mut unmapped = Vec::new();
    for info in &file.tensors {
        let Some((hf, rows)) = find(arch, &info.name) else {
            unmapped.push(info.name.clone());
            continue;
        };
        let mut t = file.tensor(&info.name)?;
        let heads = match rows {
            Rows::Query => cfg.num_attention_heads,
            Rows::Key => cfg.num_key_value_heads,
            Rows::Plain => 0,
        };
        if arch.permuted() && heads > 0 {
            t.bytes = unpermute_rows(&t, heads)?;
        }
        t.name = info.name.clone();
        tensors.push((hf, t));
    }
    Ok(GgufWeights { tensors, unmapped })
}

/// Undoes llama.cpp's rotary permutation of the rows (dim 0) of `t`: within each of `heads`
/// heads of `d` rows, file row `2i + j` is Hugging Face row `j * d/2 + i`.
fn unpermute_rows(t: &WeightTensor, heads: usize) -> Result<WeightBytes, WeightError> {
    let rows = t.shape.first().copied().unwrap_or(0);
    let bad = |why: String| WeightError::Shape {
        tensor: t.name.clone(),
        expected: why,
        got: format!("{}{:?}", t.dtype, t.shape),
    };
    if heads == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
        return Err(bad(format!(
            "rows divisible into {heads} heads of an even size (rotary permutation)"
        )));
    }
    let bytes = t.bytes.as_slice();
    let row_bytes = bytes.len() / rows;
    if row_bytes * rows != bytes.len() {
        return Err(bad("whole rows".into()));
    }
    let d = rows / heads;
    let mut out = vec![0u8; bytes.len()];
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..d / 2 {
                let dst = h * d + j * (d / 2) + i;
                let src = h * d + 2 * i + j;
                out[dst * row_bytes..(dst + 1) * row_bytes]
                    .copy_from_slice(&bytes[src * row_bytes..(src + 1) * row_bytes]);
            }
        }
    }
    Ok(WeightBytes::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::DType;

    #[test]
    fn names_map_with_layer_numbers() {
        assert_eq!(
            hf_name(Arch::Llama, "blk.12.attn_q.weight").as_deref(),
            Some("model.layers.12.self_attn.q_proj.weight")
        );
        assert_eq!(
            hf_name(Arch::Qwen2, "output_norm.weight").as_deref(),
            Some("model.norm.weight")
        );
        assert_eq!(hf_name(Arch::Llama, "blk.x.attn_q.weight"), None);
        assert_eq!(hf_name(Arch::Llama, "blk..attn_q.weight"), None);
        assert_eq!(hf_name(Arch::Qwen2, "blk.0.attn_output.bias"), None);
    }

    /// The permutation llama.cpp's converter applies, written as it is described there
    /// (reshape to `[heads, 2, d/2, ...]`, swap axes 1 and 2), then undone.
    #[test]
    fn unpermute_inverts_the_converter() {
        let (heads, d, cols) = (3, 8, 2);
        let rows = heads * d;
        let hf: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
        let mut file = vec![0f32; rows * cols];
        for h in 0..heads {
            for j in 0..2 {
                for i in 0..d / 2 {
                    let src = h * d + j * (d / 2) + i; // [h, j, i]
                    let dst = h * d + i * 2 + j; // [h, i, j]
                    file[dst * cols..(dst + 1) * cols]
                        .copy_from_slice(&hf[src * cols..(src + 1) * cols]);
                }
            }
        }
        let bytes: Vec<u8> = file.iter().flat_map(|x| x.to_le_bytes()).collect();
        let t = WeightTensor {
            name: "q".into(),
            dtype: DType::F32,
            shape: vec![rows, cols],
            bytes: WeightBytes::from_vec(bytes),
        };
        let back = unpermute_rows(&t, heads).unwrap();
        let back: Vec<f32> = back
            .as_slice()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(back, hf);
        let odd = WeightTensor {
            shape: vec![rows, cols],
            ..t
        };
        assert!(unpermute_rows(&odd, 5).is_err());
    }
}
