//! Bad input against the real `newsletter` binary: every case must get a clear 4xx (RFC 9457
//! problem+json naming the failing field for JSON clients, an HTML page for form posts), never a
//! 5xx, and must not lose anything already accepted. Also bad settings at start and `--help`.
//!
//! Each test collects all its failing expectations and reports them together, so one run shows
//! every gap at once.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{
    ADMIN_TOKEN, BROWSER_ACCEPT, ConfirmationLinks, Resp, STATUS_TOKEN, Service, list_status,
    mentions, newsletter_command, outbox_mails_to, unique_email, wait_outbox,
};

/// Failing expectations of one test, reported together at the end.
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    fn check(&mut self, ok: bool, case: &str, what: &str, r: &Resp) {
        if !ok {
            self.0
                .push(format!("[{case}] {what}\n      observed: {}", r.describe()));
        }
    }

    fn note(&mut self, case: &str, what: String) {
        self.0.push(format!("[{case}] {what}"));
    }

    /// A JSON client's error: one of `statuses`, problem+json with matching `status`, and (when
    /// given) `errors` naming `field`.
    fn problem(&mut self, case: &str, r: &Resp, statuses: &[u16], field: Option<&str>) {
        self.check(r.status < 500, case, "5xx for bad input", r);
        self.check(
            statuses.contains(&r.status),
            case,
            &format!("expected status {statuses:?}"),
            r,
        );
        self.check(
            r.content_type() == "application/problem+json",
            case,
            "expected Content-Type application/problem+json",
            r,
        );
        if let Some(v) = r.json() {
            self.check(
                v["status"].as_u64() == Some(u64::from(r.status)),
                case,
                "problem `status` member does not match the HTTP status",
                r,
            );
            self.check(v["title"].is_string(), case, "problem has no `title`", r);
            if let Some(field) = field {
                self.check(
                    !v["errors"].is_null() && mentions(&v["errors"], field),
                    case,
                    &format!("problem `errors` does not name the field `{field}`"),
                    r,
                );
            }
        } else if r.content_type() == "application/problem+json" {
            self.check(false, case, "problem+json body does not parse", r);
        }
    }

    /// A form post's error: one of `statuses` and an HTML page.
    fn html_error(&mut self, case: &str, r: &Resp, statuses: &[u16]) {
        self.check(r.status < 500, case, "5xx for bad input", r);
        self.check(
            statuses.contains(&r.status),
            case,
            &format!("expected status {statuses:?}"),
            r,
        );
        self.check(
            r.content_type() == "text/html",
            case,
            "expected an HTML page (text/html)",
            r,
        );
    }

    fn finish(self, test: &str) {
        assert!(
            self.0.is_empty(),
            "{test}: {} failing expectation(s):\n  - {}",
            self.0.len(),
            self.0.join("\n  - ")
        );
    }
}

const VALIDATION: &[u16] = &[400, 422];

/// A form case: its name, its fields, and the statuses it may get.
type FormCase<'a> = (&'a str, Vec<(&'a str, String)>, &'a [u16]);

fn long(n: usize) -> String {
    "x".repeat(n)
}

