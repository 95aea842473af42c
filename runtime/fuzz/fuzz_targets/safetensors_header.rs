//! Any bytes given to the SafeTensors loader: it must return `Ok` or `Err`, never panic
//! (the `safetensors` crate's own `read_metadata` overflows on hostile offsets; the loader
//! must not). On `Ok`, every tensor is read and converted.
#![no_main]

use kiln_runtime::weights::safetensors::SafeTensorsFile;
use kiln_runtime::weights::FileBytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = SafeTensorsFile::parse(FileBytes::from_vec(data.to_vec()), "fuzz") else {
        return;
    };
    for name in f.names() {
        if let Ok(t) = f.tensor(name) {
            assert_eq!(t.name, name);
            let _ = t.to_tensor();
        }
    }
    let _ = f.metadata().map(|m| m.len());
    let _ = f.tensor("absent");
});
