//! Misuse of `#[kiln::model]` is a compile error pointing at the offending field or attribute.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
