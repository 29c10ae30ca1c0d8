//! The whole subscription flow over real HTTP, against the real `newsletter` binary, a real SMTP
//! server on loopback, and SQLite or PostgreSQL:
//! signup → confirmation mail → confirm page (GET changes nothing) → confirm (POST) → status by id
//! and by lookup → listing with RFC 8058 headers → one-click unsubscribe → restart keeps
//! everything → re-subscribe goes through double opt-in again. Plus concurrent confirm and
//! one-click unsubscribe, the OpenAPI document, and the form-signup answer pages.
//!
//! The PostgreSQL variants run when `NEWSLETTER_TEST_DATABASE_URL` is set (each in a fresh
//! database); otherwise they are reported as ignored.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{
    ADMIN_TOKEN, Backend, ConfirmationLinks, Mail, STATUS_TOKEN, Service, SmtpSink, list_status,
    unique_email, unsubscribe_headers,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_flow_sqlite() {
    full_flow(Backend::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "NEWSLETTER_TEST_DATABASE_URL is not set: PostgreSQL tests not run"
)]
async fn full_flow_postgres() {
    full_flow(Backend::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_confirm_and_one_click_sqlite() {
    concurrent_confirm_and_one_click(Backend::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "NEWSLETTER_TEST_DATABASE_URL is not set: PostgreSQL tests not run"
)]
async fn concurrent_confirm_and_one_click_postgres() {
    concurrent_confirm_and_one_click(Backend::postgres().await).await;
}

/// The first mail's confirmation links, after checking where it came from.
async fn confirmation_mail(
    sink: &SmtpSink,
    service: &Service,
    email: &str,
    nth: usize,
) -> ConfirmationLinks {
    let mails = sink.wait_for_mail(email, nth).await;
    let received = &mails[nth - 1];
    let mail = Mail::parse(&received.raw);
    assert!(
        received.mail_from.contains("nyhedsbrev@e2e.example.com"),
        "envelope sender is not NEWSLETTER_MAIL_FROM: {:?}",
        received.mail_from
    );
    ConfirmationLinks::of(&mail, &service.base)
}

/// The confirm page: 200, HTML, a form that POSTs to /v1/confirm with a hidden `token` field.
fn assert_confirm_page(page: &support::Resp, token: &str) {
    page.expect_status(200).expect_content_type("text/html");
    let body = page.body.to_ascii_lowercase();
    assert!(
        body.contains("<form")
            && (body.contains("method=\"post\"")
                || body.contains("method='post'")
                || body.contains("method=post")),
        "the confirm page has no POST form: {}",
        page.describe()
    );
    assert!(
        body.contains("/v1/confirm"),
        "the confirm page's form does not target /v1/confirm: {}",
        page.describe()
    );
    assert!(
        body.contains("name=\"token\"") && body.contains("type=\"hidden\""),
        "the confirm page has no hidden `token` field: {}",
        page.describe()
    );
    let html_token = token.replace('&', "&amp;");
    assert!(
        page.body.contains(token) || page.body.contains(&html_token),
        "the confirm page's hidden field does not carry the token from the link: {}",
        page.describe()
    );
}

async fn full_flow(backend: Backend) {
    let sink = SmtpSink::start();
    let mut service = Service::builder()
        .smtp(&sink)
        .backend(backend)
        .start()
        .await;

    // --- liveness and the API description -----------------------------------------------------
    service.get("/health/live").await.expect_status(200);

    // --- signup by form ---------------------------------------------------------------------------
    let alice = unique_email("alice");
    let signup = service
        .signup_form(&[
            ("email", &alice),
            ("name", "Alice Ærø"),
            ("company", "Æblegården ApS"),
            ("lists", "newsletter"),
            ("locale", "en"),
            ("source", "e2e-flow"),
        ])
        .await;
    signup.expect_status(200).expect_content_type("text/html");

    let first = confirmation_mail(&sink, &service, &alice, 1).await;
    let id = service.subscriber_id(&alice).await;
    service.wait_status(&id, "newsletter", "pending").await;

    // --- GET confirm page changes nothing -------------------------------------------------------
    let page = service.get(&first.confirm).await;
    assert_confirm_page(&page, &first.confirm_token());
    // A security scanner opening the link twice must not confirm either.
    service.get(&first.confirm).await.expect_status(200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still = service.subscriber(&id).await;
    assert_eq!(
        list_status(&still, "newsletter").as_deref(),
        Some("pending"),
        "GET /v1/confirm changed the status: {still}"
    );

    // --- POST confirms ----------------------------------------------------------------------------
    let confirmed = service
        .post_form("/v1/confirm", &[("token", &first.confirm_token())])
        .await;
    confirmed.expect_success().expect_content_type("text/html");
    let by_id = service.wait_status(&id, "newsletter", "confirmed").await;
    assert_eq!(
        by_id["id"].as_str(),
        Some(id.as_str()),
        "record of another id: {by_id}"
    );
    assert_eq!(
        by_id["locale"].as_str(),
        Some("en"),
        "locale not kept: {by_id}"
    );
    let looked_up = service
        .lookup(&alice)
        .await
        .expect("alice is known to the lookup");
    assert_eq!(looked_up["id"].as_str(), Some(id.as_str()));
    assert_eq!(
        list_status(&looked_up, "newsletter").as_deref(),
        Some("confirmed"),
        "lookup disagrees with the record by id: {looked_up}"
    );
    let since = looked_up["lists"][0]["since"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        !since.is_empty(),
        "no `since` on the list entry: {looked_up}"
    );
    assert_eq!(
        list_status(&looked_up, "offers"),
        None,
        "alice never asked for `offers`: {looked_up}"
    );

    // Bob signs up to two lists (repeated form field) and confirms once.
    let bob = unique_email("bob");
    service
        .signup_form(&[
            ("email", &bob),
            ("name", "Bob"),
            ("lists", "newsletter"),
            ("lists", "offers"),
            ("locale", "da"),
        ])
        .await
        .expect_status(200)
        .expect_content_type("text/html");
    let bob_links = confirmation_mail(&sink, &service, &bob, 1).await;
    let bob_id = service.subscriber_id(&bob).await;
    service
        .post_form("/v1/confirm", &[("token", &bob_links.confirm_token())])
        .await
        .expect_success();
    service
        .wait_status(&bob_id, "newsletter", "confirmed")
        .await;
    service.wait_status(&bob_id, "offers", "confirmed").await;

    // --- listing with RFC 8058 headers ----------------------------------------------------------
    let listing = service.list_all("newsletter", "confirmed", 1).await;
    let entry = listing
        .iter()
        .find(|e| e["email"].as_str() == Some(alice.as_str()))
        .unwrap_or_else(|| panic!("alice is not in the confirmed listing: {listing:?}"))
        .clone();
    assert!(
        listing
            .iter()
            .any(|e| e["email"].as_str() == Some(bob.as_str())),
        "bob is not in the confirmed listing (paged with limit=1): {listing:?}"
    );
    assert_eq!(
        entry["name"].as_str(),
        Some("Alice Ærø"),
        "listing entry: {entry}"
    );
    assert_eq!(
        entry["locale"].as_str(),
        Some("en"),
        "listing entry: {entry}"
    );
    let unsubscribe_url = entry["unsubscribe_url"]
        .as_str()
        .unwrap_or_else(|| panic!("listing entry without unsubscribe_url: {entry}"))
        .to_owned();
    assert!(
        unsubscribe_url.starts_with(&format!("{}/v1/unsubscribe?token=", service.base)),
        "unsubscribe_url is not {{PUBLIC_URL}}/v1/unsubscribe?token=…: {unsubscribe_url}"
    );
    let (list_unsubscribe, list_unsubscribe_post) = unsubscribe_headers(&entry);
    assert_eq!(
        list_unsubscribe.as_deref(),
        Some(format!("<{unsubscribe_url}>").as_str()),
        "List-Unsubscribe must be <unsubscribe_url>: {entry}"
    );
    assert_eq!(
        list_unsubscribe_post.as_deref(),
        Some("List-Unsubscribe=One-Click"),
        "List-Unsubscribe-Post: {entry}"
    );
    let offers = service.list_all("offers", "confirmed", 100).await;
    assert!(
        offers
            .iter()
            .any(|e| e["email"].as_str() == Some(bob.as_str()))
            && !offers
                .iter()
                .any(|e| e["email"].as_str() == Some(alice.as_str())),
        "offers listing should hold bob and not alice: {offers:?}"
    );

    // --- the unsubscribe page changes nothing; one-click acts at once --------------------------
    let page = service.get(&unsubscribe_url).await;
    page.expect_status(200).expect_content_type("text/html");
    assert!(
        page.body.to_ascii_lowercase().contains("<form"),
        "the unsubscribe page has no button/form: {}",
        page.describe()
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        list_status(&service.subscriber(&id).await, "newsletter").as_deref(),
        Some("confirmed"),
        "GET /v1/unsubscribe changed the status"
    );
    service.one_click(&unsubscribe_url).await.expect_success();
    service.wait_status(&id, "newsletter", "unsubscribed").await;
    let listing = service.list_all("newsletter", "confirmed", 100).await;
    assert!(
        !listing
            .iter()
            .any(|e| e["email"].as_str() == Some(alice.as_str())),
        "alice is still listed as confirmed after unsubscribing"
    );

    // Bob: one-click on the newsletter list leaves offers alone.
    let bob_entry = listing
        .iter()
        .find(|e| e["email"].as_str() == Some(bob.as_str()))
        .expect("bob still listed on newsletter")
        .clone();
    let bob_unsub = bob_entry["unsubscribe_url"]
        .as_str()
        .expect("bob's unsubscribe_url")
        .to_owned();
    service.one_click(&bob_unsub).await.expect_success();
    service
        .wait_status(&bob_id, "newsletter", "unsubscribed")
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        list_status(&service.subscriber(&bob_id).await, "offers").as_deref(),
        Some("confirmed"),
        "unsubscribing bob from `newsletter` changed `offers`"
    );

    // --- restart keeps everything ---------------------------------------------------------------
    let alice_mails_before = sink.messages_to(&alice).len();
    service.kill();
    service.start_again().await;
    let after = service.subscriber(&id).await;
    assert_eq!(
        list_status(&after, "newsletter").as_deref(),
        Some("unsubscribed"),
        "alice's status after restart: {after}"
    );
    let after_bob = service.subscriber(&bob_id).await;
    assert_eq!(
        list_status(&after_bob, "newsletter").as_deref(),
        Some("unsubscribed")
    );
    assert_eq!(
        list_status(&after_bob, "offers").as_deref(),
        Some("confirmed")
    );
    let looked_up = service
        .lookup(&alice)
        .await
        .expect("alice known after restart");
    assert_eq!(
        looked_up["id"].as_str(),
        Some(id.as_str()),
        "id changed over restart"
    );
    let offers = service.list_all("offers", "confirmed", 100).await;
    let bob_offers = offers
        .iter()
        .find(|e| e["email"].as_str() == Some(bob.as_str()))
        .expect("bob still confirmed on offers after restart")
        .clone();
    // Links signed before the restart still work (the keys live in the data dir / database).
    let bob_offers_unsub = bob_offers["unsubscribe_url"]
        .as_str()
        .expect("unsubscribe_url")
        .to_owned();
    service.get(&unsubscribe_url).await.expect_status(200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        sink.messages_to(&alice).len(),
        alice_mails_before,
        "the restart re-sent a confirmation mail to an already handled subscriber"
    );

    // --- re-subscribe goes through double opt-in again -----------------------------------------
    let again = service
        .signup_json(&json!({ "email": alice, "lists": ["newsletter"], "locale": "en" }))
        .await;
    again
        .expect_status(202)
        .expect_content_type("application/json");
    let second = confirmation_mail(&sink, &service, &alice, alice_mails_before + 1).await;
    assert_ne!(
        second.confirm_token(),
        first.confirm_token(),
        "the re-subscription mail reuses the old confirm token"
    );
    service.wait_status(&id, "newsletter", "pending").await;
    service
        .post_form("/v1/confirm", &[("token", &second.confirm_token())])
        .await
        .expect_success();
    service.wait_status(&id, "newsletter", "confirmed").await;

    // One-click from a link signed before the restart.
    service.one_click(&bob_offers_unsub).await.expect_success();
    service.wait_status(&bob_id, "offers", "unsubscribed").await;
}

/// Confirm and one-click unsubscribe fired at once, on several subscribers.
async fn concurrent_confirm_and_one_click(backend: Backend) {
    const SUBSCRIBERS: usize = 12;
    let sink = SmtpSink::start();
    let service = Service::builder()
        .smtp(&sink)
        .backend(backend)
        .start()
        .await;

    let mut people = Vec::new();
    for i in 0..SUBSCRIBERS {
        let email = unique_email(&format!("race{i}"));
        service
            .signup_json(&json!({ "email": email, "locale": "da" }))
            .await
            .expect_status(202);
        people.push(email);
    }
    let mut subjects = Vec::new();
    for email in &people {
        let links = confirmation_mail(&sink, &service, email, 1).await;
        let id = service.subscriber_id(email).await;
        service.wait_status(&id, "newsletter", "pending").await;
        subjects.push((email.clone(), id, links));
    }

    let mut failures = Vec::new();
    // All subscribers at once, each with its confirm and its one-click racing.
    let races = subjects.iter().map(|(email, _, links)| {
        let service = &service;
        async move {
            let token = links.confirm_token();
            let fields = [("token", token.as_str())];
            let confirm = service.post_form("/v1/confirm", &fields);
            let unsubscribe = service.one_click(&links.unsubscribe);
            let (c, u) = tokio::join!(confirm, unsubscribe);
            (email.clone(), c, u)
        }
    });
    for (email, c, u) in futures::future::join_all(races).await {
        for r in [&c, &u] {
            if r.status >= 500 {
                failures.push(format!("{email}: 5xx: {}", r.describe()));
            } else if !(200..300).contains(&r.status) {
                failures.push(format!("{email}: not 2xx: {}", r.describe()));
            }
        }
    }
    for (email, id, _) in &subjects {
        let settled = service
            .wait_status_in(id, "newsletter", &["unsubscribed", "confirmed"])
            .await;
        eprintln!("{email}: settled on {settled}");
    }
    // A second one-click always leaves the subscriber unsubscribed.
    for (email, id, links) in &subjects {
        let r = service.one_click(&links.unsubscribe).await;
        if !(200..300).contains(&r.status) {
            failures.push(format!(
                "{email}: second one-click not 2xx: {}",
                r.describe()
            ));
        }
        service.wait_status(id, "newsletter", "unsubscribed").await;
    }
    // Nothing else was touched.
    let sub = service
        .internal_get(
            &format!("/internal/v1/subscribers/{}", subjects[0].1),
            Some(STATUS_TOKEN),
        )
        .await;
    sub.expect_status(200);
    assert!(
        failures.is_empty(),
        "concurrent confirm/unsubscribe:\n{}",
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_every_endpoint() {
    let service = Service::builder().start().await;
    let r = service.get("/openapi.json").await;
    r.expect_status(200);
    assert!(
        r.content_type().contains("json"),
        "openapi.json is not JSON: {}",
        r.describe()
    );
    let doc = r.json_or_fail();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "not an OpenAPI 3 document: {}",
        r.describe()
    );
    let paths = doc["paths"].as_object().expect("`paths` object");
    let normalised: Vec<String> = paths
        .keys()
        .map(|p| {
            let mut out = String::new();
            let mut inside = false;
            for c in p.chars() {
                match c {
                    '{' => {
                        inside = true;
                        out.push_str("{}");
                    }
                    '}' => inside = false,
                    _ if inside => {}
                    _ => out.push(c),
                }
            }
            out
        })
        .collect();
    let mut missing = Vec::new();
    for (path, methods) in [
        ("/v1/subscriptions", &["post"][..]),
        ("/v1/confirm", &["get", "post"][..]),
        ("/v1/unsubscribe", &["get", "post"][..]),
        ("/internal/v1/subscribers/lookup", &["post"][..]),
        ("/internal/v1/subscribers/{}", &["get"][..]),
        ("/internal/v1/lists/{}/subscribers", &["get"][..]),
        ("/health/live", &["get"][..]),
        ("/health/ready", &["get"][..]),
    ] {
        match normalised.iter().position(|p| p == path) {
            None => missing.push(path.to_owned()),
            Some(i) => {
                let key = paths.keys().nth(i).expect("same index");
                for m in methods {
                    if paths[key].get(*m).is_none() {
                        missing.push(format!("{m} {path}"));
                    }
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "openapi.json lacks {missing:?}; it has {:?}",
        paths.keys().collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_answers_are_the_same_for_known_and_new_addresses_and_in_the_right_language() {
    let sink = SmtpSink::start();
    let service = Service::builder().smtp(&sink).start().await;

    // JSON: 202 with a JSON body, the same for a first and a repeated signup.
    let email = unique_email("twice");
    let first = service
        .signup_json(&json!({ "email": email, "locale": "en" }))
        .await;
    first
        .expect_status(202)
        .expect_content_type("application/json");
    first.json_or_fail();
    sink.wait_for_mail(&email, 1).await;
    let again = service
        .signup_json(&json!({ "email": email, "locale": "en" }))
        .await;
    assert_eq!(
        (again.status, again.content_type(), again.body.clone()),
        (first.status, first.content_type(), first.body.clone()),
        "a repeated JSON signup answers differently (enumeration)"
    );
    let fresh = service
        .signup_json(&json!({ "email": unique_email("fresh"), "locale": "en" }))
        .await;
    assert_eq!(
        (fresh.status, fresh.body.clone()),
        (first.status, first.body.clone()),
        "a new and a known address get different JSON answers"
    );

    // Form: an HTML page in the subscriber's language, the same for known and new addresses.
    let form_email = unique_email("form");
    let da = service
        .signup_form(&[("email", &form_email), ("locale", "da")])
        .await;
    da.expect_status(200).expect_content_type("text/html");
    sink.wait_for_mail(&form_email, 1).await;
    let da_again = service
        .signup_form(&[("email", &form_email), ("locale", "da")])
        .await;
    assert_eq!(
        (da_again.status, da_again.body.clone()),
        (da.status, da.body.clone()),
        "a repeated form signup answers differently (enumeration)"
    );
    let en = service
        .signup_form(&[("email", &unique_email("form-en")), ("locale", "en")])
        .await;
    en.expect_status(200).expect_content_type("text/html");
    assert!(
        da.body.contains("lang=\"da\""),
        "the Danish answer page is not marked lang=\"da\": {}",
        da.describe()
    );
    assert!(
        en.body.contains("lang=\"en\""),
        "the English answer page is not marked lang=\"en\": {}",
        en.describe()
    );
    assert_ne!(
        da.body, en.body,
        "the Danish and English answer pages are the same"
    );

    // No locale field: Accept-Language decides; without it, Danish.
    let by_header = service
        .client
        .post(service.url("/v1/subscriptions"))
        .header("accept", support::BROWSER_ACCEPT)
        .header("accept-language", "en-GB,en;q=0.9")
        .form(&[("email", unique_email("accept-lang").as_str())])
        .send()
        .await
        .expect("POST with Accept-Language");
    assert_eq!(by_header.status().as_u16(), 200);
    let body = by_header.text().await.unwrap_or_default();
    assert!(
        body.contains("lang=\"en\""),
        "Accept-Language: en ignored: {body}"
    );
    let plain = service
        .signup_form(&[("email", &unique_email("no-lang"))])
        .await;
    assert!(
        plain.body.contains("lang=\"da\""),
        "without locale and Accept-Language the page is not Danish: {}",
        plain.describe()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_signup_redirects_to_the_thank_you_url_when_set() {
    let thanks = "https://www.e2e.example.com/tak-for-din-tilmelding";
    let service = Service::builder()
        .env("NEWSLETTER_THANK_YOU_URL", thanks)
        .start()
        .await;
    let r = service
        .signup_form(&[("email", &unique_email("thanks"))])
        .await;
    r.expect_status(303);
    assert_eq!(
        r.header("location").as_deref(),
        Some(thanks),
        "{}",
        r.describe()
    );
    // JSON clients still get 202 JSON.
    service
        .signup_json(&json!({ "email": unique_email("thanks-json") }))
        .await
        .expect_status(202);
    // The admin-only token cannot read status (checked here once more on a running flow).
    let r = service
        .internal_get(
            "/internal/v1/lists/newsletter/subscribers?status=confirmed",
            Some(ADMIN_TOKEN),
        )
        .await;
    r.expect_status(403);
}
