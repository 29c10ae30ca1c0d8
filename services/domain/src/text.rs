//! Shared checks for the text-based value types, and the macro that gives them their common API.

use crate::error::{Field, ValueError};

/// Control characters, line/paragraph separators and bidirectional overrides: never in a value.
pub(crate) fn is_forbidden_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// Trims `input`; refuses it when empty, longer than `max_chars` or holding forbidden characters.
pub(crate) fn bounded_line(
    input: &str,
    field: Field,
    max_chars: usize,
) -> Result<String, ValueError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(ValueError::Empty { field });
    }
    if trimmed.chars().any(is_forbidden_char) {
        return Err(ValueError::ControlCharacter { field });
    }
    if trimmed.chars().count() > max_chars {
        return Err(ValueError::TooLong {
            field,
            max: max_chars,
        });
    }
    Ok(trimmed.to_owned())
}

/// A short token: 1–`max` characters of `[A-Za-z0-9._-]`, after trimming.
pub(crate) fn token(input: &str, field: Field, max: usize) -> Result<String, ValueError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(ValueError::Empty { field });
    }
    if trimmed.chars().count() > max {
        return Err(ValueError::TooLong { field, max });
    }
    if !trimmed
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(ValueError::InvalidCharacter { field });
    }
    Ok(trimmed.to_owned())
}

/// Gives a `struct $name { value: String }` value type `as_str`, `AsRef<str>`, `TryFrom<String>`
/// (through `parse`) and `Serialize` as a plain string. `Deserialize` is derived on the type with
/// `#[serde(try_from = "String")]`, so stored values are re-validated.
macro_rules! string_value {
    ($name:ident) => {
        impl $name {
            /// The validated value.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.value
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.value
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::error::ValueError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.value)
            }
        }
    };
}

/// [`string_value!`] plus a `Display` and a plain `Debug`: for values that are not personal data.
macro_rules! public_string_value {
    ($name:ident) => {
        $crate::text::string_value!($name);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.value)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.value)
            }
        }
    };
}

/// [`string_value!`] plus a redacting `Debug` and no `Display`: for personal data, so that a stray
/// `{:?}` in a log line never prints it.
macro_rules! personal_string_value {
    ($name:ident) => {
        $crate::text::string_value!($name);

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}(<redacted>)", stringify!($name))
            }
        }
    };
}

pub(crate) use personal_string_value;
pub(crate) use public_string_value;
pub(crate) use string_value;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_line_trims_and_bounds() {
        assert_eq!(
            bounded_line("  Jane  ", Field::Name, 10),
            Ok("Jane".to_owned())
        );
        assert_eq!(
            bounded_line("   ", Field::Name, 10),
            Err(ValueError::Empty { field: Field::Name })
        );
        assert_eq!(
            bounded_line("Jane\u{202E}", Field::Name, 10),
            Err(ValueError::ControlCharacter { field: Field::Name })
        );
        assert_eq!(
            bounded_line("ææææææ", Field::Name, 5),
            Err(ValueError::TooLong {
                field: Field::Name,
                max: 5
            })
        );
    }

    #[test]
    fn token_accepts_only_its_alphabet() {
        assert_eq!(
            token(" v2.1_a-b ", Field::Source, 64),
            Ok("v2.1_a-b".to_owned())
        );
        assert!(token("a b", Field::Source, 64).is_err());
        assert!(token("a@b", Field::Source, 64).is_err());
        assert!(token(&"a".repeat(65), Field::Source, 64).is_err());
    }
}
