//! The `#[kiln::model]` procedural macro.
//!
//! Not implemented yet: this crate exists so the workspace has its final shape.
