//! Request validation with the limits of the contract (`consort/contracts/search.py`):
//! each problem names the field as the Python services do (`body.texts.3`) and its limit.

use serde_json::{json, Map, Value};

use crate::problem::{FieldProblem, Problem};

/// Longest text, in characters (`consort.contracts.sentiment.MAX_TEXT_CHARS`).
pub const MAX_TEXT_CHARS: usize = 5_000;
/// Most texts in one `POST /v1/embeddings`.
pub const MAX_EMBED_TEXTS: usize = 64;
/// Most documents in one indexing request.
pub const MAX_DOCUMENTS: usize = 128;
/// Most matches one query returns.
pub const MAX_K: i64 = 100;
/// Most metadata keys of a document (and of a filter).
pub const MAX_METADATA_KEYS: usize = 16;
/// Longest metadata string value and key.
pub const MAX_METADATA_CHARS: usize = 200;
/// Collection names: lower-case letters, digits, `-`, `_`; 1 to 64 characters.
pub const COLLECTION_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,63}$";
/// Document ids: letters, digits, `-`, `_`, `.`, `:`; 1 to 128 characters.
pub const DOCUMENT_ID_PATTERN: &str = "^[A-Za-z0-9_.:-]{1,128}$";

/// Collects the problems of one request.
#[derive(Default)]
pub struct Checker {
    pub errors: Vec<FieldProblem>,
}

impl Checker {
    pub fn fail(&mut self, field: &str, message: impl Into<String>, limit: Option<Value>) {
        self.errors.push(FieldProblem {
            field: field.into(),
            message: message.into(),
            limit,
        });
    }

    pub fn finish(self) -> Result<(), Problem> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(Problem::invalid(self.errors))
        }
    }

    /// The body as a JSON object with only the `allowed` keys, `required` among them.
    pub fn object<'a>(
        &mut self,
        value: &'a Value,
        field: &str,
        allowed: &[&str],
        required: &[&str],
    ) -> Option<&'a Map<String, Value>> {
        let Some(map) = value.as_object() else {
            self.fail(field, "Input should be a valid object", None);
            return None;
        };
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                self.fail(&format!("{field}.{key}"), "Extra inputs are not permitted", None);
            }
        }
        for key in required {
            if !map.contains_key(*key) {
                self.fail(&format!("{field}.{key}"), "Field required", None);
            }
        }
        Some(map)
    }

    /// A text of 1 to MAX_TEXT_CHARS characters, not only white space.
    pub fn text(&mut self, value: &Value, field: &str) -> Option<String> {
        let Some(s) = value.as_str() else {
            self.fail(field, "Input should be a valid string", None);
            return None;
        };
        let chars = s.chars().count();
        if chars > MAX_TEXT_CHARS {
            self.fail(
                field,
                format!("String should have at most {MAX_TEXT_CHARS} characters"),
                Some(json!(MAX_TEXT_CHARS)),
            );
            None
        } else if chars == 0 {
            self.fail(field, "String should have at least 1 character", Some(json!(1)));
            None
        } else if s.trim().is_empty() {
            self.fail(field, "String should match pattern '\\S'", Some(json!("\\S")));
            None
        } else {
            Some(s.to_string())
        }
    }

    /// A list of `min` to `max` items.
    pub fn list<'a>(
        &mut self,
        value: &'a Value,
        field: &str,
        min: usize,
        max: usize,
    ) -> Option<&'a Vec<Value>> {
        let Some(items) = value.as_array() else {
            self.fail(field, "Input should be a valid list", None);
            return None;
        };
        if items.len() > max {
            self.fail(
                field,
                format!(
                    "List should have at most {max} items after validation, not {}",
                    items.len()
                ),
                Some(json!(max)),
            );
            return None;
        }
        if items.len() < min {
            self.fail(
                field,
                format!("List should have at least {min} item after validation, not 0"),
                Some(json!(min)),
            );
            return None;
        }
        Some(items)
    }

    /// An integer in `min..=max`.
    pub fn int(&mut self, value: &Value, field: &str, min: i64, max: i64) -> Option<i64> {
        let Some(n) = value.as_i64() else {
            self.fail(field, "Input should be a valid integer", None);
            return None;
        };
        if n < min {
            self.fail(
                field,
                format!("Input should be greater than or equal to {min}"),
                Some(json!(min)),
            );
            None
        } else if n > max {
            self.fail(
                field,
                format!("Input should be less than or equal to {max}"),
                Some(json!(max)),
            );
            None
        } else {
            Some(n)
        }
    }

    /// A number in `min..=max`.
    pub fn number(&mut self, value: &Value, field: &str, min: f64, max: f64) -> Option<f64> {
        let Some(n) = value.as_f64() else {
            self.fail(field, "Input should be a valid number", None);
            return None;
        };
        if n < min {
            self.fail(
                field,
                format!("Input should be greater than or equal to {min}"),
                Some(json!(min)),
            );
            None
        } else if n > max {
            self.fail(
                field,
                format!("Input should be less than or equal to {max}"),
                Some(json!(max)),
            );
            None
        } else {
            Some(n)
        }
    }

    /// Metadata (or a filter): at most MAX_METADATA_KEYS keys, each value a string (at
    /// most MAX_METADATA_CHARS), a number or a boolean.
    pub fn metadata(&mut self, value: &Value, field: &str) -> Option<Map<String, Value>> {
        let Some(map) = value.as_object() else {
            self.fail(field, "Input should be a valid dictionary", None);
            return None;
        };
        if map.len() > MAX_METADATA_KEYS {
            self.fail(
                field,
                format!(
                    "Dictionary should have at most {MAX_METADATA_KEYS} items after validation, not {}",
                    map.len()
                ),
                Some(json!(MAX_METADATA_KEYS)),
            );
            return None;
        }
        let before = self.errors.len();
        for (key, v) in map {
            let at = format!("{field}.{key}");
            if key.is_empty() || key.chars().count() > MAX_METADATA_CHARS {
                self.fail(
                    &at,
                    format!("keys should have 1 to {MAX_METADATA_CHARS} characters"),
                    Some(json!(MAX_METADATA_CHARS)),
                );
            }
            match v {
                Value::String(s) if s.chars().count() > MAX_METADATA_CHARS => self.fail(
                    &at,
                    format!("String should have at most {MAX_METADATA_CHARS} characters"),
                    Some(json!(MAX_METADATA_CHARS)),
                ),
                Value::String(_) | Value::Number(_) | Value::Bool(_) => {}
                _ => self.fail(&at, "Input should be a string, a number or a boolean", None),
            }
        }
        (self.errors.len() == before).then(|| map.clone())
    }
}

