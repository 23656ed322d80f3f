//! Struct fields left out of a call's values. The call then claims the
//! server's schema without them (docs/PROTOCOL.md §12), so that the server
//! reads the arguments by name and fills in those fields' defaults, as it
//! does for a client built before the fields were added
//! (docs/EVOLUTION.md). The Python client does the same.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use serde_reflection::{ContainerFormat, Registry};

/// Type name -> field names.
type ByType = BTreeMap<String, BTreeSet<String>>;

/// The fields of described structs that a call's values leave out, and
/// those they give, by type name: noted while the values are checked.
#[derive(Debug, Default)]
pub(crate) struct Fields {
    omitted: RefCell<ByType>,
    given: RefCell<ByType>,
}

/// What a call that leaves fields out sends: the schema it claims and the
/// registry its values are encoded with, both without those fields.
pub(crate) struct Reduced {
    pub(crate) schema: String,
    pub(crate) registry: Registry,
}

impl Fields {
    pub(crate) fn omitted(&self, ty: &str, field: &str) {
        note(&self.omitted, ty, field);
    }

    pub(crate) fn given(&self, ty: &str, field: &str) {
        note(&self.given, ty, field);
    }

    /// The schema `schema` (the server's canonical text) and `registry`
    /// without the fields left out, or `None` if none were.
    ///
    /// # Errors
    ///
    /// A field given in one value of a type and left out of another: a
    /// call's bytes have one schema, so every value of a type has the same
    /// fields. Or a schema that does not have the type as a struct.
    pub(crate) fn reduce(
        self,
        schema: &str,
        registry: &Registry,
    ) -> Result<Option<Reduced>, String> {
        let omitted = self.omitted.into_inner();
        if omitted.is_empty() {
            return Ok(None);
        }
        let given = self.given.into_inner();
        for (ty, fields) in &omitted {
            let both: Vec<&str> = given
                .get(ty)
                .map(|g| fields.intersection(g).map(String::as_str).collect())
                .unwrap_or_default();
            if !both.is_empty() {
                return Err(format!(
                    "{ty}: field(s) {} given in some values and left out of others; \
                     a call sends every value of a type with the same fields",
                    both.join(", ")
                ));
            }
        }
        let mut text: Value = serde_json::from_str(schema)
            .map_err(|e| format!("the server's schema does not parse: {e}"))?;
        let mut registry = registry.clone();
        for (ty, fields) in &omitted {
            let described = text
                .get_mut("types")
                .and_then(|types| types.get_mut(ty))
                .and_then(|container| container.get_mut("STRUCT"))
                .and_then(Value::as_array_mut)
                .ok_or_else(|| format!("the server's schema has no struct `{ty}`"))?;
            described.retain(|field| {
                field
                    .as_object()
                    .and_then(|f| f.keys().next())
                    .is_none_or(|name| !fields.contains(name))
            });
            if let Some(ContainerFormat::Struct(described)) = registry.get_mut(ty) {
                described.retain(|field| !fields.contains(&field.name));
            }
        }
        Ok(Some(Reduced {
            schema: text.to_string(),
            registry,
        }))
    }
}

fn note(map: &RefCell<ByType>, ty: &str, field: &str) {
    let mut map = map.borrow_mut();
    match map.get_mut(ty) {
        Some(fields) => {
            if !fields.contains(field) {
                fields.insert(field.to_owned());
            }
        }
        None => {
            map.insert(ty.to_owned(), BTreeSet::from([field.to_owned()]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_reflection::{Format, Named};

    fn registry() -> Registry {
        let mut registry = Registry::new();
        registry.insert(
            "Profile".to_owned(),
            ContainerFormat::Struct(vec![
                Named {
                    name: "name".to_owned(),
                    value: Format::Str,
                },
                Named {
                    name: "email".to_owned(),
                    value: Format::Option(Box::new(Format::Str)),
                },
            ]),
        );
        registry
    }

    const SCHEMA: &str = r#"{"args":[{"TYPENAME":"Profile"}],"returns":"STR","types":{"Profile":{"STRUCT":[{"name":"STR"},{"email":{"OPTION":"STR"}}]}}}"#;

    #[test]
    fn leaves_the_omitted_fields_out_of_schema_and_registry() {
        let fields = Fields::default();
        fields.given("Profile", "name");
        fields.omitted("Profile", "email");
        let reduced = fields.reduce(SCHEMA, &registry()).unwrap().unwrap();
        assert_eq!(
            reduced.schema,
            r#"{"args":[{"TYPENAME":"Profile"}],"returns":"STR","types":{"Profile":{"STRUCT":[{"name":"STR"}]}}}"#
        );
        let Some(ContainerFormat::Struct(left)) = reduced.registry.get("Profile") else {
            panic!("no struct");
        };
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].name, "name");
    }

    #[test]
    fn nothing_omitted_is_nothing_reduced() {
        let fields = Fields::default();
        fields.given("Profile", "name");
        assert!(fields.reduce(SCHEMA, &registry()).unwrap().is_none());
    }

    #[test]
    fn a_field_given_and_omitted_in_one_call_is_an_error() {
        let fields = Fields::default();
        fields.given("Profile", "email");
        fields.omitted("Profile", "email");
        let error = fields.reduce(SCHEMA, &registry()).err().unwrap();
        assert!(error.contains("Profile: field(s) email given"), "{error}");
    }
}
