//! Reading JSON bodies field by field, so every problem names the field it is about.

use serde_json::{Map, Value};

use crate::error::{ApiError, FieldError};

/// The members of a JSON object body, read one by one; collects an error per bad field.
pub(crate) struct JsonFields {
    members: Map<String, Value>,
    errors: Vec<FieldError>,
}

impl JsonFields {
    /// Parses a body that must be a JSON object.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::Validation(vec![FieldError::new(
                "body",
                "malformed_json",
                &format!("not valid JSON (line {}, column {})", e.line(), e.column()),
            )])
        })?;
        match value {
            Value::Object(members) => Ok(Self {
                members,
                errors: Vec::new(),
            }),
            _ => Err(ApiError::Validation(vec![FieldError::new(
                "body",
                "not_an_object",
                "the body must be a JSON object",
            )])),
        }
    }

    /// An optional string member (`null` counts as absent).
    pub(crate) fn string(&mut self, name: &str) -> Option<String> {
        match self.members.remove(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text),
            Some(_) => {
                self.errors
                    .push(FieldError::new(name, "invalid_type", "must be a string"));
                None
            }
        }
    }

    /// An optional member holding a list of strings (a single string counts as a list of one).
    pub(crate) fn strings(&mut self, name: &str) -> Option<Vec<String>> {
        match self.members.remove(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(vec![text]),
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::String(text) => out.push(text),
                        _ => {
                            self.errors.push(FieldError::new(
                                name,
                                "invalid_type",
                                "must be a list of strings",
                            ));
                            return None;
                        }
                    }
                }
                Some(out)
            }
            Some(_) => {
                self.errors.push(FieldError::new(
                    name,
                    "invalid_type",
                    "must be a list of strings",
                ));
                None
            }
        }
    }

    /// A required member holding a JSON array of strings.
    pub(crate) fn required_string_array(&mut self, name: &str) -> Option<Vec<String>> {
        match self.members.get(name) {
            None | Some(Value::Null) => {
                self.members.remove(name);
                self.errors.push(FieldError::new(
                    name,
                    "empty",
                    "is required: a list of strings",
                ));
                None
            }
            Some(Value::Array(_)) => self.strings(name),
            Some(_) => {
                self.members.remove(name);
                self.errors.push(FieldError::new(
                    name,
                    "invalid_type",
                    "must be a list of strings",
                ));
                None
            }
        }
    }

    /// Fails with every collected error, and one per member nobody asked for.
    pub(crate) fn finish(mut self) -> Result<(), ApiError> {
        let mut unknown: Vec<String> = self.members.keys().cloned().collect();
        unknown.sort();
        for name in unknown {
            let shown: String = name.chars().take(64).collect();
            self.errors.push(FieldError::new(
                &shown,
                "unknown_field",
                "is not a field of this request",
            ));
        }
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields_of(error: ApiError) -> Vec<(String, String)> {
        match error {
            ApiError::Validation(errors) => errors.into_iter().map(|e| (e.field, e.code)).collect(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn every_bad_member_is_named() {
        let mut fields =
            JsonFields::parse(br#"{"email":42,"lists":["a",1],"extra":true,"name":null}"#).unwrap();
        assert_eq!(fields.string("email"), None);
        assert_eq!(fields.strings("lists"), None);
        assert_eq!(fields.string("name"), None);
        let errors = fields_of(fields.finish().unwrap_err());
        assert_eq!(
            errors,
            vec![
                ("email".to_owned(), "invalid_type".to_owned()),
                ("lists".to_owned(), "invalid_type".to_owned()),
                ("extra".to_owned(), "unknown_field".to_owned()),
            ]
        );
    }

    #[test]
    fn the_body_itself_is_named_when_it_is_not_an_object() {
        let error = JsonFields::parse(b"[1,2]").err().unwrap();
        assert_eq!(
            fields_of(error),
            vec![("body".to_owned(), "not_an_object".to_owned())]
        );
        let error = JsonFields::parse(b"{not json").err().unwrap();
        assert_eq!(
            fields_of(error),
            vec![("body".to_owned(), "malformed_json".to_owned())]
        );
    }

    #[test]
    fn a_required_array_must_be_there_and_be_an_array() {
        let mut fields = JsonFields::parse(br#"{"emails":"a@example.com"}"#).unwrap();
        assert_eq!(fields.required_string_array("emails"), None);
        assert_eq!(
            fields_of(fields.finish().unwrap_err()),
            vec![("emails".to_owned(), "invalid_type".to_owned())]
        );
        let mut fields = JsonFields::parse(br#"{"email":"a@example.com"}"#).unwrap();
        assert_eq!(fields.required_string_array("emails"), None);
        assert_eq!(
            fields_of(fields.finish().unwrap_err()),
            vec![
                ("emails".to_owned(), "empty".to_owned()),
                ("email".to_owned(), "unknown_field".to_owned())
            ]
        );
    }

    #[test]
    fn a_single_string_is_a_list_of_one() {
        let mut fields = JsonFields::parse(br#"{"lists":"news"}"#).unwrap();
        assert_eq!(fields.strings("lists"), Some(vec!["news".to_owned()]));
        assert!(fields.finish().is_ok());
    }
}
