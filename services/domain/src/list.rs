//! Newsletter lists: [`ListId`] and the configured [`ListCatalog`].
//!
//! Outside input becomes a `ListId` only through [`ListCatalog::parse`], so a request can only name
//! configured lists. Deserialising a `ListId` checks its syntax only: stored events are re-read
//! later, even after the catalog changed.

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::error::{Field, ValueError};
use crate::text::public_string_value;

const FIELD: Field = Field::List;
/// The longest list id, in characters.
pub const MAX_LIST_ID_CHARS: usize = 64;

/// The id of a newsletter list: 1–64 characters of `[a-z0-9_-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct ListId {
    value: String,
}
public_string_value!(ListId);

impl ListId {
    /// Checks the syntax only. Used for stored data; outside input goes through the catalog.
    fn parse(input: &str) -> Result<Self, ValueError> {
        if input.is_empty() {
            return Err(ValueError::Empty { field: FIELD });
        }
        if input.chars().count() > MAX_LIST_ID_CHARS {
            return Err(ValueError::TooLong {
                field: FIELD,
                max: MAX_LIST_ID_CHARS,
            });
        }
        if !input
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err(ValueError::InvalidCharacter { field: FIELD });
        }
        Ok(Self {
            value: input.to_owned(),
        })
    }
}

/// The lists this deployment offers, from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCatalog {
    lists: BTreeSet<ListId>,
}

impl ListCatalog {
    /// Builds the catalog from configured ids. Refuses an empty catalog and malformed ids;
    /// duplicates are merged.
    pub fn new<'a, I>(ids: I) -> Result<Self, ValueError>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let lists = ids
            .into_iter()
            .map(ListId::parse)
            .collect::<Result<BTreeSet<_>, _>>()?;
        if lists.is_empty() {
            return Err(ValueError::Empty { field: FIELD });
        }
        Ok(Self { lists })
    }

    /// Parses outside input (trimmed) into one of the configured lists.
    pub fn parse(&self, input: &str) -> Result<ListId, ValueError> {
        let id = ListId::parse(input.trim())?;
        if self.lists.contains(&id) {
            Ok(id)
        } else {
            Err(ValueError::UnknownList { field: FIELD })
        }
    }

    /// True when `id` is configured.
    #[must_use]
    pub fn contains(&self, id: &ListId) -> bool {
        self.lists.contains(id)
    }

    /// The configured lists, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &ListId> {
        self.lists.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_validates_its_ids() {
        assert!(ListCatalog::new(["news", "product-updates", "events_2026"]).is_ok());
        assert!(ListCatalog::new(["News"]).is_err());
        assert!(ListCatalog::new([""]).is_err());
        assert!(ListCatalog::new(std::iter::empty()).is_err());
        assert!(ListCatalog::new([&*"a".repeat(65)]).is_err());
    }

    #[test]
    fn only_configured_lists_parse() {
        let catalog = ListCatalog::new(["news", "news", "events"]).unwrap();
        assert_eq!(catalog.iter().count(), 2);
        assert_eq!(catalog.parse(" news ").unwrap().as_str(), "news");
        assert_eq!(
            catalog.parse("other"),
            Err(ValueError::UnknownList { field: Field::List })
        );
        assert!(catalog.parse("bad id").is_err());
    }

    #[test]
    fn deserialising_checks_syntax_only() {
        let id: ListId = serde_json::from_str("\"retired-list\"").unwrap();
        assert_eq!(id.to_string(), "retired-list");
        assert!(serde_json::from_str::<ListId>("\"Bad List\"").is_err());
    }
}
