//! JIT compilation of kernels into executable memory, with a process-wide code cache keyed
//! by (normalized kernel, target): a kernel compiled once is never compiled again, whichever
//! schedule or layer it comes from.

use super::codegen::{define_kernel, vector, CodegenError};
use super::normalize::normalized;
use super::parallel::parallel_extent;
use super::scalar;
use crate::loop_ir::Kernel;
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};
use kiln_ir::Dim;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The machine-code entry point of a kernel (see [`super::codegen`] for the ABI).
pub type KernelFn = unsafe extern "C" fn(*const *mut u8, *const i64, i64, i64, *mut i64);

/// A compiled kernel.
#[derive(Clone, Debug)]
pub struct JitKernel {
    /// Entry point. The code lives as long as the process (the cache never frees it).
    pub entry: KernelFn,
    /// Flat trip count of the parallel nest, if the kernel has one.
    pub parallel: Option<Dim>,
}

/// The host ISA with Kiln's flags (speed-optimized, native CPU features).
pub fn host_isa() -> Result<OwnedTargetIsa, String> {
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| {
        f.set(k, v)
            .map_err(|e| format!("cranelift flag {k}={v}: {e}"))
    };
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "use_colocated_libcalls", "false")?;
    set(&mut flags, "is_pic", "false")?;
    let builder = cranelift_native::builder().map_err(|e| e.to_string())?;
    builder
        .finish(settings::Flags::new(flags))
        .map_err(|e| e.to_string())
}

/// A description of the host target for cache keys.
fn target_key() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| match host_isa() {
        Ok(isa) => format!(
            "{} {}",
            isa.triple(),
            isa.isa_flags()
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
        Err(e) => e,
    })
}

type Cache = Mutex<HashMap<(String, &'static str), Arc<JitKernel>>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Compiles `kernels` (each once: cached kernels are reused, the others compiled in one
/// module) and returns their compiled forms in order.
pub fn compile_kernels(kernels: &[Kernel]) -> Result<Vec<Arc<JitKernel>>, CodegenError> {
    let target = target_key();
    // Kernels compiled under `vector::scalar_only` are cached apart.
    let form = if vector::enabled() { "" } else { "\nscalar" };
    let keys: Vec<(String, &'static str)> = kernels
        .iter()
        .map(|k| (format!("{}{form}", normalized(k)), target))
        .collect();
    let mut todo: Vec<usize> = Vec::new();
    {
        let c = cache().lock().unwrap_or_else(|e| e.into_inner());
        for (i, key) in keys.iter().enumerate() {
            if !c.contains_key(key) && !todo.iter().any(|&j| keys[j] == *key) {
                todo.push(i);
            }
        }
    }
    if !todo.is_empty() {
        let compiled = compile_uncached(kernels, &todo)?;
        let mut c = cache().lock().unwrap_or_else(|e| e.into_inner());
        for (i, jk) in todo.iter().zip(compiled) {
            c.insert(keys[*i].clone(), Arc::new(jk));
        }
    }
    let c = cache().lock().unwrap_or_else(|e| e.into_inner());
    Ok(keys.iter().map(|k| c[k].clone()).collect())
}

/// Compiles one kernel (through the cache).
pub fn compile_kernel(kernel: &Kernel) -> Result<Arc<JitKernel>, CodegenError> {
    Ok(compile_kernels(std::slice::from_ref(kernel))?.remove(0))
}

fn compile_uncached(kernels: &[Kernel], which: &[usize]) -> Result<Vec<JitKernel>, CodegenError> {
    let err = |message: String| CodegenError::Cranelift {
        kernel: kernels[which[0]].name.clone(),
        message,
    };
    let isa = host_isa().map_err(err)?;
    let mut builder = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
    builder.symbols(scalar::symbols());
    builder.symbols(kiln_cpu_kernels::symbols());
    let mut module = JITModule::new(builder);
    let mut ids = Vec::new();
    for (n, &i) in which.iter().enumerate() {
        let k = normalized(&kernels[i]);
        // The original name (for profilers), made unique within the module.
        let name: String = kernels[i]
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        ids.push(define_kernel(&mut module, &k, &format!("kiln_{name}_{n}"))?);
    }
    module
        .finalize_definitions()
        .map_err(|e| err(e.to_string()))?;
    Ok(which
        .iter()
        .zip(ids)
        .map(|(&i, id)| {
            let code = module.get_finalized_function(id);
            // SAFETY: `code` was defined with the kernel ABI signature (`kernel_signature`)
            // and the module's memory is never freed (cranelift-jit leaks it on drop).
            let entry: KernelFn = unsafe { std::mem::transmute::<*const u8, KernelFn>(code) };
            JitKernel {
                entry,
                parallel: parallel_extent(&kernels[i]),
            }
        })
        .collect())
}
