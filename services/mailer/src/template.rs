//! The confirmation mail's text in Danish and English: subject, plain text and HTML.
//!
//! Templates are files under `templates/` with `{name}` placeholders, filled in one pass (a value
//! that happens to contain `{x}` is never expanded again). In HTML every value is escaped.

use chrono::{DateTime, Datelike, Timelike, Utc};
use newsletter_domain::Locale;

const DA_TEXT: &str = include_str!("../templates/confirm.da.txt");
const DA_HTML: &str = include_str!("../templates/confirm.da.html");
const EN_TEXT: &str = include_str!("../templates/confirm.en.txt");
const EN_HTML: &str = include_str!("../templates/confirm.en.html");

/// What goes into a confirmation mail. Holds personal data (the name): never log it.
#[derive(Clone)]
pub struct ConfirmationContent<'a> {
    /// The language.
    pub locale: Locale,
    /// The person's name from the form, if given.
    pub name: Option<&'a str>,
    /// The sender organisation, as readers know it.
    pub organisation: &'a str,
    /// The display names of the requested lists.
    pub lists: Vec<String>,
    /// The confirm link.
    pub confirm_url: &'a str,
    /// The "this wasn't me" link (an unsubscribe link for all lists).
    pub cancel_url: &'a str,
    /// The privacy policy.
    pub privacy_url: &'a str,
    /// Until when the confirm link works.
    pub confirm_by: DateTime<Utc>,
}

/// A rendered mail: subject, plain text and HTML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedMail {
    /// The subject line.
    pub subject: String,
    /// The text/plain part.
    pub text: String,
    /// The text/html part.
    pub html: String,
}

impl ConfirmationContent<'_> {
    /// Renders the mail in its locale.
    #[must_use]
    pub fn render(&self) -> RenderedMail {
        let (text_template, html_template) = match self.locale {
            Locale::Da => (DA_TEXT, DA_HTML),
            Locale::En => (EN_TEXT, EN_HTML),
        };
        let subject = match self.locale {
            Locale::Da => format!("Bekræft din tilmelding hos {}", self.organisation),
            Locale::En => format!("Confirm your subscription with {}", self.organisation),
        };
        let greeting = match (self.locale, self.name) {
            (Locale::Da, Some(name)) => format!("Hej {name}"),
            (Locale::Da, None) => "Hej".to_owned(),
            (Locale::En, Some(name)) => format!("Hello {name},"),
            (Locale::En, None) => "Hello,".to_owned(),
        };
        let values = [
            ("subject", subject.clone()),
            ("greeting", greeting),
            ("org", self.organisation.to_owned()),
            ("lists", join_lists(self.locale, &self.lists)),
            ("confirm_url", self.confirm_url.to_owned()),
            ("cancel_url", self.cancel_url.to_owned()),
            ("privacy_url", self.privacy_url.to_owned()),
            ("confirm_by", format_time(self.locale, self.confirm_by)),
        ];
        let escaped: Vec<(&str, String)> = values
            .iter()
            .map(|(key, value)| (*key, escape_html(value)))
            .collect();
        RenderedMail {
            subject,
            text: fill(text_template, &values),
            html: fill(html_template, &escaped),
        }
    }
}

/// "a", "a og b", "a, b og c" (English: "and").
fn join_lists(locale: Locale, lists: &[String]) -> String {
    let and = match locale {
        Locale::Da => "og",
        Locale::En => "and",
    };
    match lists {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} {and} {last}", init.join(", ")),
    }
}

const DA_MONTHS: [&str; 12] = [
    "januar",
    "februar",
    "marts",
    "april",
    "maj",
    "juni",
    "juli",
    "august",
    "september",
    "oktober",
    "november",
    "december",
];
const EN_MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// `25. november 2026 kl. 09:00 UTC` / `25 November 2026, 09:00 UTC`.
fn format_time(locale: Locale, at: DateTime<Utc>) -> String {
    let month0 = usize::try_from(at.month0()).unwrap_or(0);
    let (day, year, hour, minute) = (at.day(), at.year(), at.hour(), at.minute());
    match locale {
        Locale::Da => format!(
            "{day}. {} {year} kl. {hour:02}:{minute:02} UTC",
            DA_MONTHS.get(month0).unwrap_or(&"")
        ),
        Locale::En => format!(
            "{day} {} {year}, {hour:02}:{minute:02} UTC",
            EN_MONTHS.get(month0).unwrap_or(&"")
        ),
    }
}

