//! The ahead-of-time object path: `emit_object` produces a relocatable ELF object with one
//! global function symbol per kernel (identical kernels aliased), position-independent
//! relocations, and the scalar helpers left undefined for the final link.

use kiln_compiler::backend::cpu::object::emit_object;
use kiln_compiler::backend::cpu::CodegenError;
use kiln_compiler::compile;
use kiln_ir::{DType, Dim, Graph, Scalar, Shape};
use object::{
    Architecture, BinaryFormat, Object, ObjectKind, ObjectSection, ObjectSymbol, RelocationTarget,
    SymbolKind, SymbolSection,
};
use std::collections::HashMap;

/// Two identical elementwise kernels (tanh of two inputs: one normalized form), a matmul with
/// an epilogue, and an integer floor division (a call to `kiln_binary_i64`).
fn graph() -> Graph {
    let mut g = Graph::new();
    let nd = || Shape::new([Dim::from("n"), Dim::from(8)]);
    let x1 = g.input("x1", DType::F32, nd()).unwrap();
    let x2 = g.input("x2", DType::F32, nd()).unwrap();
    let t1 = g.tanh(x1).unwrap();
    let t2 = g.tanh(x2).unwrap();
    g.set_output("t1", t1).unwrap();
    g.set_output("t2", t2).unwrap();
    let w = g.param("w", DType::F32, Shape::new([5, 8])).unwrap();
    let y = g.matmul_t(x1, w, false, true).unwrap();
    let y = g.exp(y).unwrap();
    g.set_output("y", y).unwrap();
    let i = g
        .input("i", DType::I32, Shape::new([Dim::from("n")]))
        .unwrap();
    let three = g.scalar(Scalar::Int(3), DType::I32).unwrap();
    let three = g
        .broadcast_to(three, &Shape::new([Dim::from("n")]))
        .unwrap();
    let q = g.div(i, three).unwrap();
    g.set_output("q", q).unwrap();
    g
}

#[test]
fn object_is_a_relocatable_elf_with_every_kernel_symbol() {
    let c = compile(&graph(), None).unwrap();
    let kernels = &c.schedule.kernels;
    assert!(kernels.len() >= 4, "{} kernels", kernels.len());
    let code = emit_object(kernels, "test_model").unwrap();
    assert_eq!(code.symbols.len(), kernels.len());
    for (i, s) in code.symbols.iter().enumerate() {
        assert_eq!(s, &format!("test_model_k{i}"));
    }
    assert_eq!(&code.bytes[..4], b"\x7fELF");

    let file = object::File::parse(&*code.bytes).unwrap();
    assert_eq!(file.format(), BinaryFormat::Elf);
    assert_eq!(file.kind(), ObjectKind::Relocatable);
    if cfg!(target_arch = "x86_64") {
        assert_eq!(file.architecture(), Architecture::X86_64);
    }
    // Every kernel symbol: a global, defined function in an executable section.
    let mut address: HashMap<String, (Option<object::SectionIndex>, u64)> = HashMap::new();
    for sym in file.symbols() {
        let name = sym.name().unwrap().to_string();
        if name.starts_with("test_model_k") {
            assert!(sym.is_global(), "{name} is not global");
            assert!(sym.is_definition(), "{name} is not defined");
            assert_eq!(sym.kind(), SymbolKind::Text, "{name}");
            assert!(sym.size() > 0, "{name} is empty");
            let SymbolSection::Section(section) = sym.section() else {
                panic!("{name} has no section");
            };
            let sec = file.section_by_index(section).unwrap();
            assert_eq!(sec.kind(), object::SectionKind::Text, "{name}");
            assert!(
                address
                    .insert(name.clone(), (Some(section), sym.address()))
                    .is_none(),
                "{name} defined twice"
            );
        }
    }
    for s in &code.symbols {
        assert!(address.contains_key(s), "{s} missing from the symbol table");
    }
    // The two tanh kernels share one body: equal normalized forms, one address.
    let norm: Vec<String> = kernels
        .iter()
        .map(|k| kiln_compiler::backend::cpu::normalize::normalized(k).to_string())
        .collect();
    let mut shared = 0;
    for i in 0..kernels.len() {
        for j in 0..i {
            let same = address[&code.symbols[i]] == address[&code.symbols[j]];
            assert_eq!(same, norm[i] == norm[j], "kernels {j} and {i}");
            shared += usize::from(same);
        }
    }
    assert!(shared >= 1, "expected the two tanh kernels to share code");

    // The helpers are undefined references, resolved at link time.
    let undefined: Vec<String> = file
        .symbols()
        .filter(|s| s.is_undefined())
        .map(|s| s.name().unwrap().to_string())
        .collect();
    // (tanh is inline code; integer floor division calls a helper.)
    assert!(
        undefined.iter().any(|u| u == "kiln_binary_i64"),
        "kiln_binary_i64 not referenced: {undefined:?}"
    );

    // Position-independent: no absolute relocations in any section (the object has no
    // writable data; in code or `.eh_frame` they would need text relocations in a PIE, which
    // rust-lld rejects and GNU ld warns about).
    for sec in file.sections() {
        for (offset, r) in sec.relocations() {
            if let RelocationTarget::Symbol(_) = r.target() {
                assert!(
                    r.kind() != object::RelocationKind::Absolute,
                    "absolute relocation at {}+{offset:#x}: {r:?}",
                    sec.name().unwrap_or("?")
                );
            }
        }
    }
}

#[test]
fn no_kernels_is_an_empty_object() {
    let code = emit_object(&[], "empty").unwrap();
    assert!(code.symbols.is_empty());
    let file = object::File::parse(&*code.bytes).unwrap();
    assert_eq!(file.kind(), ObjectKind::Relocatable);
}

#[test]
fn prefix_must_be_a_c_identifier() {
    let c = compile(&graph(), None).unwrap();
    for bad in ["", "9lives", "my-model", "a b"] {
        let e = emit_object(&c.schedule.kernels, bad).unwrap_err();
        assert!(
            matches!(&e, CodegenError::Unsupported { message, .. } if message.contains("C identifier")),
            "{bad}: {e}"
        );
    }
}
