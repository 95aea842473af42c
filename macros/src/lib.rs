//! The `#[kiln::model]` attribute macro.
//!
//! It turns a struct whose fields are annotated as parameters, buffers, state, sub-modules or
//! config values into a `Module`: a constructor from the config, PyTorch `state_dict` names,
//! parameter visitors, train/eval mode and freezing. See `docs/dsl.md` for the syntax.

mod attrs;
mod expand;

use proc_macro::TokenStream;

/// Makes a struct a Kiln model. See the crate docs and `docs/dsl.md`.
///
/// ```ignore
/// #[kiln::model(config = LinearConfig)]
/// pub struct Linear {
///     #[param(shape = [cfg.out_features, cfg.in_features])]
///     pub weight: Param,
///     #[param(shape = [cfg.out_features], when = cfg.bias)]
///     pub bias: Option<Param>,
/// }
/// ```
#[proc_macro_attribute]
pub fn model(args: TokenStream, item: TokenStream) -> TokenStream {
    match expand::model(args.into(), item.into()) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}