/// Signup validation: JSON and form, every field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_rejects_bad_input_and_keeps_what_was_accepted() {
    let service = Service::builder().start().await;
    let mut f = Findings::default();

    // Something valid first: it must survive everything below.
    let keeper = unique_email("keeper");
    service
        .signup_json(&json!({ "email": keeper, "name": "Keeper", "locale": "da" }))
        .await
        .expect_status(202);
    let keeper_id = service.subscriber_id(&keeper).await;
    service
        .wait_status(&keeper_id, "newsletter", "pending")
        .await;

    let long_local = format!("{}@example.com", long(65));
    let long_total = format!("{}@{}.example.com", long(60), long(250));
    let json_cases: Vec<(&str, Value, &str, &[u16])> = vec![
        (
            "missing email",
            json!({ "name": "No Mail" }),
            "email",
            VALIDATION,
        ),
        ("empty email", json!({ "email": "" }), "email", VALIDATION),
        (
            "email without @",
            json!({ "email": "alice.example.com" }),
            "email",
            VALIDATION,
        ),
        (
            "email with double @",
            json!({ "email": "alice@@example.com" }),
            "email",
            VALIDATION,
        ),
        (
            "email with two @",
            json!({ "email": "alice@bob@example.com" }),
            "email",
            VALIDATION,
        ),
        (
            "email with spaces",
            json!({ "email": "alice smith@example.com" }),
            "email",
            VALIDATION,
        ),
        (
            "email without domain",
            json!({ "email": "alice@" }),
            "email",
            VALIDATION,
        ),
        (
            "email not a string",
            json!({ "email": 42 }),
            "email",
            VALIDATION,
        ),
        (
            "CRLF in email",
            json!({ "email": "alice@example.com\r\nBcc: victim@example.org" }),
            "email",
            &[400],
        ),
        (
            "LF in email",
            json!({ "email": "alice@example.com\nBcc: victim@example.org" }),
            "email",
            &[400],
        ),
        (
            "CRLF in name",
            json!({ "email": unique_email("crlf-name"), "name": "Eve\r\nBcc: victim@example.org" }),
            "name",
            &[400],
        ),
        (
            "CR in company",
            json!({ "email": unique_email("crlf-company"), "company": "Evil\rX-Header: 1" }),
            "company",
            &[400],
        ),
        (
            "CRLF in phone",
            json!({ "email": unique_email("crlf-phone"), "phone": "+45 1234\r\nBcc: x@example.org" }),
            "phone",
            &[400],
        ),
        (
            "CRLF in source",
            json!({ "email": unique_email("crlf-source"), "source": "web\r\nX-Injected: 1" }),
            "source",
            &[400],
        ),
        (
            "CRLF in address (spec: any field)",
            json!({ "email": unique_email("crlf-address"), "address": "Vej 1\r\nBcc: x@example.org" }),
            "address",
            &[400],
        ),
        (
            "local part over 64",
            json!({ "email": long_local }),
            "email",
            VALIDATION,
        ),
        (
            "email over 254",
            json!({ "email": long_total }),
            "email",
            VALIDATION,
        ),
        (
            "name over-long",
            json!({ "email": unique_email("long-name"), "name": long(10_000) }),
            "name",
            VALIDATION,
        ),
        (
            "company over-long",
            json!({ "email": unique_email("long-company"), "company": long(10_000) }),
            "company",
            VALIDATION,
        ),
        (
            "address over-long",
            json!({ "email": unique_email("long-address"), "address": long(10_000) }),
            "address",
            VALIDATION,
        ),
        (
            "phone over-long",
            json!({ "email": unique_email("long-phone"), "phone": "1".repeat(500) }),
            "phone",
            VALIDATION,
        ),
        (
            "source over-long",
            json!({ "email": unique_email("long-source"), "source": long(10_000) }),
            "source",
            VALIDATION,
        ),
        (
            "unknown list",
            json!({ "email": unique_email("unknown-list"), "lists": ["no-such-list"] }),
            "lists",
            VALIDATION,
        ),
        (
            "one good one unknown list",
            json!({ "email": unique_email("mixed-list"), "lists": ["newsletter", "no-such-list"] }),
            "lists",
            VALIDATION,
        ),
        (
            "invalid locale",
            json!({ "email": unique_email("bad-locale"), "locale": "fr" }),
            "locale",
            VALIDATION,
        ),
        (
            "locale not a string",
            json!({ "email": unique_email("bad-locale2"), "locale": ["da"] }),
            "locale",
            VALIDATION,
        ),
    ];
    let mut rejected_emails = Vec::new();
    for (case, body, field, statuses) in &json_cases {
        let r = service.signup_json(body).await;
        f.problem(&format!("json: {case}"), &r, statuses, Some(field));
        // Only where the address itself was valid can it have slipped in (checked at the end).
        if *field != "email"
            && let Some(e) = body["email"].as_str()
        {
            rejected_emails.push(e.to_owned());
        }
    }

    // Malformed JSON and non-object JSON.
    for (case, raw) in [
        ("malformed JSON", &b"{\"email\": "[..]),
        ("JSON array", &b"[\"a@example.com\"]"[..]),
        ("not JSON at all", &b"email=a@example.com"[..]),
    ] {
        let r = service
            .post_raw(
                "/v1/subscriptions",
                Some("application/json"),
                "application/json",
                raw.to_vec(),
            )
            .await;
        f.problem(&format!("json: {case}"), &r, &[400, 422], None);
    }

    // Forms: the same validation, answered with an HTML page.
    let form_cases: Vec<FormCase<'_>> = vec![
        (
            "missing email",
            vec![("name", "No Mail".into())],
            VALIDATION,
        ),
        (
            "email without @",
            vec![("email", "alice.example.com".into())],
            VALIDATION,
        ),
        (
            "email with double @",
            vec![("email", "alice@@example.com".into())],
            VALIDATION,
        ),
        (
            "email with spaces",
            vec![("email", "alice smith@example.com".into())],
            VALIDATION,
        ),
        (
            "CRLF in email",
            vec![(
                "email",
                "alice@example.com\r\nBcc: victim@example.org".into(),
            )],
            &[400],
        ),
        (
            "CRLF in name",
            vec![
                ("email", unique_email("form-crlf-name")),
                ("name", "Eve\r\nBcc: victim@example.org".into()),
            ],
            &[400],
        ),
        (
            "name over-long",
            vec![
                ("email", unique_email("form-long-name")),
                ("name", long(10_000)),
            ],
            VALIDATION,
        ),
        (
            "unknown list",
            vec![
                ("email", unique_email("form-unknown-list")),
                ("lists", "no-such-list".into()),
            ],
            VALIDATION,
        ),
        (
            "invalid locale",
            vec![
                ("email", unique_email("form-bad-locale")),
                ("locale", "xx".into()),
            ],
            VALIDATION,
        ),
    ];
    for (case, fields, statuses) in &form_cases {
        let borrowed: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = service.signup_form(&borrowed).await;
        f.html_error(&format!("form: {case}"), &r, statuses);
        for (k, v) in fields {
            if *k == "email" && v.starts_with("form-") {
                rejected_emails.push(v.clone());
            }
        }
    }

    // Wrong content types: 415.
    for (case, ct) in [
        ("text/plain", Some("text/plain")),
        ("application/xml", Some("application/xml")),
        (
            "multipart/form-data",
            Some("multipart/form-data; boundary=x"),
        ),
        ("no content type", None),
    ] {
        let r = service
            .post_raw(
                "/v1/subscriptions",
                ct,
                "application/json",
                b"email=a@example.com".to_vec(),
            )
            .await;
        f.problem(&format!("415: {case}"), &r, &[415], None);
    }

    // Oversized bodies: 413 (1 MiB).
    let big_json = json!({ "email": unique_email("big"), "name": long(1024 * 1024) }).to_string();
    let r = service
        .post_raw(
            "/v1/subscriptions",
            Some("application/json"),
            "application/json",
            big_json.into_bytes(),
        )
        .await;
    f.problem("413: 1 MiB JSON", &r, &[413], None);
    let mut big_form = format!(
        "email={}&name=",
        unique_email("bigform").replace('@', "%40")
    );
    big_form.push_str(&long(1024 * 1024));
    let r = service
        .post_raw(
            "/v1/subscriptions",
            Some("application/x-www-form-urlencoded"),
            BROWSER_ACCEPT,
            big_form.into_bytes(),
        )
        .await;
    f.html_error("413: 1 MiB form", &r, &[413]);

    // Honeypot: silently accepted, nothing happens.
    let normal = service
        .signup_json(&json!({ "email": unique_email("normal") }))
        .await;
    let honey = unique_email("honeypot");
    let r = service
        .signup_json(&json!({ "email": honey, "website": "http://spam.example.org" }))
        .await;
    f.check(
        r.status == 202,
        "honeypot json",
        "expected 202 like any signup",
        &r,
    );
    f.check(
        r.body == normal.body,
        "honeypot json",
        &format!(
            "answer differs from a normal signup's ({})",
            normal.describe()
        ),
        &r,
    );
    let honey_form = unique_email("honeypot-form");
    let r = service
        .signup_form(&[("email", &honey_form), ("website", "spam")])
        .await;
    f.check(
        r.status == 200 && r.content_type() == "text/html",
        "honeypot form",
        "expected the usual 200 HTML page",
        &r,
    );

    // Everything accepted is still there, nothing rejected got in, no mail for honeypots.
    wait_outbox(&service.outbox_dir(), &keeper, 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let keeper_now = service.subscriber(&keeper_id).await;
    if list_status(&keeper_now, "newsletter").as_deref() != Some("pending") {
        f.note(
            "keeper",
            format!("the valid signup was lost or changed: {keeper_now}"),
        );
    }
    for e in rejected_emails.iter().chain([&honey, &honey_form]) {
        if let Some(s) = service.lookup(e).await {
            f.note(
                "rejected",
                format!("{e:?} was rejected/honeypot but is known: {s}"),
            );
        }
        if !outbox_mails_to(&service.outbox_dir(), e).is_empty() {
            f.note(
                "rejected",
                format!("a mail was written for rejected/honeypot {e:?}"),
            );
        }
    }
    // No victim address received anything through header injection.
    if !outbox_mails_to(&service.outbox_dir(), "victim@example.org").is_empty() {
        f.note(
            "injection",
            "a mail in the outbox names victim@example.org".into(),
        );
    }
    f.finish("signup bad input");
}

