//! Seeds an event log for measuring `newsletter rebuild-projections` (used by `bench/run`).
//!
//! ```text
//! cargo run --release -p newsletter-keyvault --example seed_events -- seed <data dir> <events> [postgres URL]
//! cargo run --release -p newsletter-keyvault --example seed_events -- read <data dir> [postgres URL]
//! ```
//!
//! `read` is the replay baseline: it reads the whole log in pages of 1,000, once through the bare
//! store and once through the decrypting decorator, and prints both rates.
//!
//! Appends subscriber histories straight to the event store through the encrypting decorator
//! (personal fields sealed with a data key per subscriber, as the service stores them), each
//! history decided by the real domain and appended in one call, from 32 concurrent writers.
//! Seeding through HTTP runs at signup speed; this runs at append speed. Without a URL it uses
//! the SQLite files the service uses in `<data dir>` (`events.db`, `keyvault.db`); with one, the
//! PostgreSQL database it names. The master key is `<data dir>/master-key` (created when
//! missing, in the form development mode reads), so the binary run with the same
//! `NEWSLETTER_DATA_DIR` (and `NEWSLETTER_DATABASE_URL`) opens what was sealed here.
//!
//! Histories, by subscriber number `i`: a request for `newsletter` (and `events` for every
//! third), the confirmation mail, a confirmation (9 in 10), an unsubscribe (1 in 10), an erasure
//! with its data key destroyed (1 in 50). About 2.9 events per subscriber.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{TimeDelta, Utc};
use newsletter_domain::{
    ActorName, ConsentEvidence, Decider, EmailAddress, ErasureReference, EventCodec, ListCatalog,
    Locale, MessageId, PersonName, PolicyVersion, Profile, RequestId, SourceId, Subscriber,
    SubscriberCommand, SubscriberId, UnsubscribeChannel, UnsubscribeScope, UserAgent,
};
use newsletter_eventstore::{
    EventMetadata, EventStore, ExpectedVersion, NewEvent, PostgresConfig, PostgresEventStore,
    SqliteConfig, SqliteEventStore, StreamId,
};
use newsletter_keyvault::{EncryptingEventStore, KeyVault, MasterKey, MasterKeyRing};
use uuid::Uuid;

const WRITERS: usize = 32;

fn master_keys(dir: &Path) -> MasterKeyRing {
    let path = dir.join("master-key");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(_) => {
            let key = MasterKey::generate("kbench").expect("master key");
            let text = key.to_config_string();
            std::fs::write(&path, &text).expect("write master key");
            text
        }
    };
    MasterKeyRing::parse(&text).expect("master key ring")
}

/// The commands of subscriber `i`'s history.
fn history(i: u64, catalog: &ListCatalog) -> Vec<SubscriberCommand> {
    let at = Utc::now();
    let request_id = RequestId::from_uuid(Uuid::now_v7());
    let consent = ConsentEvidence {
        policy_version: PolicyVersion::parse("2026-11").unwrap(),
        source: Some(SourceId::parse("footer-form").unwrap()),
        at,
        ip: Some("192.0.2.7".parse().unwrap()),
        user_agent: Some(UserAgent::parse("Mozilla/5.0 (bench)").unwrap()),
    };
    let mut lists = BTreeSet::from([catalog.parse("newsletter").unwrap()]);
    if i.is_multiple_of(3) {
        lists.insert(catalog.parse("events").unwrap());
    }
    let mut commands = vec![
        SubscriberCommand::RequestSubscription {
            request_id,
            lists,
            email: EmailAddress::parse(&format!("seed-{i}@bench.example.com")).unwrap(),
            profile: Profile {
                name: Some(PersonName::parse("Bench Reader").unwrap()),
                ..Profile::default()
            },
            locale: Locale::Da,
            consent: consent.clone(),
            confirm_by: at + TimeDelta::days(7),
        },
        SubscriberCommand::RecordConfirmationMailSent {
            request_id,
            message_id: MessageId::parse(&format!("<seed-{i}@newsletter.example>")).unwrap(),
        },
    ];
    if i % 10 != 7 {
        commands.push(SubscriberCommand::Confirm {
            request_id,
            consent,
        });
    }
    if i % 10 == 3 {
        commands.push(SubscriberCommand::Unsubscribe {
            scope: UnsubscribeScope::List(catalog.parse("newsletter").unwrap()),
            channel: UnsubscribeChannel::OneClick,
        });
    }
    if i % 50 == 11 {
        commands.push(SubscriberCommand::Erase {
            actor: ActorName::parse("dpo").unwrap(),
            reference: ErasureReference::parse("DSR-BENCH").unwrap(),
        });
    }
    commands
}

