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

/// The path a page's first form posts to, resolved against the page's URL (`action` may be
/// relative; no `action` means the page itself).
fn form_target(page_url: &str, body: &str) -> String {
    let base = url::Url::parse(page_url).expect("page URL");
    let form = body.find("<form").map_or("", |i| &body[i..]);
    let form = &form[..form.find('>').unwrap_or(form.len())];
    let action = form.find("action=").map(|i| {
        let rest = &form[i + "action=".len()..];
        let quote = rest.chars().next().unwrap_or(' ');
        if quote == '"' || quote == '\'' {
            rest[1..].split(quote).next().unwrap_or_default().to_owned()
        } else {
            rest.split([' ', '>']).next().unwrap_or_default().to_owned()
        }
    });
    match action {
        Some(a) => base
            .join(&a.replace("&amp;", "&"))
            .map(|u| u.path().to_owned())
            .unwrap_or_else(|e| panic!("form action {a:?} does not resolve: {e}")),
        None => base.path().to_owned(),
    }
}

/// The confirm page: 200, HTML, a form that POSTs to /v1/confirm with a hidden `token` field.
fn assert_confirm_page(page_url: &str, page: &support::Resp, token: &str) {
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
    assert_eq!(
        form_target(page_url, &body),
        "/v1/confirm",
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

    // Findings that should not stop the rest of the walk; asserted at the end.
    let mut late: Vec<String> = Vec::new();

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
    assert_confirm_page(&first.confirm, &page, &first.confirm_token());
    if !page.body.contains("lang=\"en\"") {
        late.push(format!(
            "the confirm page for an English subscriber (locale `en`, no Accept-Language) is \
             not English: {}",
            page.describe()
        ));
    }
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
        .wait_lookup_status(&alice, "newsletter", "confirmed")
        .await;
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

    // Carol: "this wasn't me" (/v1/cancel): GET shows a page and changes nothing, POST cancels.
    let carol = unique_email("carol");
    service
        .signup_form(&[("email", &carol), ("locale", "da")])
        .await
        .expect_status(200);
    let carol_links = confirmation_mail(&sink, &service, &carol, 1).await;
    let carol_id = service.subscriber_id(&carol).await;
    let page = service.get(&carol_links.wasnt_me).await;
    page.expect_status(200).expect_content_type("text/html");
    assert!(
        page.body.to_ascii_lowercase().contains("<form") && page.body.contains("/v1/cancel"),
        "the cancel page has no form posting to /v1/cancel: {}",
        page.describe()
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        list_status(&service.subscriber(&carol_id).await, "newsletter").as_deref(),
        Some("pending"),
        "GET /v1/cancel changed the status"
    );
    let cancel_token = support::token_of(&carol_links.wasnt_me);
    service
        .post_form("/v1/cancel", &[("token", &cancel_token)])
        .await
        .expect_success()
        .expect_content_type("text/html");
    let deadline = std::time::Instant::now() + support::DEADLINE;
    let carol_now = loop {
        let v = service.subscriber(&carol_id).await;
        if list_status(&v, "newsletter").as_deref() != Some("pending") {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "carol still pending after POST /v1/cancel: {v}"
        );
        tokio::time::sleep(support::POLL).await;
    };
    assert_ne!(
        list_status(&carol_now, "newsletter").as_deref(),
        Some("confirmed"),
        "cancel confirmed carol: {carol_now}"
    );
    let after_cancel = service
        .post_form("/v1/confirm", &[("token", &carol_links.confirm_token())])
        .await;
    after_cancel
        .expect_status(410)
        .expect_content_type("text/html");
    assert!(
        !service
            .list_all("newsletter", "confirmed", 100)
            .await
            .iter()
            .any(|e| e["email"].as_str() == Some(carol.as_str())),
        "a cancelled request is listed as confirmed"
    );

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
    let unsubscribed = service.wait_status(&id, "newsletter", "unsubscribed").await;
    assert_eq!(
        unsubscribed["locale"].as_str(),
        Some("en"),
        "the subscriber's locale was lost on unsubscribe: {unsubscribed}"
    );
    service
        .wait_unlisted("newsletter", "confirmed", &alice)
        .await;
    let listing = service.list_all("newsletter", "confirmed", 100).await;

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

    // --- the read models rebuild from the log -------------------------------------------------
    service.kill();
    let (ok, output) = service.run_once(&["rebuild-projections"], Duration::from_secs(120));
    assert!(ok, "`newsletter rebuild-projections` failed:\n{output}");
    service.start_again().await;
    service.wait_status(&id, "newsletter", "unsubscribed").await;
    service
        .wait_status(&bob_id, "newsletter", "unsubscribed")
        .await;
    service.wait_status(&bob_id, "offers", "confirmed").await;
    let rebuilt = service
        .lookup(&alice)
        .await
        .expect("alice known after the rebuild");
    assert_eq!(
        rebuilt["id"].as_str(),
        Some(id.as_str()),
        "id changed by the rebuild"
    );
    assert_eq!(
        rebuilt["locale"].as_str(),
        Some("en"),
        "locale after the rebuild: {rebuilt}"
    );
    let offers = service.list_all("offers", "confirmed", 100).await;
    assert!(
        offers
            .iter()
            .any(|e| e["email"].as_str() == Some(bob.as_str())),
        "bob missing from the offers listing after the rebuild: {offers:?}"
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

    // No personal data or secrets in clear in the service's logs (stdout + stderr, all runs).
    let logs = service.all_logs();
    for (what, needle) in [
        ("alice's address", alice.clone()),
        ("bob's address", bob.clone()),
        ("carol's address", carol.clone()),
        ("alice's name", "Alice Ærø".to_owned()),
        ("a confirm token", first.confirm_token()),
        ("a cancel token", cancel_token.clone()),
    ] {
        if logs.contains(&needle) {
            late.push(format!("the service's logs contain {what} in clear"));
        }
    }

    assert!(
        late.is_empty(),
        "flow findings:\n  - {}",
        late.join("\n  - ")
    );
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
        // The "this wasn't me" link was an unsubscribe link; the service now sends
        // /v1/cancel instead, so the unsubscribe link of a pending subscriber comes from the
        // `pending` listing (the same URL a List-Unsubscribe header would carry).
        let unsubscribe_url = service
            .unsubscribe_url("newsletter", "pending", email)
            .await;
        subjects.push((email.clone(), id, links, unsubscribe_url));
    }

    let mut failures = Vec::new();
    // All subscribers at once, each with its confirm and its one-click racing.
    let races = subjects.iter().map(|(email, _, links, unsubscribe_url)| {
        let service = &service;
        async move {
            let token = links.confirm_token();
            let fields = [("token", token.as_str())];
            let confirm = service.post_form("/v1/confirm", &fields);
            let unsubscribe = service.one_click(unsubscribe_url);
            let (c, u) = tokio::join!(confirm, unsubscribe);
            (email.clone(), c, u)
        }
    });
    let outcomes = futures::future::join_all(races).await;
    // Let the projector catch up: every status leaves `pending`, then 2 s more (a status that
    // is `confirmed` right after the race may be the intermediate state of confirm → unsubscribe).
    for (_, id, _, _) in &subjects {
        service
            .wait_status_in(id, "newsletter", &["unsubscribed", "confirmed"])
            .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for ((email, c, u), (_, id, _, _)) in outcomes.iter().zip(&subjects) {
        let settled = service
            .wait_status_in(id, "newsletter", &["unsubscribed", "confirmed"])
            .await;
        for (what, r) in [("confirm", c), ("one-click", u)] {
            // The one documented refusal: a confirm that lands after the one-click unsubscribed
            // the pending request gets 410 ("cancelled", README), and the subscriber stays
            // unsubscribed. Anything else must be 2xx.
            let documented_410 = what == "confirm" && r.status == 410 && settled == "unsubscribed";
            if r.status >= 500 {
                failures.push(format!("{email}: {what} answered 5xx: {}", r.describe()));
            } else if !(200..300).contains(&r.status) && !documented_410 {
                failures.push(format!(
                    "{email}: {what} raced with the other and answered {} (expected 2xx): {}",
                    r.status,
                    r.describe()
                ));
            }
        }
        let accepted = |r: &support::Resp| (200..300).contains(&r.status);
        // A refused confirm must not leave the subscriber confirmed.
        if !accepted(c) && settled == "confirmed" {
            failures.push(format!(
                "{email}: confirm was refused ({}) yet the status is confirmed",
                c.status
            ));
        }
        // An accepted one-click must win whatever the order: if it came first the service
        // refuses the later confirm (410), so with both accepted the one-click was last.
        if accepted(u) && settled == "confirmed" {
            failures.push(format!(
                "{email}: one-click accepted ({}) and confirm {}, yet the subscriber ended \
                 `confirmed`: the accepted unsubscribe was lost",
                u.status, c.status
            ));
        }
        let again = service.subscriber(id).await;
        if list_status(&again, "newsletter").as_deref() != Some(settled.as_str()) {
            failures.push(format!(
                "{email}: status still moving after settling: {again}"
            ));
        }
        // Confirmed and then unsubscribed (both accepted): the profile stays, as it does in the
        // sequential flow. (Cancelling a *pending* request may drop it: the service's call.)
        if accepted(c) && accepted(u) && again["locale"].as_str() != Some("da") {
            failures.push(format!(
                "{email}: confirmed then unsubscribed, and the subscriber's locale was lost: {again}"
            ));
        }
        eprintln!(
            "{email}: confirm {} / one-click {} -> settled on {settled}",
            c.status, u.status
        );
    }
    // A second one-click always leaves the subscriber unsubscribed.
    for (email, id, _, unsubscribe_url) in &subjects {
        let r = service.one_click(unsubscribe_url).await;
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

/// The Kubernetes shape: `newsletter api` (two instances), `newsletter projector` and
/// `newsletter mailer` as separate processes on one PostgreSQL database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "NEWSLETTER_TEST_DATABASE_URL is not set: PostgreSQL tests not run"
)]
async fn separate_roles_on_postgres() {
    let sink = SmtpSink::start();
    let service = Service::builder()
        .smtp(&sink)
        .backend(Backend::postgres().await)
        .args(&["api"])
        .start()
        .await;
    let mut projector = service.spawn_role("projector", &[]);
    let mut mailer = service.spawn_role("mailer", &[]);
    let second_port = support::free_port();
    let mut second_api = service.spawn_role(
        "api",
        &[("NEWSLETTER_LISTEN", format!("127.0.0.1:{second_port}"))],
    );
    let second = format!("http://127.0.0.1:{second_port}");
    support::wait_http_status(
        &service.client,
        &format!("{second}/health/ready"),
        200,
        "the second API instance",
    )
    .await;
    second_api.assert_running();

    let email = unique_email("roles");
    service
        .signup_json(&json!({ "email": email, "locale": "en" }))
        .await
        .expect_status(202);
    let links = confirmation_mail(&sink, &service, &email, 1).await;
    projector.assert_running();
    mailer.assert_running();
    let id = service.subscriber_id(&email).await;
    service.wait_status(&id, "newsletter", "pending").await;

    // Confirm through the other API instance (links are the public URL's; the token is what counts).
    let r = service
        .client
        .post(format!("{second}/v1/confirm"))
        .header("accept", support::BROWSER_ACCEPT)
        .form(&[("token", links.confirm_token().as_str())])
        .send()
        .await
        .expect("POST confirm to the second API");
    assert!(
        r.status().is_success(),
        "confirm on the second API instance: {}",
        r.status()
    );
    service.wait_status(&id, "newsletter", "confirmed").await;

    // The mailer can be replaced: kill it, sign up, start another.
    mailer.kill();
    let later = unique_email("roles-later");
    service
        .signup_json(&json!({ "email": later }))
        .await
        .expect_status(202);
    let _mailer2 = service.spawn_role("mailer", &[]);
    sink.wait_for_mail(&later, 1).await;
    // The projector too.
    projector.kill();
    let unsubscribe_url = service
        .unsubscribe_url("newsletter", "confirmed", &email)
        .await;
    service.one_click(&unsubscribe_url).await.expect_success();
    let _projector2 = service.spawn_role("projector", &[]);
    service.wait_status(&id, "newsletter", "unsubscribed").await;
}

/// Two mailer replicas: only the lease holder sends, so every confirmation mail goes out once;
/// when the holder is killed with SIGKILL the standby takes over and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "NEWSLETTER_TEST_DATABASE_URL is not set: PostgreSQL tests not run"
)]
async fn two_mailers_send_each_mail_once_and_fail_over() {
    let sink = SmtpSink::start();
    let service = Service::builder()
        .smtp(&sink)
        .backend(Backend::postgres().await)
        .args(&["api"])
        .start()
        .await;
    let _projector = service.spawn_role("projector", &[]);
    let mut first = service.spawn_role("mailer", &[]);
    // Let the first replica take the lease before the second starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ops_port = support::free_port();
    let mut second = service.spawn_role(
        "mailer",
        &[("NEWSLETTER_OPS_LISTEN", format!("127.0.0.1:{ops_port}"))],
    );
    // A role without the API serves its health probes on NEWSLETTER_OPS_LISTEN (a standby too).
    for probe in ["/health/live", "/health/ready"] {
        support::wait_http_status(
            &service.client,
            &format!("http://127.0.0.1:{ops_port}{probe}"),
            200,
            &format!("{probe} of the standby mailer"),
        )
        .await;
        second.assert_running();
    }

    let before: Vec<String> = (0..5)
        .map(|i| unique_email(&format!("lease-a{i}")))
        .collect();
    for email in &before {
        service
            .signup_json(&json!({ "email": email }))
            .await
            .expect_status(202);
    }
    for email in &before {
        sink.wait_for_mail(email, 1).await;
    }
    first.assert_running();
    second.assert_running();

    // The holder dies without a word; the standby must take over.
    first.kill();
    let after: Vec<String> = (0..5)
        .map(|i| unique_email(&format!("lease-b{i}")))
        .collect();
    for email in &after {
        service
            .signup_json(&json!({ "email": email }))
            .await
            .expect_status(202);
    }
    for email in &after {
        sink.wait_for_mail(email, 1).await;
    }
    second.assert_running();
    // Give a second sender time to show itself, then count.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for email in before.iter().chain(&after) {
        assert_eq!(
            sink.messages_to(email).len(),
            1,
            "{email} got its confirmation mail once"
        );
    }
}

