//! [`Locale`]: the language of mails and pages (Danish or English).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Field, ValueError};

/// A supported language. Serialised as `"da"` or `"en"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Locale {
    /// Danish.
    Da,
    /// English.
    En,
}

impl Locale {
    /// Parses a language tag: `da`, `en`, or a tag with a region (`da-DK`, `en_GB`), any case.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(ValueError::Empty {
                field: Field::Locale,
            });
        }
        Self::from_tag(input).ok_or(ValueError::Malformed {
            field: Field::Locale,
            reason: "must be da or en",
        })
    }

    /// The locale whose language best matches an `Accept-Language` header, honouring q-values
    /// (ties go to the earlier entry); `None` when no supported language is acceptable.
    /// `*` is ignored: the caller's configured default applies then.
    #[must_use]
    pub fn from_accept_language(header: &str) -> Option<Self> {
        let mut best: Option<(Self, u16)> = None;
        for entry in header.split(',') {
            let mut params = entry.split(';');
            let tag = params.next().unwrap_or("").trim();
            let mut quality = Some(1000);
            for param in params {
                let param = param.trim();
                if let Some(value) = param
                    .strip_prefix("q=")
                    .or_else(|| param.strip_prefix("Q="))
                {
                    quality = parse_quality(value.trim());
                }
            }
            let (Some(quality), Some(locale)) = (quality, Self::from_tag(tag)) else {
                continue;
            };
            if quality > 0 && best.is_none_or(|(_, q)| quality > q) {
                best = Some((locale, quality));
            }
        }
        best.map(|(locale, _)| locale)
    }

    /// The two-letter code, `da` or `en`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Da => "da",
            Self::En => "en",
        }
    }

    fn from_tag(tag: &str) -> Option<Self> {
        let primary = tag.split(['-', '_']).next().unwrap_or("");
        if primary.eq_ignore_ascii_case("da") {
            Some(Self::Da)
        } else if primary.eq_ignore_ascii_case("en") {
            Some(Self::En)
        } else {
            None
        }
    }
}

/// An RFC 9110 qvalue in thousandths; `None` when malformed.
fn parse_quality(value: &str) -> Option<u16> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if fraction.len() > 3 || !fraction.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let thousandths: u16 = format!("{fraction:0<3}").parse().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tags() {
        assert_eq!(Locale::parse("da"), Ok(Locale::Da));
        assert_eq!(Locale::parse(" EN-gb "), Ok(Locale::En));
        assert!(Locale::parse("de").is_err());
        assert!(Locale::parse("").is_err());
        assert_eq!(serde_json::to_string(&Locale::Da).unwrap(), "\"da\"");
        assert_eq!(
            serde_json::from_str::<Locale>("\"en\"").unwrap(),
            Locale::En
        );
    }

    #[test]
    fn accept_language_honours_q_values() {
        assert_eq!(
            Locale::from_accept_language("da-DK,da;q=0.9"),
            Some(Locale::Da)
        );
        assert_eq!(
            Locale::from_accept_language("de-DE, en;q=0.5, da;q=0.8"),
            Some(Locale::Da)
        );
        assert_eq!(
            Locale::from_accept_language("en;q=0.5, da;q=0.5"),
            Some(Locale::En)
        );
        assert_eq!(
            Locale::from_accept_language("da;q=0, en;q=0.1"),
            Some(Locale::En)
        );
        assert_eq!(Locale::from_accept_language("de, fr;q=0.9, *;q=0.1"), None);
        assert_eq!(
            Locale::from_accept_language("da;q=2, en;q=0.3"),
            Some(Locale::En)
        );
        assert_eq!(Locale::from_accept_language(""), None);
        assert_eq!(
            Locale::from_accept_language("EN-US;Q=1.000"),
            Some(Locale::En)
        );
    }
}