/// NEWSLETTER_SIGNUP_RATE_LIMIT=3: the 4th signup within a minute is 429 with Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_rate_limit_answers_429_with_retry_after() {
    let service = Service::builder()
        .env("NEWSLETTER_SIGNUP_RATE_LIMIT", "3")
        .start()
        .await;
    let mut f = Findings::default();
    let mut accepted = Vec::new();
    for i in 0..3 {
        let email = unique_email(&format!("limited{i}"));
        let r = service.signup_json(&json!({ "email": email })).await;
        f.check(r.status == 202, "within the limit", "expected 202", &r);
        accepted.push(email);
    }
    let r = service
        .signup_json(&json!({ "email": unique_email("limited-json") }))
        .await;
    f.problem("4th signup (json)", &r, &[429], None);
    let retry = r.header("retry-after");
    f.check(
        retry
            .as_deref()
            .is_some_and(|v| v.trim().parse::<u64>().is_ok_and(|s| (1..=60).contains(&s))),
        "4th signup (json)",
        "expected Retry-After with 1..=60 seconds",
        &r,
    );
    let r = service
        .signup_form(&[("email", &unique_email("limited-form"))])
        .await;
    f.html_error("5th signup (form)", &r, &[429]);
    f.check(
        r.header("retry-after").is_some(),
        "5th signup (form)",
        "expected Retry-After",
        &r,
    );
    // Other endpoints are not throttled by the signup limit.
    let h = service.get("/health/ready").await;
    f.check(h.status == 200, "health while limited", "expected 200", &h);
    // The accepted ones are all there.
    for e in &accepted {
        service.wait_lookup(e).await;
    }
    f.finish("rate limit");
}

