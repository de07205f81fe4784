//! Typed read access to Keygen-shaped JSON:API resource documents:
//! `{"data": {"id", "type", "attributes", "relationships"}, "meta": {...}}`.

use serde_json::{Map, Value};

use crate::Error;

/// A parsed resource document (the event payload).
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The whole document.
    pub value: Value,
}

static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();

fn empty() -> &'static Map<String, Value> {
    EMPTY.get_or_init(Map::new)
}

impl Document {
    /// Parses JSON bytes; the top level must be an object.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::bad_input(format!("payload is not valid JSON: {e}")))?;
        if !value.is_object() {
            return Err(Error::bad_input("payload must be a JSON object"));
        }
        Ok(Document { value })
    }

    /// `data` (null when absent).
    pub fn data(&self) -> &Value {
        self.value.get("data").unwrap_or(&Value::Null)
    }

    /// `data.id`.
    pub fn resource_id(&self) -> Option<&str> {
        self.data().get("id").and_then(Value::as_str)
    }

    /// `data.type`, e.g. `licenses`.
    pub fn resource_type(&self) -> Option<&str> {
        self.data().get("type").and_then(Value::as_str)
    }

    /// `data.attributes` (empty when absent).
    pub fn attributes(&self) -> &Map<String, Value> {
        self.data()
            .get("attributes")
            .and_then(Value::as_object)
            .unwrap_or_else(|| empty())
    }

    /// One attribute, e.g. `attribute("status")`.
    pub fn attribute(&self, name: &str) -> Option<&Value> {
        self.attributes().get(name)
    }

    /// One attribute as a string.
    pub fn attribute_str(&self, name: &str) -> Option<&str> {
        self.attribute(name).and_then(Value::as_str)
    }

    /// `data.relationships.<name>.data.id`, e.g. the license's `owner`.
    pub fn relationship_id(&self, name: &str) -> Option<&str> {
        self.data()
            .get("relationships")?
            .get(name)?
            .get("data")?
            .get("id")?
            .as_str()
    }

    /// The top-level `meta` (empty when absent): for validation events
    /// `{ts, valid, detail, code}`.
    pub fn meta(&self) -> &Map<String, Value> {
        self.value
            .get("meta")
            .and_then(Value::as_object)
            .unwrap_or_else(|| empty())
    }

    /// Looks up a JSON pointer (RFC 6901) in the whole document.
    pub fn pointer(&self, pointer: &str) -> Option<&Value> {
        self.value.pointer(pointer)
    }

    /// The id of the user behind the resource: the `user` relationship,
    /// else `owner`, else the resource itself when it is a user.
    pub fn user_id(&self) -> Option<&str> {
        self.relationship_id("user")
            .or_else(|| self.relationship_id("owner"))
            .or_else(|| match self.resource_type() {
                Some("users") => self.resource_id(),
                _ => None,
            })
    }
}
