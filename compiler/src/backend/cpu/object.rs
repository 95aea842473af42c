//! Ahead-of-time compilation: the kernels of a schedule in one relocatable object file.
//!
//! [`emit_object`] lowers every kernel with the same code generator as the JIT
//! ([`define_kernel`] on the [normalized](super::normalize) kernel), so a kernel's object
//! code computes exactly what its JIT code computes. Each kernel gets a global function
//! symbol `{prefix}_k{i}` (`i` its index in the slice) with the kernel ABI documented in
//! [`super::codegen`]; identical kernels (equal normalized forms) share one function body,
//! and every further symbol of that body is an alias (a second global symbol at the same
//! address).
//!
//! The object is position-independent (`is_pic`: calls to the helpers go through the GOT),
//! so it links into the position-independent executables and shared libraries that Rust and
//! gcc produce by default. It references the helpers of [`super::scalar`] by their C names
//! (`kiln_unary_f64`, ...), and may reference libm functions (`floorf`, ...) for
//! instructions the target lacks: the final program must link `kiln-compiler` (which exports
//! the helpers, `#[no_mangle]`) and the C math library (part of Rust's default link line).
//!
//! The code is generated for the host CPU (its ISA extensions included, as for the JIT):
//! an object built on one machine runs on machines with at least the same features. Use
//! [`emit_object_with_isa`] to choose another target or a baseline feature set.

use super::codegen::{define_kernel, CodegenError};
use super::normalize::normalized;
use crate::loop_ir::Kernel;
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_object::object::write::{Symbol, SymbolSection};
use cranelift_object::object::{SymbolFlags, SymbolKind};
use cranelift_object::{ObjectBuilder, ObjectModule};
use std::collections::HashMap;

/// A relocatable object file holding compiled kernels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectCode {
    /// The object file (ELF on Linux, Mach-O on macOS, COFF on Windows).
    pub bytes: Vec<u8>,
    /// The function symbol of each kernel, in the order of the kernels given.
    pub symbols: Vec<String>,
}

/// The host ISA with Kiln's flags for objects: as [`super::jit::host_isa`], but
/// position-independent.
pub fn host_object_isa() -> Result<OwnedTargetIsa, String> {
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| {
        f.set(k, v)
            .map_err(|e| format!("cranelift flag {k}={v}: {e}"))
    };
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "use_colocated_libcalls", "false")?;
    set(&mut flags, "is_pic", "true")?;
    let builder = cranelift_native::builder().map_err(|e| e.to_string())?;
    builder
        .finish(settings::Flags::new(flags))
        .map_err(|e| e.to_string())
}

/// True when `s` is a C identifier (`[A-Za-z_][A-Za-z0-9_]*`).
fn is_c_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Compiles `kernels` for the host CPU into one relocatable object; kernel `i` is the
/// function `{symbol_prefix}_k{i}`. `symbol_prefix` must be a C identifier.
pub fn emit_object(kernels: &[Kernel], symbol_prefix: &str) -> Result<ObjectCode, CodegenError> {
    let isa = host_object_isa().map_err(|message| CodegenError::Cranelift {
        kernel: "<object>".into(),
        message,
    })?;
    emit_object_with_isa(kernels, symbol_prefix, isa)
}

/// [`emit_object`] for a given target ISA (its flags should set `is_pic` for objects that
/// link into position-independent executables).
pub fn emit_object_with_isa(
    kernels: &[Kernel],
    symbol_prefix: &str,
    isa: OwnedTargetIsa,
) -> Result<ObjectCode, CodegenError> {
    let err = |kernel: &str, message: String| CodegenError::Cranelift {
        kernel: kernel.to_string(),
        message,
    };
    if !is_c_identifier(symbol_prefix) {
        return Err(CodegenError::Unsupported {
            kernel: "<object>".into(),
            message: format!("symbol prefix `{symbol_prefix}` is not a C identifier"),
        });
    }
    let symbols: Vec<String> = (0..kernels.len())
        .map(|i| format!("{symbol_prefix}_k{i}"))
        .collect();
    let mut builder = ObjectBuilder::new(
        isa,
        format!("{symbol_prefix}.o"),
        cranelift_module::default_libcall_names(),
    )
    .map_err(|e| err("<object>", e.to_string()))?;
    // One section per function lets `--gc-sections` drop kernels a program never calls.
    // No `.eh_frame`: cranelift-object writes its FDE addresses as absolute pointers
    // (R_X86_64_64 against the function symbols), which a PIE link rejects (rust-lld:
    // "relocation R_X86_64_64 cannot be used against symbol"); kernels never unwind.
    builder.per_function_section(true);
    builder.unwind_info(false);
    let mut module = ObjectModule::new(builder);
    // The first kernel of each normalized form is defined; the others alias it.
    let mut first: HashMap<String, usize> = HashMap::new();
    let mut defined = Vec::new();
    let mut aliases = Vec::new();
    for (i, k) in kernels.iter().enumerate() {
        let norm = normalized(k);
        let key = norm.to_string();
        match first.get(&key) {
            Some(&j) => aliases.push((i, j)),
            None => {
                first.insert(key, i);
                let id = define_kernel(&mut module, &norm, &symbols[i]).map_err(|e| match e {
                    // Report the kernel's own name, not the normalized one.
                    CodegenError::Unsupported { message, .. } => CodegenError::Unsupported {
                        kernel: k.name.clone(),
                        message,
                    },
                    CodegenError::Cranelift { message, .. } => err(&k.name, message),
                })?;
                defined.push((i, id));
            }
        }
    }
    let mut product = module.finish();
    let ids: HashMap<usize, _> = defined
        .iter()
        .map(|&(i, id)| (i, product.function_symbol(id)))
        .collect();
    for (i, j) in aliases {
        let target = product.object.symbol(ids[&j]);
        let (value, size, scope) = (target.value, target.size, target.scope);
        let SymbolSection::Section(section) = target.section else {
            return Err(err(
                &kernels[i].name,
                format!("symbol {} has no section", symbols[j]),
            ));
        };
        product.object.add_symbol(Symbol {
            name: symbols[i].clone().into_bytes(),
            value,
            size,
            kind: SymbolKind::Text,
            scope,
            weak: false,
            section: SymbolSection::Section(section),
            flags: SymbolFlags::None,
        });
    }
    let bytes = product.emit().map_err(|e| err("<object>", e.to_string()))?;
    Ok(ObjectCode { bytes, symbols })
}

#[cfg(test)]
mod tests {
    use super::is_c_identifier;

    #[test]
    fn c_identifiers() {
        for ok in ["a", "_", "model_1", "_K9"] {
            assert!(is_c_identifier(ok), "{ok}");
        }
        for bad in ["", "1a", "a-b", "a b", "é", "a.b"] {
            assert!(!is_c_identifier(bad), "{bad}");
        }
    }
}