/// Bad, forged and mismatched tokens on confirm and unsubscribe: a clear 4xx page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_get_a_clear_4xx_page() {
    let service = Service::builder().start().await;
    let mut f = Findings::default();

    let email = unique_email("tokens");
    service
        .signup_json(&json!({ "email": email, "locale": "en" }))
        .await
        .expect_status(202);
    let mails = wait_outbox(&service.outbox_dir(), &email, 1).await;
    let links = ConfirmationLinks::of(&mails[0], &service.base);
    let confirm_token = links.confirm_token();
    let cancel_token = support::token_of(&links.wasnt_me);
    let id = service.subscriber_id(&email).await;
    let unsubscribe_url = service
        .unsubscribe_url("newsletter", "pending", &email)
        .await;
    let unsubscribe_token = support::token_of(&unsubscribe_url);

    // A forged token: the real one with one character changed in the middle and one at the end.
    let forge = |t: &str, at: usize| {
        let mut chars: Vec<char> = t.chars().collect();
        let i = at.min(chars.len().saturating_sub(1));
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect::<String>()
    };
    let forged_mid = forge(&confirm_token, confirm_token.len() / 2);
    let forged_end = forge(&confirm_token, confirm_token.len() - 2);
    let forged_unsub = forge(&unsubscribe_token, unsubscribe_token.len() - 2);
    let garbage = "not-a-token".to_owned();
    let huge = long(20_000);

    let confirm_bad: Vec<(&str, String)> = vec![
        ("garbage", garbage.clone()),
        ("empty", String::new()),
        ("forged payload", forged_mid),
        ("forged signature", forged_end.clone()),
        (
            "unsubscribe token used to confirm",
            unsubscribe_token.clone(),
        ),
        ("cancel token used to confirm", cancel_token.clone()),
        ("20k chars", huge.clone()),
    ];
    let q = |t: &str| url::form_urlencoded::byte_serialize(t.as_bytes()).collect::<String>();
    for (case, token) in &confirm_bad {
        let r = service
            .get(&format!("/v1/confirm?token={}", q(token)))
            .await;
        f.html_error(
            &format!("GET confirm: {case}"),
            &r,
            &[400, 403, 404, 410, 414, 422],
        );
        let r = service.post_form("/v1/confirm", &[("token", token)]).await;
        f.html_error(
            &format!("POST confirm: {case}"),
            &r,
            &[400, 403, 404, 410, 413, 422],
        );
    }
    let r = service.get("/v1/confirm").await;
    f.html_error("GET confirm: no token", &r, &[400, 422]);
    let r = service.post_form("/v1/confirm", &[("other", "x")]).await;
    f.html_error("POST confirm: no token field", &r, &[400, 422]);

    let unsubscribe_bad: Vec<(&str, String)> = vec![
        ("garbage", garbage.clone()),
        ("empty", String::new()),
        ("forged signature", forged_unsub),
        ("confirm token used to unsubscribe", confirm_token.clone()),
        ("cancel token used to unsubscribe", cancel_token.clone()),
    ];
    for (case, token) in &unsubscribe_bad {
        let url = format!("/v1/unsubscribe?token={}", q(token));
        let r = service.get(&url).await;
        f.html_error(
            &format!("GET unsubscribe: {case}"),
            &r,
            &[400, 403, 404, 410, 422],
        );
        let r = service.one_click(&url).await;
        f.check(r.status < 500, &format!("one-click: {case}"), "5xx", &r);
        f.check(
            (400..500).contains(&r.status),
            &format!("one-click: {case}"),
            "expected a 4xx",
            &r,
        );
    }
    // The "this wasn't me" endpoint: bad and mismatched tokens.
    let forged_cancel = forge(&cancel_token, cancel_token.len() - 2);
    for (case, token) in [
        ("garbage", garbage.clone()),
        ("empty", String::new()),
        ("forged signature", forged_cancel),
        ("confirm token used to cancel", confirm_token.clone()),
        (
            "unsubscribe token used to cancel",
            unsubscribe_token.clone(),
        ),
    ] {
        let r = service
            .get(&format!("/v1/cancel?token={}", q(&token)))
            .await;
        f.html_error(
            &format!("GET cancel: {case}"),
            &r,
            &[400, 403, 404, 410, 422],
        );
        let r = service.post_form("/v1/cancel", &[("token", &token)]).await;
        f.html_error(
            &format!("POST cancel: {case}"),
            &r,
            &[400, 403, 404, 410, 422],
        );
    }
    // None of that changed anything.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let now = service.subscriber(&id).await;
    if list_status(&now, "newsletter").as_deref() != Some("pending") {
        f.note("after bad tokens", format!("status changed: {now}"));
    }
    if now["locale"].as_str() != Some("en") {
        f.note("after bad tokens", format!("locale is not `en`: {now}"));
    }

    // A POST to a real unsubscribe link with another body or content type: no 5xx (whether it
    // counts as the page's button is the service's call).
    for (ct, body) in [
        (
            "application/x-www-form-urlencoded",
            &b"List-Unsubscribe=Maybe"[..],
        ),
        (
            "application/json",
            &b"{\"List-Unsubscribe\": \"One-Click\"}"[..],
        ),
        ("text/plain", &b"List-Unsubscribe=One-Click"[..]),
    ] {
        let r = service
            .post_raw(&unsubscribe_url, Some(ct), "*/*", body.to_vec())
            .await;
        f.check(r.status < 500, &format!("one-click: {ct} body"), "5xx", &r);
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let now = service.subscriber(&id).await;
    eprintln!("after POSTs with other bodies to the unsubscribe link: {now}");

    f.finish("bad tokens");
}

