//! The optional profile fields of the privacy policy (section 1): name, company, postal address
//! and phone number, and how a rectification changes them.
//!
//! All are trimmed, non-empty and length-bounded, and never contain control characters. The postal
//! address alone may span lines: CR LF and lone CR (what HTML textareas submit) are normalised to
//! LF, so a stored address never contains CR. Every type here is personal data: `Debug` is
//! redacted and there is no `Display`.

use serde::{Deserialize, Serialize};

use crate::error::{Field, ValueError};
use crate::text::{bounded_line, is_forbidden_char, personal_string_value};

/// The longest accepted name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// The longest accepted company name, in characters.
pub const MAX_COMPANY_CHARS: usize = 200;
/// The longest accepted postal address, in characters (line breaks count as one).
pub const MAX_ADDRESS_CHARS: usize = 500;
/// The longest accepted phone number, in characters.
pub const MAX_PHONE_CHARS: usize = 32;

/// A person's name, as typed.
#[derive(Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct PersonName {
    value: String,
}
personal_string_value!(PersonName);

impl PersonName {
    /// Trims and checks outside input: 1–200 characters, no control characters.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        bounded_line(input, Field::Name, MAX_NAME_CHARS).map(|value| Self { value })
    }
}

/// A company name, as typed.
#[derive(Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct CompanyName {
    value: String,
}
personal_string_value!(CompanyName);

impl CompanyName {
    /// Trims and checks outside input: 1–200 characters, no control characters.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        bounded_line(input, Field::Company, MAX_COMPANY_CHARS).map(|value| Self { value })
    }
}

/// A postal address on one line (parts separated by commas); like every field, without CR or LF.
#[derive(Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct PostalAddress {
    value: String,
}
personal_string_value!(PostalAddress);

impl PostalAddress {
    /// Trims and checks: 1–500 characters, no control characters (CR and LF included: write
    /// the parts on one line, separated by commas).
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        const FIELD: Field = Field::Address;
        let value = input.trim().to_owned();
        if value.is_empty() {
            return Err(ValueError::Empty { field: FIELD });
        }
        if value.chars().any(is_forbidden_char) {
            return Err(ValueError::ControlCharacter { field: FIELD });
        }
        if value.chars().count() > MAX_ADDRESS_CHARS {
            return Err(ValueError::TooLong {
                field: FIELD,
                max: MAX_ADDRESS_CHARS,
            });
        }
        Ok(Self { value })
    }

    /// The address's comma-separated parts.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.value.split(',').map(str::trim)
    }
}

/// A phone number as typed: digits, spaces, `+`, `-`, `(` and `)`, with at least one digit and
/// `+` only in front.
#[derive(Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct PhoneNumber {
    value: String,
}
personal_string_value!(PhoneNumber);

impl PhoneNumber {
    /// Trims and checks outside input.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        const FIELD: Field = Field::Phone;
        let value = bounded_line(input, FIELD, MAX_PHONE_CHARS)?;
        if !value
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '+' | '-' | '(' | ')'))
        {
            return Err(ValueError::InvalidCharacter { field: FIELD });
        }
        if !value.chars().any(|c| c.is_ascii_digit()) {
            return Err(ValueError::Malformed {
                field: FIELD,
                reason: "must contain digits",
            });
        }
        if value.char_indices().any(|(i, c)| c == '+' && i > 0) {
            return Err(ValueError::Malformed {
                field: FIELD,
                reason: "+ is only allowed in front",
            });
        }
        Ok(Self { value })
    }
}

/// The optional profile of a subscriber. Every field is already validated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// The person's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<PersonName>,
    /// The company's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<CompanyName>,
    /// The postal address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<PostalAddress>,
    /// The phone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<PhoneNumber>,
}

impl Profile {
    /// True when no field is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.company.is_none()
            && self.address.is_none()
            && self.phone.is_none()
    }

    /// This profile with the fields that `newer` sets taken from `newer` (unset ones are kept).
    #[must_use]
    pub fn merged_with(&self, newer: &Self) -> Self {
        Self {
            name: newer.name.clone().or_else(|| self.name.clone()),
            company: newer.company.clone().or_else(|| self.company.clone()),
            address: newer.address.clone().or_else(|| self.address.clone()),
            phone: newer.phone.clone().or_else(|| self.phone.clone()),
        }
    }
}

/// What a rectification does to one profile field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldChange<T> {
    /// Leave the field as it is.
    #[default]
    Keep,
    /// Remove the field.
    Clear,
    /// Set the field to a new value.
    Set(T),
}

impl<T: Clone + PartialEq> FieldChange<T> {
    /// True for [`FieldChange::Keep`].
    #[must_use]
    pub fn is_keep(&self) -> bool {
        matches!(self, Self::Keep)
    }

    /// The field's value after the change.
    #[must_use]
    pub fn apply(&self, current: &Option<T>) -> Option<T> {
        match self {
            Self::Keep => current.clone(),
            Self::Clear => None,
            Self::Set(value) => Some(value.clone()),
        }
    }

