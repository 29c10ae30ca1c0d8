//! The HTML pages people see, in Danish and English. Everything interpolated is escaped.

use newsletter_domain::Locale;

use crate::error::{ApiError, LinkProblem};

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn layout(locale: Locale, title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"{lang}\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"robots\" content=\"noindex\">\n<title>{title}</title>\n\
         <style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;line-height:1.5}}\
         button{{font-size:1rem;padding:.6rem 1.2rem}}</style>\n</head>\n<body>\n<main>\n<h1>{title}</h1>\n{body}\n</main>\n</body>\n</html>\n",
        lang = locale.as_str(),
        title = escape(title),
    )
}

fn pick<'a>(locale: Locale, da: &'a str, en: &'a str) -> &'a str {
    match locale {
        Locale::Da => da,
        Locale::En => en,
    }
}

/// After a form signup: the same page whether or not the address was known.
pub fn signup_received(locale: Locale) -> String {
    layout(
        locale,
        pick(locale, "Tjek din indbakke", "Check your inbox"),
        pick(
            locale,
            "<p>Tak! Hvis adressen kan modtage post, har vi sendt en mail med et link. \
             Tilmeldingen træder først i kraft, når du har bekræftet den.</p>",
            "<p>Thank you! If the address can receive mail, we have sent a message with a link. \
             The subscription starts only when you confirm it.</p>",
        ),
    )
}

/// A page whose only action is a button that POSTs the link's token back to `action` (an
/// absolute URL under the public URL, so it works behind a path prefix).
fn button_page(
    locale: Locale,
    title: &str,
    text: &str,
    action: &str,
    token: &str,
    button: &str,
) -> String {
    let body = format!(
        "<p>{text}</p>\n<form method=\"post\" action=\"{action}\">\n\
         <input type=\"hidden\" name=\"token\" value=\"{token}\">\n\
         <button type=\"submit\">{button}</button>\n</form>",
        text = escape(text),
        action = escape(action),
        token = escape(token),
        button = escape(button),
    );
    layout(locale, title, &body)
}

/// The page behind the confirm link: a button that POSTs; opening it changes nothing.
pub fn confirm_prompt(locale: Locale, public_url: &str, token: &str) -> String {
    button_page(
        locale,
        pick(locale, "Bekræft tilmelding", "Confirm your subscription"),
        pick(
            locale,
            "Tryk på knappen for at bekræfte din tilmelding til nyhedsbrevet.",
            "Press the button to confirm your newsletter subscription.",
        ),
        &format!("{}/v1/confirm", public_url.trim_end_matches('/')),
        token,
        pick(locale, "Bekræft tilmelding", "Confirm subscription"),
    )
}

/// The page behind the "this wasn't me" link: a button that POSTs; opening it changes nothing.
pub fn cancel_prompt(locale: Locale, public_url: &str, token: &str) -> String {
    button_page(
        locale,
        pick(locale, "Annullér tilmelding", "Cancel the signup"),
        pick(
            locale,
            "Tryk på knappen, hvis du ikke selv har bedt om nyhedsbrevet. Kun denne anmodning annulleres; andre tilmeldinger berøres ikke.",
            "Press the button if you did not ask for the newsletter yourself. Only this request is cancelled; other subscriptions are left alone.",
        ),
        &format!("{}/v1/cancel", public_url.trim_end_matches('/')),
        token,
        pick(locale, "Annullér", "Cancel it"),
    )
}

/// After a cancelled request.
pub fn cancelled(locale: Locale) -> String {
    layout(
        locale,
        pick(
            locale,
            "Anmodningen er annulleret",
            "The request is cancelled",
        ),
        pick(
            locale,
            "<p>Tak. Vi sender ikke flere mails om denne tilmelding.</p>",
            "<p>Thank you. We will send no more mail about this signup.</p>",
        ),
    )
}

/// After a confirmation.
pub fn confirmed(locale: Locale) -> String {
    layout(
        locale,
        pick(locale, "Tilmelding bekræftet", "Subscription confirmed"),
        pick(
            locale,
            "<p>Tak, din tilmelding er bekræftet. Du kan altid framelde dig via linket nederst i hvert nyhedsbrev.</p>",
            "<p>Thank you, your subscription is confirmed. You can unsubscribe at any time from the link at the bottom of every newsletter.</p>",
        ),
    )
}