/// An expired confirm token (NEWSLETTER_CONFIRM_TTL=3s) gets a clear 4xx
/// page and changes nothing; the unsubscribe link of the same mail still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_confirm_token_gets_a_clear_4xx_page() {
    let service = Service::builder()
        .env("NEWSLETTER_CONFIRM_TTL", "3s")
        .start()
        .await;
    let mut f = Findings::default();
    let email = unique_email("expiring");
    service
        .signup_json(&json!({ "email": email, "locale": "en" }))
        .await
        .expect_status(202);
    let mails = wait_outbox(&service.outbox_dir(), &email, 1).await;
    let links = ConfirmationLinks::of(&mails[0], &service.base);
    let confirm_token = links.confirm_token();
    let id = service.subscriber_id(&email).await;
    let unsubscribe_url = service
        .unsubscribe_url("newsletter", "pending", &email)
        .await;
    // Still valid now.
    let r = service.get(&links.confirm).await;
    f.check(
        r.status == 200,
        "GET confirm: fresh",
        "expected the confirm page",
        &r,
    );
    // Wait past the TTL (plus a margin for clock granularity).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let r = service.get(&links.confirm).await;
    f.html_error("GET confirm: expired", &r, &[400, 403, 410, 422]);
    let r = service
        .post_form("/v1/confirm", &[("token", &confirm_token)])
        .await;
    f.html_error("POST confirm: expired", &r, &[400, 403, 410, 422]);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let now = service.subscriber(&id).await;
    if list_status(&now, "newsletter").as_deref() != Some("pending") {
        f.note(
            "expired confirm",
            format!("an expired token changed the status: {now}"),
        );
    }
    // Unsubscribe tokens do not expire.
    let r = service.get(&unsubscribe_url).await;
    f.check(
        r.status == 200,
        "GET unsubscribe after confirm TTL",
        "unsubscribe links never expire",
        &r,
    );
    f.finish("bad tokens");
}