    /// `Keep` when applying this change to `current` would change nothing, else the change.
    #[must_use]
    pub fn effective_against(&self, current: &Option<T>) -> Self {
        if self.apply(current) == *current {
            Self::Keep
        } else {
            self.clone()
        }
    }
}

/// A rectification: per profile field, keep, clear or set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileChanges {
    /// The change to the name.
    #[serde(default, skip_serializing_if = "FieldChange::is_keep")]
    pub name: FieldChange<PersonName>,
    /// The change to the company name.
    #[serde(default, skip_serializing_if = "FieldChange::is_keep")]
    pub company: FieldChange<CompanyName>,
    /// The change to the postal address.
    #[serde(default, skip_serializing_if = "FieldChange::is_keep")]
    pub address: FieldChange<PostalAddress>,
    /// The change to the phone number.
    #[serde(default, skip_serializing_if = "FieldChange::is_keep")]
    pub phone: FieldChange<PhoneNumber>,
}

impl ProfileChanges {
    /// True when every field is `Keep`.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.name.is_keep()
            && self.company.is_keep()
            && self.address.is_keep()
            && self.phone.is_keep()
    }

    /// The profile after the changes.
    #[must_use]
    pub fn apply_to(&self, profile: &Profile) -> Profile {
        Profile {
            name: self.name.apply(&profile.name),
            company: self.company.apply(&profile.company),
            address: self.address.apply(&profile.address),
            phone: self.phone.apply(&profile.phone),
        }
    }

    /// Only the changes that change something in `profile`.
    #[must_use]
    pub fn effective_against(&self, profile: &Profile) -> Self {
        Self {
            name: self.name.effective_against(&profile.name),
            company: self.company.effective_against(&profile.company),
            address: self.address.effective_against(&profile.address),
            phone: self.phone.effective_against(&profile.phone),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_bounded_and_single_line() {
        assert_eq!(
            PersonName::parse("  Jens Ærø ").unwrap().as_str(),
            "Jens Ærø"
        );
        assert!(PersonName::parse("").is_err());
        assert!(PersonName::parse("a\nb").is_err());
        assert!(PersonName::parse(&"x".repeat(201)).is_err());
        assert!(PersonName::parse(&"x".repeat(200)).is_ok());
        assert!(CompanyName::parse("OCTOPUS PMS ApS").is_ok());
        assert!(CompanyName::parse("a\tb").is_err());
    }

    #[test]
    fn addresses_are_one_line_without_cr_or_lf() {
        let address = PostalAddress::parse(" Gerlachsgade 4, 6400 Sønderborg ").unwrap();
        assert_eq!(address.as_str(), "Gerlachsgade 4, 6400 Sønderborg");
        assert_eq!(address.lines().count(), 2);
        assert!(PostalAddress::parse("Gerlachsgade 4\r\nBcc: x@example.org").is_err());
        assert!(PostalAddress::parse("Gerlachsgade 4\n6400 Sønderborg").is_err());
        assert!(PostalAddress::parse("a\u{0}b").is_err());
        assert!(PostalAddress::parse("\r\n \n").is_err());
        assert!(PostalAddress::parse(&"x".repeat(501)).is_err());
    }

    #[test]
    fn phone_numbers_have_a_small_alphabet() {
        assert!(PhoneNumber::parse("+45 73 700 100").is_ok());
        assert!(PhoneNumber::parse("(+45) 73-700-100").is_err());
        assert!(PhoneNumber::parse("(045) 73-700-100").is_ok());
        assert!(PhoneNumber::parse("73 700 100 ext 2").is_err());
        assert!(PhoneNumber::parse("+ - ()").is_err());
        assert!(PhoneNumber::parse(&"1".repeat(33)).is_err());
    }

    #[test]
    fn profile_values_are_redacted_in_debug() {
        let name = PersonName::parse("Jane").unwrap();
        assert_eq!(format!("{name:?}"), "PersonName(<redacted>)");
    }

    #[test]
    fn changes_apply_and_shrink_to_the_effective_ones() {
        let profile = Profile {
            name: Some(PersonName::parse("Jane").unwrap()),
            ..Profile::default()
        };
        let changes = ProfileChanges {
            name: FieldChange::Set(PersonName::parse("Jane").unwrap()),
            phone: FieldChange::Clear,
            company: FieldChange::Set(CompanyName::parse("ACME").unwrap()),
            ..ProfileChanges::default()
        };
        let effective = changes.effective_against(&profile);
        assert!(effective.name.is_keep());
        assert!(effective.phone.is_keep());
        assert!(!effective.company.is_keep());
        let after = effective.apply_to(&profile);
        assert_eq!(
            after.company.as_ref().map(CompanyName::as_str),
            Some("ACME")
        );
        assert_eq!(after.name, profile.name);
        let json = serde_json::to_value(&effective).unwrap();
        assert_eq!(json, serde_json::json!({"company": {"set": "ACME"}}));
        let back: ProfileChanges = serde_json::from_value(json).unwrap();
        assert_eq!(back, effective);
    }
}