/// Replaces each `{key}` with its value, in one pass; unknown placeholders stay as they are.
fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len() + 512);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let replaced = after.find('}').and_then(|close| {
            let key = &after[..close];
            values
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, value)| (value, close))
        });
        match replaced {
            Some((value, close)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Escapes text for HTML element content and double-quoted attribute values.
#[must_use]
pub fn escape_html(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn content(locale: Locale, name: Option<&'static str>) -> ConfirmationContent<'static> {
        ConfirmationContent {
            locale,
            name,
            organisation: "OCTOPUS",
            lists: vec!["News".to_owned(), "Events".to_owned(), "Product".to_owned()],
            confirm_url: "https://x.example/v1/confirm?token=k1.abc&x=1",
            cancel_url: "https://x.example/v1/unsubscribe?token=k1.def",
            privacy_url: "https://x.example/privacy",
            confirm_by: Utc.with_ymd_and_hms(2026, 12, 2, 9, 5, 0).unwrap(),
        }
    }

    #[test]
    fn danish_mail_has_every_part() {
        let mail = content(Locale::Da, Some("Søren")).render();
        assert_eq!(mail.subject, "Bekræft din tilmelding hos OCTOPUS");
        assert!(mail.text.starts_with("Hej Søren\n"));
        assert!(mail.text.contains("News, Events og Product"));
        assert!(
            mail.text
                .contains("https://x.example/v1/confirm?token=k1.abc&x=1\n")
        );
        assert!(mail.text.contains("2. december 2026 kl. 09:05 UTC"));
        assert!(
            mail.text
                .contains("https://x.example/v1/unsubscribe?token=k1.def")
        );
        assert!(
            mail.text
                .contains("privatlivspolitik: https://x.example/privacy")
        );
        assert!(
            mail.html
                .contains("href=\"https://x.example/v1/confirm?token=k1.abc&amp;x=1\"")
        );
        assert!(mail.html.contains("<html lang=\"da\">"));
        for part in [&mail.text, &mail.html] {
            assert!(!part.contains('{') && !part.contains('}'), "{part}");
        }
    }

    #[test]
    fn english_mail_has_every_part() {
        let mail = content(Locale::En, None).render();
        assert_eq!(mail.subject, "Confirm your subscription with OCTOPUS");
        assert!(mail.text.starts_with("Hello,\n"));
        assert!(mail.text.contains("News, Events and Product"));
        assert!(mail.text.contains("2 December 2026, 09:05 UTC"));
        assert!(mail.html.contains("<html lang=\"en\">"));
        assert!(mail.html.contains("privacy policy</a>"));
        for part in [&mail.text, &mail.html] {
            assert!(!part.contains('{') && !part.contains('}'), "{part}");
        }
    }

    #[test]
    fn html_escapes_every_value_and_values_are_not_expanded_again() {
        let mut hostile = content(
            Locale::En,
            Some("<script>alert('x')</script> {confirm_url}"),
        );
        hostile.organisation = "A & B \"Co\"";
        let mail = hostile.render();
        assert!(!mail.html.contains("<script>"));
        assert!(
            mail.html
                .contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; {confirm_url}")
        );
        assert!(mail.html.contains("A &amp; B &quot;Co&quot;"));
        assert!(
            mail.text
                .contains("Hello <script>alert('x')</script> {confirm_url},")
        );
    }

    #[test]
    fn lists_join_naturally() {
        assert_eq!(join_lists(Locale::Da, &["a".to_owned()]), "a");
        assert_eq!(
            join_lists(Locale::Da, &["a".to_owned(), "b".to_owned()]),
            "a og b"
        );
        assert_eq!(fill("{a}{b}{", &[("a", "1".to_owned())]), "1{b}{");
    }
}
