//! Parsing the macro's arguments and the field attributes.

use proc_macro2::{Span, TokenStream};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, LitStr, Token};

/// `key = value` pairs, or bare flags, inside an attribute's parentheses.
pub struct KeyValues(pub Vec<(Ident, Option<Expr>)>);

impl Parse for KeyValues {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let items = Punctuated::<KeyValue, Token![,]>::parse_terminated(input)?;
        Ok(KeyValues(
            items.into_iter().map(|kv| (kv.key, kv.value)).collect(),
        ))
    }
}

struct KeyValue {
    key: Ident,
    value: Option<Expr>,
}

impl Parse for KeyValue {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let key: Ident = input.parse()?;
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Some(input.parse()?)
        } else {
            None
        };
        Ok(KeyValue { key, value })
    }
}

/// The model-level arguments: `#[kiln::model(config = Type)]`.
pub struct ModelArgs {
    pub config: syn::Type,
}

impl ModelArgs {
    pub fn parse(args: TokenStream) -> syn::Result<ModelArgs> {
        let kvs: KeyValues = syn::parse2(args.clone())?;
        let mut config = None;
        for (key, value) in kvs.0 {
            match (key.to_string().as_str(), value) {
                ("config", Some(Expr::Path(p))) => {
                    config = Some(syn::Type::Path(syn::TypePath {
                        qself: p.qself,
                        path: p.path,
                    }))
                }
                // `config = ()`: a model without configuration.
                ("config", Some(Expr::Tuple(t))) if t.elems.is_empty() => {
                    config = Some(syn::parse_quote!(()))
                }
                ("config", _) => {
                    return Err(syn::Error::new(
                        key.span(),
                        "expected `config = ConfigType`",
                    ))
                }
                (other, _) => {
                    return Err(syn::Error::new(
                        key.span(),
                        format!(
                        "unknown #[kiln::model] argument `{other}`; expected `config = ConfigType`"
                    ),
                    ))
                }
            }
        }
        match config {
            Some(config) => Ok(ModelArgs { config }),
            None => Err(syn::Error::new(
                Span::call_site(),
                "#[kiln::model] needs the config type: #[kiln::model(config = MyConfig)] (use `()` for none)",
            )),
        }
    }
}

/// A `shape = ...` value: a list of dims (`[cfg.out, cfg.in]`), or any other expression that
/// yields dims (`cfg.normalized_shape.clone()`, an iterator of things convertible to `Dim`).
#[derive(Clone)]
pub enum ShapeExpr {
    /// `[a, b, ...]`.
    List(Vec<Expr>),
    /// An expression whose value is an iterable of dims.
    Dims(Expr),
}

/// What a field is.
#[derive(Clone)]
pub enum FieldKind {
    /// `#[param(...)]` or `#[buffer(...)]`.
    Param {
        buffer: bool,
        persistent: Expr,
        shape: ShapeExpr,
        dtype: Option<Expr>,
        when: Option<Expr>,
    },
    /// `#[state(...)]`.
    State {
        shape: ShapeExpr,
        dtype: Option<Expr>,
    },
    /// `#[module(...)]`.
    Module {
        config: Expr,
        count: Option<Expr>,
        when: Option<Expr>,
    },
    /// `#[config(expr)]`.
    Config { value: Expr },
}

/// A field's parsed attribute.
#[derive(Clone)]
pub struct FieldAttr {
    pub kind: FieldKind,
    /// `name = "..."` override of the state_dict segment (`""` on a `#[module]` flattens the
    /// sub-module's names into this module's prefix).
    pub name: Option<LitStr>,
}

pub const KINDS: [&str; 5] = ["param", "buffer", "state", "module", "config"];

/// Parses the kind attribute of one field.
pub fn parse_field_attr(attr: &syn::Attribute) -> syn::Result<FieldAttr> {
    let kind = attr
        .path()
        .get_ident()
        .map(|i| i.to_string())
        .unwrap_or_default();
    if kind == "config" {
        let value: Expr = attr
            .parse_args()
            .map_err(|e| syn::Error::new(e.span(), "expected #[config(expression using `cfg`)]"))?;
        return Ok(FieldAttr {
            kind: FieldKind::Config { value },
            name: None,
        });
    }
    let kvs: KeyValues = match &attr.meta {
        syn::Meta::List(list) => syn::parse2(list.tokens.clone())?,
        _ => KeyValues(Vec::new()),
    };
    let allowed: &[&str] = match kind.as_str() {
        "param" => &["shape", "dtype", "when", "name"],
        "buffer" => &["shape", "dtype", "when", "name", "persistent"],
        "state" => &["shape", "dtype", "name"],
        _ => &["config", "count", "when", "name"],
    };
    let mut get = std::collections::HashMap::new();
    for (key, value) in kvs.0 {
        let k = key.to_string();
        if !allowed.contains(&k.as_str()) {
            return Err(syn::Error::new(
                key.span(),
                format!(
                    "unknown key `{k}` in #[{kind}]; expected one of: {}",
                    allowed.join(", ")
                ),
            ));
        }
        let Some(value) = value else {
            return Err(syn::Error::new(
                key.span(),
                format!("`{k}` needs a value: `{k} = ...`"),
            ));
        };
        if get.insert(k.clone(), (key.clone(), value)).is_some() {
            return Err(syn::Error::new(key.span(), format!("`{k}` is given twice")));
        }
    }
    let name = match get.remove("name") {
        Some((
            _,
            Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }),
        )) => Some(s),
        Some((key, _)) => {
            return Err(syn::Error::new(
                key.span(),
                "`name` must be a string literal",
            ))
        }
        None => None,
    };
    let shape =
        |get: &mut std::collections::HashMap<String, (Ident, Expr)>| -> syn::Result<ShapeExpr> {
            match get.remove("shape") {
                Some((_, Expr::Array(a))) => Ok(ShapeExpr::List(a.elems.into_iter().collect())),
                Some((_, e)) => Ok(ShapeExpr::Dims(e)),
                None => Err(syn::Error::new_spanned(
                    attr,
                    format!("#[{kind}] needs `shape = [...]`"),
                )),
            }
        };
    let kind = match kind.as_str() {
        "param" | "buffer" => FieldKind::Param {
            buffer: kind == "buffer",
            shape: shape(&mut get)?,
            dtype: get.remove("dtype").map(|(_, e)| e),
            when: get.remove("when").map(|(_, e)| e),
            persistent: get
                .remove("persistent")
                .map(|(_, e)| e)
                .unwrap_or_else(|| syn::parse_quote!(true)),
        },
        "state" => FieldKind::State {
            shape: shape(&mut get)?,
            dtype: get.remove("dtype").map(|(_, e)| e),
        },
        _ => FieldKind::Module {
            config: get.remove("config").map(|(_, e)| e).ok_or_else(|| {
                syn::Error::new_spanned(attr, "#[module] needs `config = <expression using cfg>`")
            })?,
            count: get.remove("count").map(|(_, e)| e),
            when: get.remove("when").map(|(_, e)| e),
        },
    };
    Ok(FieldAttr { kind, name })
}
