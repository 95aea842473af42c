//! Any bytes given to the GGUF reader: it must return `Ok` or `Err`, never panic, abort or
//! allocate beyond what the input can justify. On `Ok`, everything a loader would use is
//! touched: every tensor's bytes (and their conversion to a tensor) and every metadata getter.
#![no_main]

use kiln_runtime::weights::gguf::GgufFile;
use kiln_runtime::weights::FileBytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = GgufFile::parse(FileBytes::from_vec(data.to_vec()), "fuzz") else {
        return;
    };
    let mut total = 0u64;
    for t in &f.tensors {
        let w = f.tensor(&t.name).expect("a listed tensor is there");
        let bytes = w.bytes.as_slice();
        assert_eq!(bytes.len() as u64, t.len);
        total += bytes.iter().map(|&b| u64::from(b)).sum::<u64>();
        assert_eq!(w.numel(), t.shape().iter().product::<usize>());
        let _ = w.to_tensor();
    }
    std::hint::black_box(total);
    for (k, v) in &f.metadata {
        let _ = (
            v.as_i64(),
            v.as_f64(),
            v.as_bool(),
            v.as_str(),
            v.as_array(),
        );
        let _ = v.type_name();
        let _ = f.get(k);
        let _ = f.get_usize(k);
        let _ = f.get_f64(k);
        let _ = f.get_bool(k);
        let _ = f.get_str(k);
        let _ = f.get_str_array(k);
        let _ = f.get_f64_array(k);
        let _ = f.get_i64_array(k);
        let _ = f.require_usize(k);
        let _ = f.require_str(k).map(str::len);
    }
    let _ = (f.tensor_bytes(), f.name(), format!("{f:?}"));
    let _ = f.tensor("absent");
});
