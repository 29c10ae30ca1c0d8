//! Mail delivery against the real `newsletter` binary and a real SMTP server on loopback:
//! the server down at signup and back later (nothing lost), a permanent 550 (no retry storm,
//! the subscriber stays pending, other mail still flows), and the default outbox (.eml files)
//! with the shape and language of the confirmation mail.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{
    ConfirmationLinks, MAIL_FROM, Mail, Service, SmtpSink, list_status, unique_email, wait_outbox,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_is_delivered_once_the_smtp_server_is_back() {
    let mut sink = SmtpSink::stopped();
    let service = Service::builder().smtp(&sink).start().await;

    let email = unique_email("patient");
    service
        .signup_json(&json!({ "email": email, "locale": "da" }))
        .await
        .expect_status(202);
    let id = service.subscriber_id(&email).await;
    // The server stays down for a while: the signup is kept, still pending.
    tokio::time::sleep(Duration::from_secs(3)).await;
    service.wait_status(&id, "newsletter", "pending").await;

    sink.listen();
    let mails = sink.wait_for_mail(&email, 1).await;
    let links = ConfirmationLinks::of(&Mail::parse(&mails[0].raw), &service.base);
    // Exactly one mail, not one per failed attempt.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sink.messages_to(&email).len(),
        1,
        "more than one confirmation mail after the outage"
    );
    // And the delivered link works.
    service
        .post_form("/v1/confirm", &[("token", &links.confirm_token())])
        .await
        .expect_success();
    service.wait_status(&id, "newsletter", "confirmed").await;

    // A second outage in the middle of normal operation: stop, sign up, start again.
    sink.stop();
    let later = unique_email("patient2");
    service
        .signup_json(&json!({ "email": later }))
        .await
        .expect_status(202);
    tokio::time::sleep(Duration::from_secs(2)).await;
    sink.listen();
    sink.wait_for_mail(&later, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_550_is_not_retried_in_a_storm_and_the_subscriber_stays_pending() {
    let sink = SmtpSink::start();
    let service = Service::builder().smtp(&sink).start().await;

    let rejected = unique_email("reject");
    service
        .signup_json(&json!({ "email": rejected, "locale": "en" }))
        .await
        .expect_status(202);
    let id = service.subscriber_id(&rejected).await;

    // The first attempt reaches the server...
    let deadline = Instant::now() + support::DEADLINE;
    while sink.rcpt_attempts(&rejected).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the mailer never tried to deliver to {rejected}"
        );
        tokio::time::sleep(support::POLL).await;
    }
    // ...and a permanent failure is not retried over and over (retry base is 100 ms here, so a
    // mailer that retries a 5xx would make several attempts in these 5 seconds).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let attempts = sink.rcpt_attempts(&rejected);
    assert!(
        attempts.iter().all(|(outcome, _)| outcome == "rejected"),
        "the sink accepted a reject… address: {attempts:?}"
    );
    assert!(
        attempts.len() <= 2,
        "a 550 was retried {} times within ~5 s (retry storm): {attempts:?}",
        attempts.len()
    );
    let record = service.wait_status(&id, "newsletter", "pending").await;
    eprintln!("subscriber record after a 550: {record}");
    assert!(sink.messages_to(&rejected).is_empty());

    // Other mail still flows after the failure.
    let fine = unique_email("fine");
    service
        .signup_json(&json!({ "email": fine }))
        .await
        .expect_status(202);
    sink.wait_for_mail(&fine, 1).await;
    assert_eq!(
        list_status(&service.subscriber(&id).await, "newsletter").as_deref(),
        Some("pending")
    );
    let attempts = sink.rcpt_attempts(&rejected);
    assert!(
        attempts.len() <= 2,
        "the 550 address kept being retried: {attempts:?}"
    );
}