/// The internal API: 401 without/with a wrong token, 403 without the scope, 400/404 for bad input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_api_rejects_bad_auth_and_bad_input() {
    let service = Service::builder().start().await;
    let mut f = Findings::default();
    let known = unique_email("known");
    service
        .signup_json(&json!({ "email": known }))
        .await
        .expect_status(202);
    let id = service.subscriber_id(&known).await;

    let lookup = "/internal/v1/subscribers/lookup";
    let one = format!("/internal/v1/subscribers/{id}");
    let listing = "/internal/v1/lists/newsletter/subscribers?status=confirmed";
    let body = json!({ "emails": [known] });
    for (case, token, want) in [
        ("no token", None, 401),
        ("wrong token", Some("wrong-secret-wrong-secret-123456"), 401),
        ("admin-only token", Some(ADMIN_TOKEN), 403),
    ] {
        let r = service.internal_post(lookup, token, &body).await;
        f.problem(&format!("lookup: {case}"), &r, &[want], None);
        let r = service.internal_get(&one, token).await;
        f.problem(&format!("subscriber: {case}"), &r, &[want], None);
        let r = service.internal_get(listing, token).await;
        f.problem(&format!("listing: {case}"), &r, &[want], None);
    }
    // Not a bearer scheme at all.
    let r = service
        .client
        .get(service.url(&one))
        .header("authorization", format!("Basic {STATUS_TOKEN}"))
        .send()
        .await
        .expect("request");
    let r = support_resp(r, "GET subscriber with Basic auth").await;
    f.problem("subscriber: Basic scheme", &r, &[401], None);

    // Lookup limits and shapes.
    let thousand: Vec<String> = (0..1000).map(|i| format!("bulk{i}@example.com")).collect();
    let r = service
        .internal_post(lookup, Some(STATUS_TOKEN), &json!({ "emails": thousand }))
        .await;
    f.check(r.status == 200, "lookup: exactly 1000", "expected 200", &r);
    let too_many: Vec<String> = (0..1001).map(|i| format!("bulk{i}@example.com")).collect();
    let r = service
        .internal_post(lookup, Some(STATUS_TOKEN), &json!({ "emails": too_many }))
        .await;
    f.problem("lookup: 1001 emails", &r, &[400, 413, 422], Some("emails"));
    f.check(r.status == 400, "lookup: 1001 emails", "spec says 400", &r);
    let r = service
        .internal_post(lookup, Some(STATUS_TOKEN), &json!({ "email": known }))
        .await;
    f.problem("lookup: no emails member", &r, VALIDATION, Some("emails"));
    let r = service
        .internal_post(
            lookup,
            Some(STATUS_TOKEN),
            &json!({ "emails": "a@example.com" }),
        )
        .await;
    f.problem(
        "lookup: emails not an array",
        &r,
        VALIDATION,
        Some("emails"),
    );
    let r = service
        .client
        .post(service.url(lookup))
        .bearer_auth(STATUS_TOKEN)
        .header("content-type", "application/json")
        .body("{\"emails\": [")
        .send()
        .await
        .expect("request");
    let r = support_resp(r, "POST lookup malformed").await;
    f.problem("lookup: malformed JSON", &r, &[400], None);
    let r = service
        .internal_post(
            lookup,
            Some(STATUS_TOKEN),
            &json!({ "emails": ["not-an-email", known] }),
        )
        .await;
    f.check(
        r.status < 500,
        "lookup: an invalid address among valid ones",
        "5xx",
        &r,
    );

    // Subscriber by id.
    let r = service
        .internal_get(
            &format!("/internal/v1/subscribers/{}", uuid::Uuid::now_v7()),
            Some(STATUS_TOKEN),
        )
        .await;
    f.problem("subscriber: unknown id", &r, &[404], None);
    let r = service
        .internal_get("/internal/v1/subscribers/not-a-uuid", Some(STATUS_TOKEN))
        .await;
    f.problem("subscriber: malformed id", &r, &[400, 404], None);

    // Listing.
    let r = service
        .internal_get(
            "/internal/v1/lists/no-such-list/subscribers?status=confirmed",
            Some(STATUS_TOKEN),
        )
        .await;
    f.problem("listing: unknown list", &r, &[404], None);
    for (case, query, field) in [
        (
            "invalid cursor",
            "status=confirmed&after=%25%25garbage%25%25",
            "after",
        ),
        (
            "invalid cursor (base64-ish)",
            "status=confirmed&after=AAAAAAAAAAAAAAAA",
            "after",
        ),
        ("invalid status", "status=bogus", "status"),
        ("negative limit", "status=confirmed&limit=-1", "limit"),
        ("non-numeric limit", "status=confirmed&limit=many", "limit"),
    ] {
        let r = service
            .internal_get(
                &format!("/internal/v1/lists/newsletter/subscribers?{query}"),
                Some(STATUS_TOKEN),
            )
            .await;
        f.problem(&format!("listing: {case}"), &r, &[400], Some(field));
    }
    for query in ["status=confirmed&limit=0", "status=confirmed&limit=1000000"] {
        let r = service
            .internal_get(
                &format!("/internal/v1/lists/newsletter/subscribers?{query}"),
                Some(STATUS_TOKEN),
            )
            .await;
        f.check(r.status < 500, &format!("listing: {query}"), "5xx", &r);
    }

    // The accepted subscriber is untouched.
    let s = service.subscriber(&id).await;
    if list_status(&s, "newsletter").is_none() {
        f.note(
            "after internal bad input",
            format!("subscriber lost its list: {s}"),
        );
    }
    f.finish("internal API");
}

