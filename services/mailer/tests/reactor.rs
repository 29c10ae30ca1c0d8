//! The mailer against real parts: a SQLite event store in a temporary directory, a file-backed
//! checkpoint store and a real SMTP server on loopback (or the file outbox).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use mail_parser::{MessageParser, MimeHeaders};
use newsletter_domain::{Locale, SubscriberEvent};
use newsletter_mailer::{CheckpointStore, FileMailTransport, RetryPolicy, SmtpMailTransport};
use support::{SmtpServer, World, eventually, new_request, new_subscriber, t0};

/// The token in the first `{public_url}/v1/{endpoint}?token=…` link of a text.
fn token_in(text: &str, endpoint: &str) -> String {
    let marker = format!("https://news.example.com/v1/{endpoint}?token=");
    let start = text.find(&marker).expect("link present") + marker.len();
    text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '&')
        .collect()
}

fn smtp(server: &SmtpServer) -> Arc<SmtpMailTransport> {
    Arc::new(SmtpMailTransport::from_url(&server.url()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_gets_one_multipart_mail_with_a_working_confirm_link() {
    let world = World::new().await;
    let server = SmtpServer::start();
    let (subscriber, request) = (new_subscriber(), new_request());
    world
        .request(
            subscriber,
            request,
            "soren@example.dk",
            Locale::Da,
            &["news", "events"],
        )
        .await;
    let running = world.start(smtp(&server), world.config());

    eventually(5, "ConfirmationMailSent recorded", || async {
        world
            .events(subscriber)
            .await
            .iter()
            .any(|(_, e)| matches!(e, SubscriberEvent::ConfirmationMailSent(_)))
    })
    .await;
    // Give a duplicate time to show up before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.stop().await;

    let received = server.received();
    assert_eq!(received.len(), 1, "exactly one mail");
    let mail = &received[0];
    assert_eq!(mail.to, vec!["soren@example.dk".to_owned()]);
    assert_eq!(mail.from, "noreply@octopus.example");

    let parsed = MessageParser::default()
        .parse(&mail.data)
        .expect("parseable mail");
    assert_eq!(parsed.subject(), Some("Bekræft din tilmelding hos OCTOPUS"));
    assert_eq!(
        parsed
            .to()
            .and_then(|to| to.first())
            .and_then(|a| a.address()),
        Some("soren@example.dk")
    );
    let content_type = parsed.content_type().expect("content type");
    assert_eq!(content_type.ctype(), "multipart");
    assert_eq!(content_type.subtype(), Some("alternative"));
    assert_eq!(
        parsed.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-generated")
    );
    assert!(parsed.date().is_some());
    let message_id = parsed.message_id().expect("Message-ID").to_owned();
    assert!(message_id.ends_with("@octopus.example"), "{message_id}");

    let text = parsed.body_text(0).expect("text part").into_owned();
    let html = parsed.body_html(0).expect("html part").into_owned();
    assert!(text.starts_with("Hej Søren Kierkegaard"), "{text}");
    assert!(
        text.contains("news og events") || text.contains("events og news"),
        "{text}"
    );
    assert!(text.contains("2. december 2026 kl. 09:00 UTC"), "{text}");
    assert!(html.contains("Bekræft tilmelding"));
    assert!(!text.contains("soren@example.dk") && !html.contains("soren@example.dk"));

    let confirm = token_in(&text, "confirm");
    let claims = world
        .keys
        .verify_confirm(&confirm, t0())
        .expect("valid confirm token");
    assert_eq!(claims.subscriber, subscriber);
    assert_eq!(claims.request, request);
    assert_eq!(claims.expires_at, t0() + TimeDelta::days(7));
    assert_eq!(
        token_in(&html, "confirm"),
        confirm,
        "same link in both parts"
    );
    let cancel = token_in(&text, "cancel");
    let cancel = world
        .keys
        .verify_cancel(&cancel)
        .expect("valid cancel token");
    assert_eq!(cancel.subscriber, subscriber);
    assert_eq!(cancel.request, request, "cancels this request only");

    let events = world.events(subscriber).await;
    let (request_event, _) = &events[0];
    let (recorded, sent) = events
        .iter()
        .find(|(_, e)| matches!(e, SubscriberEvent::ConfirmationMailSent(_)))
        .unwrap();
    let SubscriberEvent::ConfirmationMailSent(sent) = sent else {
        unreachable!()
    };
    assert_eq!(sent.request_id, request);
    assert_eq!(format!("<{message_id}>"), sent.message_id.as_str());
    assert_eq!(recorded.metadata.actor.as_deref(), Some("mailer"));
    assert_eq!(recorded.metadata.causation_id, Some(request_event.event_id));
    assert_eq!(running_stats_sent(&world).await, 1);
}

/// The number of `ConfirmationMailSent` events in the whole log.
async fn running_stats_sent(world: &World) -> usize {
    world
        .store
        .read_all(None, 10_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.event_type == "ConfirmationMailSent")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn english_requests_get_english_mail() {
    let world = World::new().await;
    let server = SmtpServer::start();
    let subscriber = new_subscriber();
    world
        .request(
            subscriber,
            new_request(),
            "jane@example.com",
            Locale::En,
            &["product"],
        )
        .await;
    let running = world.start(smtp(&server), world.config());
    eventually(5, "one mail", || async { server.received().len() == 1 }).await;
    running.stop().await;
    let data = server.received()[0].data.clone();
    let parsed = MessageParser::default().parse(&data).unwrap();
    assert_eq!(
        parsed.subject(),
        Some("Confirm your subscription with OCTOPUS")
    );
    assert!(
        parsed
            .body_text(0)
            .unwrap()
            .starts_with("Hello Søren Kierkegaard,")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_down_at_first_then_up_later_loses_nothing() {
    let world = World::new().await;
    let port = SmtpServer::free_port();
    let subscriber = new_subscriber();
    world
        .request(
            subscriber,
            new_request(),
            "late@example.com",
            Locale::En,
            &["news"],
        )
        .await;
    let transport =
        Arc::new(SmtpMailTransport::from_url(&format!("smtp://127.0.0.1:{port}")).unwrap());
    let running = world.start(transport, world.config());

    eventually(5, "a retry", || async {
        running.stats.snapshot().retried >= 2
    })
    .await;
    assert!(
        server_less_checkpoint(&world).await.is_none(),
        "checkpoint held while retrying"
    );
    let server = SmtpServer::start_on(port, false);
    eventually(10, "the mail after the outage", || async {
        server.received().len() == 1
    })
    .await;
    eventually(5, "ConfirmationMailSent", || async {
        running_stats_sent(&world).await == 1
    })
    .await;
    let stats = running.stats.snapshot();
    running.stop().await;
    assert_eq!(stats.sent, 1);
    assert_eq!(stats.failed, 0);
    assert_eq!(server.received().len(), 1);
    assert!(world.checkpoints.load("mailer").await.unwrap().is_some());
}

async fn server_less_checkpoint(world: &World) -> Option<newsletter_eventstore::Position> {
    world.checkpoints.load("mailer").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_reply_records_a_permanent_failure() {
    let world = World::new().await;
    let server = SmtpServer::start_on(0, true);
    let subscriber = new_subscriber();
    let request = new_request();
    world
        .request(
            subscriber,
            request,
            "nobody@example.com",
            Locale::Da,
            &["news"],
        )
        .await;
    let running = world.start(smtp(&server), world.config());
    eventually(5, "ConfirmationMailFailed", || async {
        world
            .events(subscriber)
            .await
            .iter()
            .any(|(_, e)| matches!(e, SubscriberEvent::ConfirmationMailFailed(_)))
    })
    .await;
    let stats = running.stats.snapshot();
    running.stop().await;
    let events = world.events(subscriber).await;
    let failed = events
        .iter()
        .find_map(|(_, e)| match e {
            SubscriberEvent::ConfirmationMailFailed(f) => Some(f.clone()),
            _ => None,
        })
        .unwrap();
    assert!(failed.permanent);
    assert_eq!(failed.request_id, request);
    assert_eq!(failed.reason.as_str(), "SMTP reply 550");
    assert_eq!((stats.sent, stats.failed, stats.retried), (0, 1, 0));
    assert!(server.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_of_4xx_replies_record_a_transient_failure_and_move_on() {
    let world = World::new().await;
    let server = SmtpServer::start_replying(0, 451);
    let (first, second) = (new_subscriber(), new_subscriber());
    world
        .request(first, new_request(), "a@example.com", Locale::Da, &["news"])
        .await;
    world
        .request(
            second,
            new_request(),
            "b@example.com",
            Locale::Da,
            &["news"],
        )
        .await;
    let mut config = world.config();
    config.retry = RetryPolicy {
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(20),
        max_attempts: 3,
    };
    let running = world.start(smtp(&server), config);
    eventually(10, "both requests given up", || async {
        running.stats.snapshot().failed == 2
    })
    .await;
    let stats = running.stats.snapshot();
    running.stop().await;
    assert_eq!(stats.retried, 4, "two retries per request");
    for subscriber in [first, second] {
        let failed = world
            .events(subscriber)
            .await
            .into_iter()
            .find_map(|(_, e)| match e {
                SubscriberEvent::ConfirmationMailFailed(f) => Some(f),
                _ => None,
            })
            .expect("failure recorded");
        assert!(!failed.permanent);
        assert_eq!(failed.reason.as_str(), "SMTP reply 451");
    }
    assert!(server.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_relay_is_waited_for_without_limit_and_records_no_failure() {
    let world = World::new().await;
    let port = SmtpServer::free_port();
    let subscriber = new_subscriber();
    world
        .request(
            subscriber,
            new_request(),
            "a@example.com",
            Locale::Da,
            &["news"],
        )
        .await;
    let mut config = world.config();
    // Three attempts would be exhausted many times over while the relay is down.
    config.retry = RetryPolicy {
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(20),
        max_attempts: 3,
    };
    let transport =
        Arc::new(SmtpMailTransport::from_url(&format!("smtp://127.0.0.1:{port}")).unwrap());
    let running = world.start(transport, config);
    eventually(10, "many waits for the relay", || async {
        running.stats.snapshot().retried >= 20
    })
    .await;
    let server = SmtpServer::start_on(port, false);
    eventually(10, "the mail once the relay is back", || async {
        running.stats.snapshot().sent == 1
    })
    .await;
    let stats = running.stats.snapshot();
    running.stop().await;
    assert_eq!(stats.failed, 0, "an outage is not a failure");
    assert_eq!(server.received().len(), 1);
    assert!(
        world
            .events(subscriber)
            .await
            .iter()
            .all(|(_, e)| !matches!(e, SubscriberEvent::ConfirmationMailFailed(_))),
        "no failure recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_from_the_checkpoint_does_not_resend() {
    let world = World::new().await;
    let server = SmtpServer::start();
    let first = new_subscriber();
    world
        .request(first, new_request(), "a@example.com", Locale::Da, &["news"])
        .await;
    let running = world.start(smtp(&server), world.config());
    eventually(5, "first mail recorded", || async {
        running_stats_sent(&world).await == 1
    })
    .await;
    running.stop().await;
    let saved = world.checkpoints.load("mailer").await.unwrap();
    assert!(saved.is_some());

    let second = new_subscriber();
    world
        .request(
            second,
            new_request(),
            "b@example.com",
            Locale::Da,
            &["news"],
        )
        .await;
    let running = world.start(smtp(&server), world.config());
    eventually(5, "second mail recorded", || async {
        running_stats_sent(&world).await == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.stop().await;
    let received = server.received();
    assert_eq!(received.len(), 2, "the first mail was not sent again");
    assert_eq!(received[1].to, vec!["b@example.com".to_owned()]);
}

/// Requests of many subscribers are handled several at a time: each gets exactly one mail, and
/// a restart from the saved checkpoint sends nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_handled_at_once_are_each_mailed_exactly_once() {
    let world = World::new().await;
    let server = SmtpServer::start();
    let count = 3 * newsletter_mailer::CONCURRENCY + 5;
    for n in 0..count {
        world
            .request(
                new_subscriber(),
                new_request(),
                &format!("many-{n}@example.com"),
                Locale::Da,
                &["news"],
            )
            .await;
    }
    let running = world.start(smtp(&server), world.config());
    eventually(30, "every mail recorded", || async {
        running_stats_sent(&world).await == count
    })
    .await;
    running.stop().await;
    assert!(world.checkpoints.load("mailer").await.unwrap().is_some());
    let running = world.start(smtp(&server), world.config());
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.stop().await;
    let mut recipients: Vec<String> = server.received().into_iter().flat_map(|m| m.to).collect();
    recipients.sort();
    let mut wanted: Vec<String> = (0..count)
        .map(|n| format!("many-{n}@example.com"))
        .collect();
    wanted.sort();
    assert_eq!(recipients, wanted, "one mail per request, none twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_checkpoint_still_does_not_resend_recorded_mails() {
    let world = World::new().await;
    let server = SmtpServer::start();
    let subscriber = new_subscriber();
    world
        .request(
            subscriber,
            new_request(),
            "a@example.com",
            Locale::Da,
            &["news"],
        )
        .await;
    let running = world.start(smtp(&server), world.config());
    eventually(5, "mail recorded", || async {
        running_stats_sent(&world).await == 1
    })
    .await;
    running.stop().await;
    std::fs::remove_file(world.dir.path().join("checkpoints").join("mailer")).unwrap();

    let running = world.start(smtp(&server), world.config());
    eventually(5, "caught up again", || async {
        world.checkpoints.load("mailer").await.unwrap().is_some()
    })
    .await;
    let stats = running.stats.snapshot();
    running.stop().await;
    assert_eq!(server.received().len(), 1);
    assert_eq!((stats.sent, stats.skipped), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_superseded_and_expired_requests_are_not_mailed() {
    let world = World::new().await;
    let server = SmtpServer::start();

    let expired = new_subscriber();
    world
        .request(
            expired,
            new_request(),
            "x@example.com",
            Locale::Da,
            &["news"],
        )
        .await;
    // Everything below happens after `expired`'s confirm_by.
    world.clock.set(t0() + TimeDelta::days(8));

    let restricted = new_subscriber();
    world
        .request(
            restricted,
            new_request(),
            "r@example.com",
            Locale::Da,
            &["news"],
        )
        .await;
    world.restrict(restricted).await;

    let superseding = new_subscriber();
    let (old, new) = (new_request(), new_request());
    world
        .request(superseding, old, "s@example.com", Locale::Da, &["news"])
        .await;
    world
        .request(
            superseding,
            new,
            "s@example.com",
            Locale::En,
            &["news", "events"],
        )
        .await;

    let plain = new_subscriber();
    world
        .request(plain, new_request(), "p@example.com", Locale::Da, &["news"])
        .await;

    let running = world.start(smtp(&server), world.config());
    eventually(5, "the two mailable requests mailed", || async {
        server.received().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = running.stats.snapshot();
    running.stop().await;

    let mut to: Vec<String> = server
        .received()
        .iter()
        .flat_map(|mail| mail.to.clone())
        .collect();
    to.sort();
    assert_eq!(to, ["p@example.com", "s@example.com"]);
    assert_eq!(stats.sent, 2);
    assert_eq!(stats.skipped, 3, "expired, restricted, superseded");
    assert!(!has_sent_mail(&world, restricted).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_pending_request_of_a_superseded_pair_is_mailed() {
    let world = World::new().await;
    let server = SmtpServer::start();
    let subscriber = new_subscriber();
    let (old, new) = (new_request(), new_request());
    world
        .request(subscriber, old, "s@example.com", Locale::Da, &["news"])
        .await;
    world
        .request(subscriber, new, "s@example.com", Locale::En, &["events"])
        .await;
    let running = world.start(smtp(&server), world.config());
    eventually(5, "one mail", || async { server.received().len() == 1 }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.stop().await;
    assert_eq!(server.received().len(), 1);
    let parsed = MessageParser::default()
        .parse(&server.received()[0].data)
        .unwrap()
        .body_text(0)
        .unwrap()
        .into_owned();
    let claims = world
        .keys
        .verify_confirm(&token_in(&parsed, "confirm"), t0())
        .unwrap();
    assert_eq!(claims.request, new, "the stale request got no mail");
}

/// Whether the subscriber's stream holds a recorded confirmation mail.
async fn has_sent_mail(world: &World, subscriber: newsletter_domain::SubscriberId) -> bool {
    world
        .events(subscriber)
        .await
        .iter()
        .any(|(_, e)| matches!(e, SubscriberEvent::ConfirmationMailSent(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_request_at_the_end_of_the_log_is_mailed_without_reading_its_stream() {
    let world = World::new().await;
    let server = SmtpServer::start();
    let counting = Arc::new(newsletter_eventstore::CountingStreamReads::over(
        Arc::clone(&world.store),
    ));
    let running = world.start_on(counting.clone(), smtp(&server), world.config());
    let subscriber = new_subscriber();
    world.request_news(subscriber, "f@example.com").await;
    eventually(5, "the first mail recorded", || async {
        has_sent_mail(&world, subscriber).await
    })
    .await;
    assert_eq!(server.received().len(), 1);
    assert_eq!(
        counting.take(),
        0,
        "a stream's first event, last in the log as read, is decided on without a stream read"
    );
    // A second request of the same subscriber is not its stream's first event: read first.
    world
        .request(
            subscriber,
            new_request(),
            "f@example.com",
            Locale::En,
            &["news"],
        )
        .await;
    eventually(5, "the second mail", || async {
        server.received().len() == 2
    })
    .await;
    running.stop().await;
    assert_eq!(counting.take(), 1, "the later request read its stream once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_request_with_a_later_event_of_its_stream_in_the_same_read_is_not_mailed() {
    let world = World::new().await;
    let server = SmtpServer::start();
    let (restricted, superseded) = (new_subscriber(), new_subscriber());
    world.request_news(restricted, "r@example.com").await;
    world.request_news(superseded, "s@example.com").await;
    let newer = new_request();
    world
        .request(superseded, newer, "s@example.com", Locale::En, &["news"])
        .await;
    // Read with the others, but still in the buffer when `restricted`'s request is handled (the
    // run ends at `superseded`'s second event).
    world.restrict(restricted).await;
    let running = world.start(smtp(&server), world.config());
    eventually(5, "the pending request mailed", || async {
        server.received().len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.stop().await;
    assert_eq!(server.received().len(), 1);
    assert_eq!(server.received()[0].to, ["s@example.com"]);
    assert!(
        !has_sent_mail(&world, restricted).await,
        "restricted: no mail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_request_read_in_a_full_batch_reads_its_stream_before_its_mail() {
    const OTHERS: usize = 300;
    let world = World::new().await;
    let server = SmtpServer::start();
    let restricted = new_subscriber();
    world.request_news(restricted, "r@example.com").await;
    for n in 0..OTHERS {
        world
            .request_news(new_subscriber(), &format!("o{n}@example.com"))
            .await;
    }
    // Beyond the mailer's first read of the log, which comes back full.
    world.restrict(restricted).await;
    let running = world.start(smtp(&server), world.config());
    eventually(30, "every other request mailed", || async {
        server.received().len() == OTHERS
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.stop().await;
    assert_eq!(server.received().len(), OTHERS);
    assert!(
        !server
            .received()
            .iter()
            .any(|mail| mail.to.iter().any(|to| to == "r@example.com")),
        "the restriction after the first full read stopped the mail"
    );
    assert!(!has_sent_mail(&world, restricted).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_interrupts_a_retry_wait_promptly_and_keeps_the_checkpoint() {
    let world = World::new().await;
    let port = SmtpServer::free_port();
    let subscriber = new_subscriber();
    world
        .request(
            subscriber,
            new_request(),
            "a@example.com",
            Locale::Da,
            &["news"],
        )
        .await;
    let mut config = world.config();
    config.retry = RetryPolicy {
        base_delay: Duration::from_secs(60),
        max_delay: Duration::from_secs(60),
        max_attempts: 10,
    };
    let transport =
        Arc::new(SmtpMailTransport::from_url(&format!("smtp://127.0.0.1:{port}")).unwrap());
    let running = world.start(transport, config);
    eventually(5, "first attempt failed", || async {
        running.stats.snapshot().retried == 1
    })
    .await;
    let started = std::time::Instant::now();
    running.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(world.checkpoints.load("mailer").await.unwrap().is_none());
    assert!(
        !world
            .events(subscriber)
            .await
            .iter()
            .any(|(_, e)| matches!(e, SubscriberEvent::ConfirmationMailFailed(_))),
        "nothing recorded for an interrupted request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_transport_writes_a_parseable_eml() {
    let world = World::new().await;
    let outbox = world.dir.path().join("outbox");
    let transport = Arc::new(FileMailTransport::new(&outbox).unwrap());
    let subscriber = new_subscriber();
    let request = new_request();
    world
        .request(
            subscriber,
            request,
            "jane@example.com",
            Locale::En,
            &["news"],
        )
        .await;
    let running = world.start(transport, world.config());
    eventually(5, "ConfirmationMailSent", || async {
        running_stats_sent(&world).await == 1
    })
    .await;
    running.stop().await;

    let files: Vec<_> = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].extension().and_then(|e| e.to_str()), Some("eml"));
    let data = std::fs::read(&files[0]).unwrap();
    let parsed = MessageParser::default()
        .parse(&data)
        .expect("parseable .eml");
    assert_eq!(
        parsed.subject(),
        Some("Confirm your subscription with OCTOPUS")
    );
    assert_eq!(
        parsed
            .to()
            .and_then(|to| to.first())
            .and_then(|a| a.address()),
        Some("jane@example.com")
    );
    let text = parsed.body_text(0).unwrap().into_owned();
    let claims = world
        .keys
        .verify_confirm(&token_in(&text, "confirm"), t0())
        .unwrap();
    assert_eq!(claims.request, request);
    assert!(parsed.body_html(0).unwrap().contains("privacy policy</a>"));
}