/// Decides a history on the real domain and encodes its events.
fn events_of(commands: &[SubscriberCommand]) -> (Vec<NewEvent>, bool) {
    let mut state = <Subscriber as Decider>::State::default();
    let mut out = Vec::new();
    let mut erased = false;
    for command in commands {
        erased |= matches!(command, SubscriberCommand::Erase { .. });
        let events = Subscriber::decide(&state, command, Utc::now())
            .unwrap_or_else(|e| panic!("{} refused: {e}", command.name()));
        for event in events {
            out.push(NewEvent {
                event_id: Uuid::now_v7(),
                event_type: event.event_type().to_owned(),
                schema_version: event.schema_version(),
                payload: event.encode().expect("encode"),
                metadata: EventMetadata::default(),
            });
            state = Subscriber::evolve(state, &event);
        }
    }
    (out, erased)
}

/// The bare store and the vault in `dir` (or the PostgreSQL database `url` names).
async fn open(dir: &Path, url: Option<&String>) -> (Arc<dyn EventStore>, KeyVault) {
    std::fs::create_dir_all(dir).expect("data dir");
    let ring = master_keys(dir);
    match url {
        Some(url) => {
            let store = PostgresEventStore::connect(url, PostgresConfig::default())
                .await
                .expect("postgres event store");
            let vault = KeyVault::from_postgres_pool(store.pool().clone(), ring)
                .await
                .expect("key vault");
            (Arc::new(store), vault)
        }
        None => {
            let store = SqliteEventStore::open(&dir.join("events.db"), SqliteConfig::default())
                .await
                .expect("sqlite event store");
            let vault = KeyVault::open_sqlite(&dir.join("keyvault.db"), ring)
                .await
                .expect("key vault");
            (Arc::new(store), vault)
        }
    }
}

/// Reads the whole log in pages of 1,000 and prints the rate.
async fn read_all(label: &str, store: &dyn EventStore) {
    let started = std::time::Instant::now();
    let (mut after, mut events) = (None, 0_u64);
    loop {
        let page = store.read_all(after, 1000).await.expect("read_all");
        let Some(last) = page.last() else { break };
        after = Some(last.position);
        events += page.len() as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{label}: {events} events in {seconds:.2} s ({:.0} events/s)",
        events as f64 / seconds
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: seed_events seed <data dir> <events> [postgres URL] | read <data dir> [postgres URL]";
    let dir = PathBuf::from(args.get(2).expect(usage));
    if args.get(1).map(String::as_str) == Some("read") {
        let (sealed, vault) = open(&dir, args.get(3)).await;
        read_all("bare store", sealed.as_ref()).await;
        read_all(
            "decrypting store",
            &EncryptingEventStore::new(Arc::clone(&sealed), vault),
        )
        .await;
        return;
    }
    assert_eq!(args.get(1).map(String::as_str), Some("seed"), "{usage}");
    let target: u64 = args.get(3).expect(usage).parse().expect(usage);
    let (sealed, vault) = open(&dir, args.get(4)).await;
    let store = Arc::new(EncryptingEventStore::new(sealed, vault.clone()));
    let catalog = Arc::new(ListCatalog::new(["newsletter", "events"]).unwrap());
    let next = Arc::new(AtomicU64::new(0));
    let appended = Arc::new(AtomicU64::new(0));
    let started = std::time::Instant::now();
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let (store, vault, catalog, next, appended) = (
            Arc::clone(&store),
            vault.clone(),
            Arc::clone(&catalog),
            Arc::clone(&next),
            Arc::clone(&appended),
        );
        writers.push(tokio::spawn(async move {
            while appended.load(Ordering::Relaxed) < target {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let id = SubscriberId::from_uuid(Uuid::now_v7());
                let (events, erased) = events_of(&history(i, &catalog));
                let count = events.len() as u64;
                let stream = StreamId::new(id.stream_name()).unwrap();
                store
                    .append(&stream, ExpectedVersion::NoStream, events)
                    .await
                    .expect("append");
                if erased {
                    vault.destroy(*id.as_uuid()).await.expect("destroy key");
                }
                appended.fetch_add(count, Ordering::Relaxed);
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let events = appended.load(Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "seeded {events} events of {} subscribers in {seconds:.1} s ({:.0} events/s)",
        next.load(Ordering::Relaxed),
        events as f64 / seconds
    );
}