async fn support_resp(r: reqwest::Response, what: &str) -> Resp {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.text().await.unwrap_or_default();
    Resp {
        status,
        headers,
        body,
        request: what.to_owned(),
    }
}

/// `newsletter --help` names every subcommand and every setting.
#[test]
fn help_lists_every_subcommand_and_setting() {
    let out = newsletter_command()
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .expect("run newsletter --help");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "newsletter --help failed: {text}");
    let mut missing = Vec::new();
    for word in [
        "serve",
        "api",
        "projector",
        "mailer",
        "rebuild-projections",
        "NEWSLETTER_LISTEN",
        "NEWSLETTER_PUBLIC_URL",
        "NEWSLETTER_DATA_DIR",
        "NEWSLETTER_DATABASE_URL",
        "NEWSLETTER_SMTP_URL",
        "NEWSLETTER_MAIL_FROM",
        "NEWSLETTER_LISTS",
        "NEWSLETTER_TOKENS",
        "NEWSLETTER_SIGNUP_RATE_LIMIT",
        "NEWSLETTER_CONFIRM_TTL",
        "NEWSLETTER_MAIL_RETRY_BASE",
        "NEWSLETTER_MAIL_RETRY_ATTEMPTS",
        "NEWSLETTER_THANK_YOU_URL",
        "NEWSLETTER_MODE",
    ] {
        if !text.contains(word) {
            missing.push(word);
        }
    }
    assert!(
        missing.is_empty(),
        "`newsletter --help` does not mention {missing:?}:\n{text}"
    );
}