fn matches(value: &str, max: usize, first: fn(char) -> bool, rest: fn(char) -> bool) -> bool {
    let mut chars = value.chars();
    let Some(c) = chars.next() else { return false };
    value.chars().count() <= max && first(c) && chars.all(rest)
}

/// A collection name, or the 422 naming the path parameter.
pub fn collection_name(name: &str) -> Result<(), Problem> {
    let ok_rest = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    let ok_first = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if matches(name, 64, ok_first, ok_rest) {
        return Ok(());
    }
    Err(Problem::invalid(vec![FieldProblem {
        field: "path.name".into(),
        message: format!("String should match pattern '{COLLECTION_PATTERN}'"),
        limit: Some(json!(COLLECTION_PATTERN)),
    }]))
}

/// True for a valid document id.
pub fn is_document_id(id: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-');
    matches(id, 128, ok, ok)
}

/// A document id in the path, or the 422 naming it.
pub fn document_id(id: &str, field: &str) -> Result<(), Problem> {
    if is_document_id(id) {
        return Ok(());
    }
    Err(Problem::invalid(vec![FieldProblem {
        field: field.into(),
        message: format!("String should match pattern '{DOCUMENT_ID_PATTERN}'"),
        limit: Some(json!(DOCUMENT_ID_PATTERN)),
    }]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_over_the_limit_name_the_field_and_limit() {
        let mut c = Checker::default();
        assert!(c
            .text(&json!("x".repeat(MAX_TEXT_CHARS + 1)), "body.texts.2")
            .is_none());
        assert!(c.text(&json!("   "), "body.texts.3").is_none());
        assert!(c.text(&json!("ok"), "body.texts.4").is_some());
        let p = c.finish().unwrap_err();
        assert_eq!(p.status, 422);
        assert_eq!(p.errors[0].field, "body.texts.2");
        assert_eq!(p.errors[0].limit, Some(json!(MAX_TEXT_CHARS)));
        assert_eq!(p.errors[1].field, "body.texts.3");
    }

    #[test]
    fn names_and_ids() {
        assert!(collection_name("faq-2024").is_ok());
        assert!(collection_name("Faq").is_err());
        assert!(collection_name("-x").is_err());
        assert!(collection_name(&"a".repeat(65)).is_err());
        assert!(is_document_id("review:42.a_b-c"));
        assert!(!is_document_id("a/b"));
        assert!(!is_document_id(""));
    }

    #[test]
    fn metadata_values_are_scalars() {
        let mut c = Checker::default();
        assert!(c
            .metadata(&json!({"product": "x", "stars": 4, "ok": true}), "m")
            .is_some());
        assert!(c.metadata(&json!({"nested": {"a": 1}}), "m").is_none());
        assert_eq!(c.errors[0].field, "m.nested");
    }

    #[test]
    fn lists_and_ints() {
        let mut c = Checker::default();
        assert!(c.list(&json!([]), "body.texts", 1, 64).is_none());
        assert!(c.list(&json!(vec![1; 65]), "body.texts", 1, 64).is_none());
        assert!(c.int(&json!(0), "body.k", 1, MAX_K).is_none());
        assert_eq!(c.errors.len(), 3);
        assert_eq!(c.errors[1].limit, Some(json!(64)));
    }
}