/// `/metrics` is Prometheus text that a real parser (Python's prometheus_client) reads, counts
/// the funnel, and never carries personal data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_without_personal_data() {
    let service = Service::builder().start().await;
    let email = unique_email("metrics");
    service
        .signup_form(&[("email", email.as_str()), ("name", "Karen Metrics-Blixen")])
        .await
        .expect_success();
    // The sampler runs every 5 s; wait for the mail counter to show the sent mail.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let text = loop {
        let r = service.get("/metrics").await;
        assert_eq!(r.status, 200, "{}", r.describe());
        if r.body
            .contains("newsletter_confirmation_mails_total{outcome=\"sent\"} 1")
        {
            break r.body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no sent mail counted in /metrics:\n{}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for expected in [
        "newsletter_funnel_total{step=\"signup\"} 1",
        "newsletter_events_appended_total{type=\"SubscriptionRequested\"} 1",
        "newsletter_events_appended_total{type=\"ConfirmationMailSent\"} 1",
        "newsletter_http_requests_total{method=\"POST\",route=\"/v1/subscriptions\",status=\"200\"} 1",
        "newsletter_lease_held{role=\"mailer\"} 1",
        "newsletter_subscribers{list=\"newsletter\",status=\"pending\"} 1",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(
        !text.contains(&email) && !text.contains("Karen"),
        "personal data in /metrics"
    );
    let mut parser = std::process::Command::new(
        std::env::var("NEWSLETTER_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned()),
    )
    .args([
        "-c",
        "import sys\nfrom prometheus_client.parser import text_string_to_metric_families\n\
         families = list(text_string_to_metric_families(sys.stdin.read()))\n\
         assert len(families) >= 10, len(families)\nprint(len(families))",
    ])
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("python3 with prometheus_client (scripts/test installs it)");
    {
        use std::io::Write;
        let mut stdin = parser.stdin.take().expect("stdin");
        stdin
            .write_all(text.as_bytes())
            .expect("write /metrics to the parser");
    }
    let out = parser.wait_with_output().expect("parser finished");
    assert!(
        out.status.success(),
        "prometheus_client could not parse /metrics: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The mailer role is ready only while its SMTP relay answers; the API stays ready throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mailer_is_ready_only_while_its_relay_answers() {
    let mut sink = SmtpSink::stopped();
    let service = Service::builder().smtp(&sink).args(&["api"]).start().await;
    let ops_port = support::free_port();
    let mut mailer = service.spawn_role(
        "mailer",
        &[("NEWSLETTER_OPS_LISTEN", format!("127.0.0.1:{ops_port}"))],
    );
    let ready = format!("http://127.0.0.1:{ops_port}/health/ready");
    support::wait_http_status(&service.client, &ready, 503, "mailer readiness, relay down").await;
    mailer.assert_running();
    service.get("/health/ready").await.expect_status(200);
    sink.listen();
    support::wait_http_status(&service.client, &ready, 200, "mailer readiness, relay up").await;
}
