//! Code generation for `#[kiln::model]`.

use crate::attrs::{parse_field_attr, FieldAttr, FieldKind, ModelArgs, ShapeExpr, KINDS};
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Fields, GenericArgument, Ident, PathArguments, Type};

/// The path through which generated code reaches `kiln-nn`: `::kiln::nn` for users of the
/// facade crate, `::kiln_nn` for crates depending on it directly, `crate` inside it.
fn nn_path() -> syn::Result<TokenStream> {
    use proc_macro_crate::{crate_name, FoundCrate};
    if let Ok(found) = crate_name("kiln") {
        return Ok(match found {
            FoundCrate::Itself => quote!(crate::nn),
            FoundCrate::Name(n) => {
                let n = format_ident!("{n}");
                quote!(::#n::nn)
            }
        });
    }
    match crate_name("kiln-nn") {
        Ok(FoundCrate::Itself) => Ok(quote!(crate)),
        Ok(FoundCrate::Name(n)) => {
            let n = format_ident!("{n}");
            Ok(quote!(::#n))
        }
        Err(_) => Err(syn::Error::new(
            Span::call_site(),
            "#[kiln::model] needs the `kiln` crate (or `kiln-nn`) as a dependency",
        )),
    }
}

/// How a field's type wraps its element: `T`, `Option<T>` or `Vec<T>`.
enum Wrap<'a> {
    Plain(&'a Type),
    Option(&'a Type),
    Vec(&'a Type),
}

fn wrap(ty: &Type) -> Wrap<'_> {
    if let Type::Path(p) = ty {
        if let Some(seg) = p.path.segments.last() {
            if let PathArguments::AngleBracketed(args) = &seg.arguments {
                if let Some(GenericArgument::Type(inner)) = args.args.first() {
                    if seg.ident == "Option" {
                        return Wrap::Option(inner);
                    }
                    if seg.ident == "Vec" {
                        return Wrap::Vec(inner);
                    }
                }
            }
        }
    }
    Wrap::Plain(ty)
}

fn is_named(ty: &Type, name: &str) -> bool {
    matches!(ty, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == name && s.arguments.is_empty()))
}

struct Field<'a> {
    ident: &'a Ident,
    ty: &'a Type,
    attr: FieldAttr,
    /// The state_dict segment.
    segment: String,
}

pub fn model(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let input: syn::DeriveInput = syn::parse2(item)?;
    let mut strukt: syn::ItemStruct = match &input.data {
        syn::Data::Struct(_) => syn::parse2(quote!(#input))?,
        syn::Data::Enum(e) => {
            return Err(syn::Error::new(
                e.enum_token.span,
                "#[kiln::model] works on structs with named fields, not enums",
            ))
        }
        syn::Data::Union(u) => {
            return Err(syn::Error::new(
                u.union_token.span,
                "#[kiln::model] works on structs with named fields, not unions",
            ))
        }
    };
    let args = ModelArgs::parse(args)?;
    if !strukt.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &strukt.generics,
            "#[kiln::model] does not support generic structs yet",
        ));
    }
    let Fields::Named(named) = &mut strukt.fields else {
        return Err(syn::Error::new_spanned(
            &strukt.fields,
            "#[kiln::model] needs named fields (each one becomes a state_dict name)",
        ));
    };
    let krate = nn_path()?;

    // Parse and strip the kind attributes.
    let mut parsed = Vec::new();
    let mut errors: Option<syn::Error> = None;
    let push_err = |e: syn::Error, errors: &mut Option<syn::Error>| match errors {
        Some(all) => all.combine(e),
        None => *errors = Some(e),
    };
    for field in named.named.iter_mut() {
        let ident = field.ident.as_ref().expect("named fields have names");
        let (kind_attrs, rest): (Vec<_>, Vec<_>) = field
            .attrs
            .drain(..)
            .partition(|a| KINDS.iter().any(|k| a.path().is_ident(k)));
        field.attrs = rest;
        match kind_attrs.as_slice() {
            [] => push_err(
                syn::Error::new(
                    ident.span(),
                    format!("field `{ident}` needs one of #[param], #[buffer], #[state], #[module] or #[config]"),
                ),
                &mut errors,
            ),
            [attr] => match parse_field_attr(attr) {
                Ok(attr) => parsed.push((ident.clone(), field.ty.clone(), attr)),
                Err(e) => push_err(e, &mut errors),
            },
            [_, second, ..] => push_err(
                syn::Error::new_spanned(second, format!("field `{ident}` has more than one kind attribute")),
                &mut errors,
            ),
        }
    }
    if let Some(e) = errors {
        return Err(e);
    }

    let fields: Vec<Field> = parsed
        .iter()
        .map(|(ident, ty, attr)| Field {
            ident,
            ty,
            segment: attr
                .name
                .as_ref()
                .map(|s| s.value())
                .unwrap_or_else(|| ident.to_string().trim_start_matches("r#").to_string()),
            attr: attr.clone(),
        })
        .collect();

    check_fields(&fields)?;

    // The hidden mode flag.
    named.named.push(syn::parse_quote! {
        #[doc(hidden)]
        pub __kiln_training: bool
    });

    let name = &strukt.ident;
    let config = &args.config;
    let inits = fields.iter().map(|f| init(f, &krate));
    let visit = fields.iter().map(|f| visit_params(f, &krate, false));
    let visit_mut = fields.iter().map(|f| visit_params(f, &krate, true));
    let visit_states = fields.iter().map(|f| visit_states(f, &krate));
    let set_training = fields.iter().filter_map(|f| {
        let id = f.ident;
        matches!(f.attr.kind, FieldKind::Module { .. }).then(|| match wrap(f.ty) {
            Wrap::Plain(_) => quote!(#krate::Module::set_training(&mut self.#id, training);),
            _ => {
                quote!(for m in self.#id.iter_mut() { #krate::Module::set_training(m, training); })
            }
        })
    });

    Ok(quote! {
        #strukt

        impl #krate::Module for #name {
            type Config = #config;

            #[allow(unused_variables, clippy::redundant_clone, clippy::unnecessary_cast)]
            fn build(cfg: &#config, prefix: &str) -> Self {
                Self {
                    #(#inits)*
                    __kiln_training: false,
                }
            }

            #[allow(unused_variables)]
            fn visit_params(&self, f: &mut dyn FnMut(&#krate::Param)) {
                #(#visit)*
            }

            #[allow(unused_variables)]
            fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut #krate::Param)) {
                #(#visit_mut)*
            }

            #[allow(unused_variables)]
            fn visit_states(&self, f: &mut dyn FnMut(&#krate::StateVar)) {
                #(#visit_states)*
            }

            fn set_training(&mut self, training: bool) {
                self.__kiln_training = training;
                #(#set_training)*
            }

            fn is_training(&self) -> bool {
                self.__kiln_training
            }
        }

        impl #name {
            /// Builds the model from its config (root: names without a prefix).
            pub fn new(cfg: &#config) -> Self {
                <Self as #krate::Module>::build(cfg, "")
            }
        }
    })
}

/// Type and attribute combinations, and duplicate names.
fn check_fields(fields: &[Field]) -> syn::Result<()> {
    let mut seen = std::collections::HashMap::new();
    for f in fields {
        let ty = f.ty;
        let err = |msg: String| Err(syn::Error::new(ty.span(), msg));
        match (&f.attr.kind, wrap(ty)) {
            (FieldKind::Param { when: None, .. }, Wrap::Plain(t)) if is_named(t, "Param") => {}
            (FieldKind::Param { when: Some(_), .. }, Wrap::Option(t)) if is_named(t, "Param") => {}
            (FieldKind::Param { when: None, .. }, Wrap::Option(t)) if is_named(t, "Param") => {
                return err(
                    "an Option<Param> field needs `when = <bool expression using cfg>`".into(),
                )
            }
            (FieldKind::Param { when: Some(_), .. }, _) => {
                return err("`when` needs the field type Option<Param>".into())
            }
            (FieldKind::Param { buffer, .. }, _) => {
                let k = if *buffer { "buffer" } else { "param" };
                return err(format!(
                    "a #[{k}] field must have type Param (or Option<Param> with `when`)"
                ));
            }
            (FieldKind::State { .. }, Wrap::Plain(t)) if is_named(t, "StateVar") => {}
            (FieldKind::State { .. }, _) => {
                return err("a #[state] field must have type StateVar".into())
            }
            (
                FieldKind::Module {
                    count: Some(_),
                    when: None,
                    ..
                },
                Wrap::Vec(_),
            ) => {}
            (
                FieldKind::Module {
                    count: None,
                    when: Some(_),
                    ..
                },
                Wrap::Option(_),
            ) => {}
            (
                FieldKind::Module {
                    count: None,
                    when: None,
                    ..
                },
                Wrap::Plain(_),
            ) => {}
            (FieldKind::Module { count: Some(_), .. }, _) => {
                return err("`count` needs the field type Vec<Module> (and no `when`)".into())
            }
            (FieldKind::Module { when: Some(_), .. }, _) => {
                return err("`when` needs the field type Option<Module>".into())
            }
            (FieldKind::Module { .. }, _) => {
                return err("a Vec or Option of modules needs `count = ...` or `when = ...`".into())
            }
            (FieldKind::Config { .. }, _) => continue,
        }
        if f.segment.is_empty() {
            if matches!(f.attr.kind, FieldKind::Module { .. }) {
                // A flattened sub-module: its own names are checked where it is defined.
                continue;
            }
            return Err(syn::Error::new(
                f.attr.name.as_ref().map_or(f.ident.span(), |n| n.span()),
                "an empty `name` is only allowed on #[module] fields (it flattens the sub-module's names into this one's)",
            ));
        }
        if let Some(prev) = seen.insert(f.segment.clone(), f.ident) {
            return Err(syn::Error::new(
                f.attr.name.as_ref().map_or(f.ident.span(), |n| n.span()),
                format!(
                    "duplicate state_dict name `{}` (also used by field `{prev}`)",
                    f.segment
                ),
            ));
        }
    }
    Ok(())
}

fn shape_tokens(shape: &ShapeExpr, krate: &TokenStream) -> TokenStream {
    match shape {
        ShapeExpr::List(dims) => {
            quote!(#krate::__private::Shape(vec![#(#krate::__private::Dim::from(#dims)),*]))
        }
        ShapeExpr::Dims(e) => quote!(#krate::__private::Shape::new(#e)),
    }
}

fn init(f: &Field, krate: &TokenStream) -> TokenStream {
    let id = f.ident;
    let seg = &f.segment;
    let span = f.ty.span();
    match &f.attr.kind {
        FieldKind::Param {
            buffer,
            persistent,
            shape,
            dtype,
            when,
        } => {
            let shape = shape_tokens(shape, krate);
            let dtype = dtype
                .as_ref()
                .map_or_else(|| quote!(#krate::__private::DType::F32), |d| quote!(#d));
            let make = if *buffer {
                quote_spanned!(span=> #krate::Param::buffer(format!("{prefix}{}", #seg), #shape, #dtype, #persistent))
            } else {
                quote_spanned!(span=> #krate::Param::new(format!("{prefix}{}", #seg), #shape, #dtype))
            };
            match when {
                Some(cond) => quote!(#id: if #cond { Some(#make) } else { None },),
                None => quote!(#id: #make,),
            }
        }
        FieldKind::State { shape, dtype } => {
            let shape = shape_tokens(shape, krate);
            let dtype = dtype
                .as_ref()
                .map_or_else(|| quote!(#krate::__private::DType::F32), |d| quote!(#d));
            quote_spanned!(span=> #id: #krate::StateVar::new(format!("{prefix}{}", #seg), #shape, #dtype),)
        }
        FieldKind::Module {
            config,
            count,
            when,
        } => {
            // `name = ""` puts the sub-module's names straight under this module's prefix.
            let child = if seg.is_empty() {
                quote!(format!("{prefix}"))
            } else {
                quote!(format!("{prefix}{}.", #seg))
            };
            match (wrap(f.ty), count, when) {
                (Wrap::Vec(inner), Some(count), _) => quote_spanned! {span=>
                    #id: (0..(#count) as usize)
                        .map(|index| <#inner as #krate::Module>::build(&(#config), &format!("{}{index}.", #child)))
                        .collect(),
                },
                (Wrap::Option(inner), _, Some(cond)) => quote_spanned! {span=>
                    #id: if #cond {
                        Some(<#inner as #krate::Module>::build(&(#config), &#child))
                    } else {
                        None
                    },
                },
                (_, _, _) => {
                    let ty = f.ty;
                    quote_spanned!(span=> #id: <#ty as #krate::Module>::build(&(#config), &#child),)
                }
            }
        }
        FieldKind::Config { value } => quote_spanned!(span=> #id: #value,),
    }
}

fn visit_params(f: &Field, krate: &TokenStream, mutable: bool) -> TokenStream {
    let id = f.ident;
    let (method, iter, amp) = if mutable {
        (quote!(visit_params_mut), quote!(iter_mut), quote!(&mut))
    } else {
        (quote!(visit_params), quote!(iter), quote!(&))
    };
    match (&f.attr.kind, wrap(f.ty)) {
        (FieldKind::Param { .. }, Wrap::Option(_)) => {
            quote!(if let Some(p) = #amp self.#id { f(p); })
        }
        (FieldKind::Param { .. }, _) => quote!(f(#amp self.#id);),
        (FieldKind::Module { .. }, Wrap::Plain(_)) => {
            quote!(#krate::Module::#method(#amp self.#id, f);)
        }
        (FieldKind::Module { .. }, _) => {
            quote!(for m in self.#id.#iter() { #krate::Module::#method(m, f); })
        }
        _ => quote!(),
    }
}

fn visit_states(f: &Field, krate: &TokenStream) -> TokenStream {
    let id = f.ident;
    match (&f.attr.kind, wrap(f.ty)) {
        (FieldKind::State { .. }, _) => quote!(f(&self.#id);),
        (FieldKind::Module { .. }, Wrap::Plain(_)) => {
            quote!(#krate::Module::visit_states(&self.#id, f);)
        }
        (FieldKind::Module { .. }, _) => {
            quote!(for m in self.#id.iter() { #krate::Module::visit_states(m, f); })
        }
        _ => quote!(),
    }
}
