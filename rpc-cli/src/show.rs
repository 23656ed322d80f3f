//! A description as text: `add(a: i64, b: i64) -> i64    Adds two numbers.`

use serde_reflection::{ContainerFormat, Format, VariantFormat};

use crate::description::Service;

/// The service, its methods and its types, as `rpc describe` prints them.
pub(crate) fn service(service: &Service) -> String {
    let mut out = String::new();
    out.push_str(&service.service);
    if !service.doc.is_empty() {
        out.push_str(&format!("    {}", first_line(&service.doc)));
    }
    out.push('\n');
    if let Some(reason) = &service.opaque {
        out.push_str(&format!("  ({reason})\n"));
    }
    for method in &service.methods {
        let mut args: Vec<String> = method
            .args
            .iter()
            .map(|a| format!("{}: {}", a.name, a.ty))
            .collect();
        if let Some(stream) = &method.stream_arg {
            let at = stream.position.min(args.len());
            args.insert(at, format!("{}: Streaming<{}>", stream.name, stream.ty));
        }
        let signature = format!(
            "{}({}) -> {}",
            method.name,
            args.join(", "),
            method.returns.ty
        );
        out.push_str(&format!("  {signature:<48}  {}\n", first_line(&method.doc)));
        if let Some(reason) = &method.opaque {
            out.push_str(&format!("    ({reason})\n"));
        }
    }
    match service.registry() {
        Ok(registry) => {
            for (name, container) in &registry {
                // serde's own `Result` reads as the Rust type does.
                if name == "Result" {
                    continue;
                }
                out.push_str(&format!("{name} = {}\n", container_text(container)));
            }
        }
        Err(reason) => out.push_str(&format!("({reason})\n")),
    }
    out
}

fn first_line(doc: &str) -> &str {
    doc.lines().next().unwrap_or_default()
}

fn container_text(container: &ContainerFormat) -> String {
    match container {
        ContainerFormat::UnitStruct => "struct".to_owned(),
        ContainerFormat::NewTypeStruct(f) => format!("struct({})", text(f)),
        ContainerFormat::TupleStruct(fs) => format!("struct({})", list(fs)),
        ContainerFormat::Struct(fields) => {
            let fields: Vec<_> = fields
                .iter()
                .map(|f| format!("{}: {}", f.name, text(&f.value)))
                .collect();
            format!("struct {{ {} }}", fields.join(", "))
        }
        ContainerFormat::Enum(variants) => {
            let variants: Vec<_> = variants
                .values()
                .map(|v| match &v.value {
                    VariantFormat::Unit | VariantFormat::Variable(_) => v.name.clone(),
                    VariantFormat::NewType(f) => format!("{}({})", v.name, text(f)),
                    VariantFormat::Tuple(fs) => format!("{}({})", v.name, list(fs)),
                    VariantFormat::Struct(fields) => {
                        let fields: Vec<_> = fields
                            .iter()
                            .map(|f| format!("{}: {}", f.name, text(&f.value)))
                            .collect();
                        format!("{} {{ {} }}", v.name, fields.join(", "))
                    }
                })
                .collect();
            format!("enum {{ {} }}", variants.join(", "))
        }
    }
}

fn list(formats: &[Format]) -> String {
    formats.iter().map(text).collect::<Vec<_>>().join(", ")
}

/// A format as a Rust-like type.
fn text(format: &Format) -> String {
    match format {
        Format::TypeName(name) => name.clone(),
        Format::Unit => "()".to_owned(),
        Format::Str => "String".to_owned(),
        Format::Bytes => "bytes".to_owned(),
        Format::Option(f) => format!("Option<{}>", text(f)),
        Format::Seq(f) => format!("Vec<{}>", text(f)),
        Format::Map { key, value } => format!("Map<{}, {}>", text(key), text(value)),
        Format::Tuple(fs) => format!("({})", list(fs)),
        Format::TupleArray { content, size } => format!("[{}; {size}]", text(content)),
        Format::Variable(_) => "?".to_owned(),
        primitive => format!("{primitive:?}").to_lowercase(),
    }
}