/// The page behind an unsubscribe link: a button that POSTs; opening it changes nothing.
pub fn unsubscribe_prompt(locale: Locale, public_url: &str, token: &str) -> String {
    button_page(
        locale,
        pick(locale, "Frameld nyhedsbrev", "Unsubscribe"),
        pick(
            locale,
            "Tryk på knappen for at framelde dig. Det virker med det samme.",
            "Press the button to unsubscribe. It takes effect at once.",
        ),
        &format!("{}/v1/unsubscribe", public_url.trim_end_matches('/')),
        token,
        pick(locale, "Frameld", "Unsubscribe"),
    )
}

/// After an unsubscribe.
pub fn unsubscribed(locale: Locale) -> String {
    layout(
        locale,
        pick(locale, "Du er frameldt", "You are unsubscribed"),
        pick(
            locale,
            "<p>Du modtager ikke flere nyhedsbreve fra os. Tidligere samtykke og framelding er registreret, som privatlivspolitikken beskriver.</p>",
            "<p>You will receive no more newsletters from us. Your earlier consent and this withdrawal are recorded as the privacy policy describes.</p>",
        ),
    )
}

/// An error page.
pub fn error_page(locale: Locale, error: &ApiError) -> String {
    let (title, text) = match error {
        ApiError::Validation(fields) => {
            let items: String = fields
                .iter()
                .map(|f| {
                    format!(
                        "<li><strong>{}</strong>: {}</li>",
                        escape(&f.field),
                        escape(&f.detail)
                    )
                })
                .collect();
            return layout(
                locale,
                pick(locale, "Tjek felterne", "Please check the form"),
                &format!(
                    "<p>{}</p>\n<ul>{items}</ul>",
                    pick(
                        locale,
                        "Nogle felter er ikke udfyldt rigtigt:",
                        "Some fields are not filled in correctly:"
                    )
                ),
            );
        }
        ApiError::Link(LinkProblem::Expired) => (
            pick(locale, "Linket er udløbet", "The link has expired"),
            pick(
                locale,
                "Tilmeld dig igen for at få et nyt link.",
                "Sign up again to get a new link.",
            ),
        ),
        ApiError::Link(LinkProblem::NoLongerValid) => (
            pick(
                locale,
                "Linket gælder ikke længere",
                "The link is no longer valid",
            ),
            pick(
                locale,
                "Anmodningen er erstattet, annulleret eller udløbet. Tilmeld dig igen, hvis du vil have nyhedsbrevet.",
                "The request was replaced, cancelled or has expired. Sign up again if you want the newsletter.",
            ),
        ),
        ApiError::Link(LinkProblem::Invalid) => (
            pick(locale, "Ugyldigt link", "Invalid link"),
            pick(
                locale,
                "Linket er ikke gyldigt. Kopiér hele linket fra mailen.",
                "The link is not valid. Copy the whole link from the mail.",
            ),
        ),
        ApiError::RateLimited { .. } => (
            pick(locale, "For mange forsøg", "Too many attempts"),
            pick(
                locale,
                "Prøv igen om lidt.",
                "Please try again in a little while.",
            ),
        ),
        ApiError::PayloadTooLarge { .. }
        | ApiError::UnsupportedMediaType { .. }
        | ApiError::MalformedBody(_)
        | ApiError::BadRequest(_) => (
            pick(locale, "Forkert forespørgsel", "Bad request"),
            pick(
                locale,
                "Formularen kunne ikke læses.",
                "The form could not be read.",
            ),
        ),
        _ => (
            pick(locale, "Noget gik galt", "Something went wrong"),
            pick(
                locale,
                "Vi kunne ikke gennemføre handlingen. Prøv igen om lidt.",
                "We could not complete this. Please try again in a little while.",
            ),
        ),
    };
    layout(locale, title, &format!("<p>{}</p>", escape(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolated_values_are_escaped() {
        let page = confirm_prompt(
            Locale::En,
            "https://news.example.com/x",
            "\"><script>alert(1)</script>",
        );
        assert!(page.contains("action=\"https://news.example.com/x/v1/confirm\""));
        assert!(!page.contains("<script>"));
        assert!(page.contains("&quot;&gt;&lt;script&gt;"));
    }

    #[test]
    fn pages_follow_the_locale() {
        assert!(confirmed(Locale::Da).contains("lang=\"da\""));
        assert!(confirmed(Locale::Da).contains("bekræftet"));
        assert!(confirmed(Locale::En).contains("confirmed"));
    }
}