/// No SMTP URL and no data dir setting: mail goes to ./data/outbox as .eml files; the
/// confirmation mail is multipart/alternative (text + HTML), has a Message-ID, and is Danish or
/// English as asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_outbox_holds_multipart_mails_in_the_subscribers_language() {
    let service = Service::builder().default_data_dir().start().await;
    let outbox = service.outbox_dir();

    let da = unique_email("dansk");
    let en = unique_email("english");
    let by_header = unique_email("accept-language");
    let fallback = unique_email("fallback");
    service
        .signup_json(&json!({ "email": da, "locale": "da", "name": "Søren" }))
        .await
        .expect_status(202);
    service
        .signup_json(&json!({ "email": en, "locale": "en", "name": "Sarah" }))
        .await
        .expect_status(202);
    let r = service
        .client
        .post(service.url("/v1/subscriptions"))
        .header("accept-language", "en-US,en;q=0.8,da;q=0.5")
        .json(&json!({ "email": by_header }))
        .send()
        .await
        .expect("signup with Accept-Language");
    assert_eq!(r.status().as_u16(), 202);
    service
        .signup_json(&json!({ "email": fallback }))
        .await
        .expect_status(202);

    let mut problems = Vec::new();
    for (email, lang) in [
        (&da, "da"),
        (&en, "en"),
        (&by_header, "en"),
        (&fallback, "da"),
    ] {
        let mails = wait_outbox(&outbox, email, 1).await;
        let mail = &mails[0];
        let links = ConfirmationLinks::of(mail, &service.base);
        let text = mail.text.clone().unwrap_or_default();
        let html = mail.html.clone().unwrap_or_default();
        if !mail.alternative_text_and_html {
            problems.push(format!(
                "{email}: not multipart/alternative with text/plain and text/html: {:?}",
                mail.mime_types
            ));
        }
        match mail.header("Message-ID") {
            Some(id)
                if id.trim().starts_with('<') && id.contains('@') && id.trim().ends_with('>') => {}
            other => problems.push(format!(
                "{email}: Message-ID missing or malformed: {other:?}"
            )),
        }
        if !mail
            .header("From")
            .is_some_and(|f| f.contains("nyhedsbrev@e2e.example.com"))
        {
            problems.push(format!(
                "{email}: From is not NEWSLETTER_MAIL_FROM ({MAIL_FROM}): {:?}",
                mail.header("From")
            ));
        }
        if !mail
            .header("To")
            .is_some_and(|t| t.contains(email.as_str()))
        {
            problems.push(format!("{email}: To header: {:?}", mail.header("To")));
        }
        if mail.header("Subject").is_none_or(|s| s.trim().is_empty()) {
            problems.push(format!("{email}: no Subject"));
        }
        if mail.header("Date").is_none() {
            problems.push(format!("{email}: no Date header"));
        }
        for (part, body) in [("text", &text), ("html", &html)] {
            if !body.contains(&links.confirm.replace('&', "&amp;"))
                && !body.contains(&links.confirm)
            {
                problems.push(format!("{email}: the {part} part lacks the confirm link"));
            }
            if !body.contains(&links.wasnt_me.replace('&', "&amp;"))
                && !body.contains(&links.wasnt_me)
            {
                problems.push(format!(
                    "{email}: the {part} part lacks the \"this wasn't me\" (/v1/cancel) link"
                ));
            }
        }
        let all = mail.all_text().to_lowercase();
        let subject = mail.header("Subject").unwrap_or_default().to_lowercase();
        let danish = all.contains("bekræft") || subject.contains("bekræft");
        let english = all.contains("confirm your") || subject.contains("confirm");
        match lang {
            "da" if !danish || english => problems.push(format!(
                "{email}: expected a Danish mail (\"bekræft\", no English \"confirm your\"); subject {subject:?}, text: {text}"
            )),
            "en" if !english || danish => problems.push(format!(
                "{email}: expected an English mail (\"confirm\", no Danish \"bekræft\"); subject {subject:?}, text: {text}"
            )),
            _ => {}
        }
        if lang == "da" && !html.contains("lang=\"da\"") {
            problems.push(format!(
                "{email}: the Danish HTML part is not marked lang=\"da\""
            ));
        }
        if lang == "en" && !html.contains("lang=\"en\"") {
            problems.push(format!(
                "{email}: the English HTML part is not marked lang=\"en\""
            ));
        }
        // The address never appears in a link (no PII in URLs).
        let local = email.split('@').next().unwrap_or_default();
        if links.confirm.contains(local) || links.wasnt_me.contains(local) {
            problems.push(format!("{email}: a link contains the address"));
        }
    }
    assert!(
        problems.is_empty(),
        "outbox mails:\n  - {}",
        problems.join("\n  - ")
    );
    // The defaults put the data where promised.
    assert!(
        outbox.starts_with(service.data_dir()) && service.data_dir().ends_with("data"),
        "outbox {} not under ./data",
        outbox.display()
    );
}

/// The SMTP server is down, the service is killed (SIGKILL) with the mail still undelivered and
/// started again; once the server is back the mail arrives: an outage plus a crash loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_mail_survives_a_crash_during_an_outage() {
    let mut sink = SmtpSink::stopped();
    let mut service = Service::builder().smtp(&sink).start().await;
    let email = unique_email("crash");
    service
        .signup_json(&json!({ "email": email, "locale": "en" }))
        .await
        .expect_status(202);
    service.subscriber_id(&email).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    service.kill();
    service.start_again().await;
    sink.listen();
    let mails = sink.wait_for_mail(&email, 1).await;
    ConfirmationLinks::of(&Mail::parse(&mails[0].raw), &service.base);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sink.messages_to(&email).len(),
        1,
        "the mail was sent more than once after the crash (nothing had been delivered before it)"
    );
}

/// Repeated signups of one address send at most 3 confirmation mails (README: "at most 3
/// confirmation mails per 24 h"), while every signup gets the same answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_signups_are_throttled_per_address() {
    let sink = SmtpSink::start();
    let service = Service::builder().smtp(&sink).start().await;
    let email = unique_email("again-and-again");
    let mut answers = Vec::new();
    for i in 0..6 {
        let r = service
            .signup_json(&json!({ "email": email, "locale": "da" }))
            .await;
        r.expect_status(202);
        answers.push(r.body.clone());
        // Let each request be mailed before the next replaces it.
        sink.wait_for_mail(&email, (i + 1).min(3)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mails = sink.messages_to(&email);
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "throttled signups answer differently: {answers:?}"
    );
    assert_eq!(
        mails.len(),
        3,
        "expected exactly 3 confirmation mails for 6 signups of one address"
    );
    // The newest mail's link works; the subscriber ends confirmed.
    let last = ConfirmationLinks::of(&Mail::parse(&mails[2].raw), &service.base);
    service
        .post_form("/v1/confirm", &[("token", &last.confirm_token())])
        .await
        .expect_success();
    let id = service.subscriber_id(&email).await;
    service.wait_status(&id, "newsletter", "confirmed").await;
}
