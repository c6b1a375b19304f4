//! Building blocks of the request schemas that handlers describe by hand (`ToSchema` impls
//! whose rules come from `domain` rather than from a derive). Handlers use them and `docs`
//! assembles the document from the handlers, so these sit below both: neither imports the other
//! for them.

use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{Ref, RefOr};

/// An object schema of the given properties, each with whether it is required.
pub fn object<const N: usize>(properties: [(&str, RefOr<Schema>, bool); N]) -> RefOr<Schema> {
    properties
        .into_iter()
        .fold(
            ObjectBuilder::new().schema_type(Type::Object),
            |object, (name, schema, required)| {
                let object = object.property(name, schema);
                if required {
                    object.required(name)
                } else {
                    object
                }
            },
        )
        .into()
}

/// Any string, with an example.
pub fn string(example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .examples([serde_json::json!(example)])
        .into()
}

/// `schema` or `null` (which the parsers read as absent).
pub fn or_null(schema: ObjectBuilder, of: Type) -> RefOr<Schema> {
    schema
        .schema_type(SchemaType::from_iter([of, Type::Null]))
        .into()
}

/// A reference to a component schema.
pub fn reference<T: utoipa::ToSchema>() -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(T::name()))
}