/// Bad settings and an unreachable database: non-zero exit, stderr names the setting, quickly.
#[test]
fn bad_settings_exit_non_zero_naming_the_setting() {
    let mut failures = Vec::new();
    for (var, value) in [
        ("NEWSLETTER_DATABASE_URL", "postgres://127.0.0.1:1/x"),
        ("NEWSLETTER_SIGNUP_RATE_LIMIT", "abc"),
        ("NEWSLETTER_LISTEN", "not-an-address"),
        ("NEWSLETTER_PUBLIC_URL", "not a url"),
        ("NEWSLETTER_CONFIRM_TTL", "forever"),
        ("NEWSLETTER_MAIL_RETRY_ATTEMPTS", "-3"),
        ("NEWSLETTER_TOKENS", "reader:short:status"),
        ("NEWSLETTER_MODE", "staging"),
        ("NEWSLETTER_SMTP_URL", "ftp://127.0.0.1:21"),
        ("NEWSLETTER_LISTS", "bad list name!,"),
    ] {
        let home = tempfile::tempdir().expect("temp dir");
        let port = support::free_port();
        let mut child = newsletter_command()
            .arg("serve")
            .env("NEWSLETTER_LISTEN", format!("127.0.0.1:{port}"))
            .env("NEWSLETTER_DATA_DIR", home.path().join("data"))
            .env(var, value)
            .current_dir(home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start newsletter serve");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        let stderr = child
            .stderr
            .take()
            .map(support::read_all)
            .unwrap_or_default();
        match status {
            None => failures.push(format!("{var}={value}: still running after 30 s")),
            Some(s) if s.success() => {
                failures.push(format!("{var}={value}: exited 0; stderr: {stderr}"));
            }
            Some(_) => {
                if !stderr.lines().any(|l| l.contains(var)) {
                    failures.push(format!(
                        "{var}={value}: exited non-zero but stderr does not name {var}: {stderr}"
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "bad settings:\n  - {}",
        failures.join("\n  - ")
    );
}
