//! The encrypting store on a real SQLite event store and vault: sealed at rest, opened on read,
//! read as erased after the key is destroyed, and a master-key rotation keeps keys usable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::Utc;
use newsletter_domain::{
    ActorName, ConsentEvidence, EmailAddress, ErasureReference, ListId, Locale, PersonName,
    PolicyVersion, Profile, RequestId, Subscriber, SubscriberCommand, SubscriberEvent,
    SubscriberId,
};
use newsletter_eventstore::command::load;
use newsletter_eventstore::{
    EventMetadata, EventStore, SqliteConfig, SqliteEventStore, StreamId, SystemClock, execute,
};
use newsletter_keyvault::{
    Destroyed, EncryptingEventStore, KeyVault, MasterKey, MasterKeyRing, Stats,
};
use uuid::Uuid;

const EMAIL: &str = "shred-me-4711@example.com";
const NAME: &str = "Karen Blixen-Finecke";
const IP: &str = "203.0.113.77";

fn request() -> SubscriberCommand {
    SubscriberCommand::RequestSubscription {
        request_id: RequestId::from_uuid(Uuid::now_v7()),
        lists: BTreeSet::from([ListId::try_from("news".to_owned()).unwrap()]),
        email: EmailAddress::parse(EMAIL).unwrap(),
        profile: Profile {
            name: Some(PersonName::parse(NAME).unwrap()),
            ..Profile::default()
        },
        locale: Locale::Da,
        consent: ConsentEvidence {
            policy_version: PolicyVersion::parse("2026-11").unwrap(),
            source: None,
            at: Utc::now(),
            ip: Some(IP.parse().unwrap()),
            user_agent: None,
        },
        confirm_by: Utc::now() + chrono::TimeDelta::days(7),
    }
}

#[tokio::test]
async fn personal_data_is_sealed_opened_and_shredded() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn EventStore> = Arc::new(
        SqliteEventStore::open(&dir.path().join("events.db"), SqliteConfig::default())
            .await
            .unwrap(),
    );
    let ring = MasterKeyRing::single(MasterKey::generate("k1").unwrap());
    let vault = KeyVault::open_sqlite(&dir.path().join("keyvault.db"), ring.clone())
        .await
        .unwrap();
    let store = EncryptingEventStore::new(Arc::clone(&inner), vault.clone());
    let subscriber = SubscriberId::from_uuid(Uuid::now_v7());
    let stream = StreamId::new(subscriber.stream_name()).unwrap();
    let meta = EventMetadata::default();
    execute::<Subscriber>(&store, &SystemClock, &stream, &request(), &meta)
        .await
        .unwrap();

    // At rest: nothing in clear.
    let raw = inner.read_stream(&stream, 0).await.unwrap();
    assert_eq!(raw.len(), 1);
    for needle in [EMAIL, NAME, IP] {
        assert!(!raw[0].payload.contains(needle), "{needle} stored in clear");
    }
    assert!(
        raw[0].payload.contains("\"lists\":[\"news\"]"),
        "{}",
        raw[0].payload
    );

    // Read through the decorator: the decider sees everything.
    let (state, _) = load::<Subscriber>(&store, &stream).await.unwrap();
    assert_eq!(state.email().map(EmailAddress::as_str), Some(EMAIL));

    // Rotation re-wraps with a new current key; the old one can then be dropped.
    let rotated = ring.with_new_current(MasterKey::generate("k2").unwrap());
    let vault2 = KeyVault::open_sqlite(&dir.path().join("keyvault.db"), rotated)
        .await
        .unwrap();
    let report = vault2.rotate().await.unwrap();
    assert_eq!(report.rewrapped, 1);
    assert_eq!(
        vault2.key_ids_in_use().await.unwrap(),
        vec![("k2".to_owned(), 1)]
    );
    let config = vault2.ring().to_config_string();
    let only_new = MasterKeyRing::parse(config.split(',').next().unwrap()).unwrap();
    let vault3 = KeyVault::open_sqlite(&dir.path().join("keyvault.db"), only_new)
        .await
        .unwrap();
    let store3 = EncryptingEventStore::new(Arc::clone(&inner), vault3.clone());
    let (state, _) = load::<Subscriber>(&store3, &stream).await.unwrap();
    assert_eq!(state.email().map(EmailAddress::as_str), Some(EMAIL));

    // Erase: event first, then the key.
    execute::<Subscriber>(
        &store3,
        &SystemClock,
        &stream,
        &SubscriberCommand::Erase {
            actor: ActorName::parse("dpo").unwrap(),
            reference: ErasureReference::parse("DSR-1").unwrap(),
        },
        &meta,
    )
    .await
    .unwrap();
    assert_eq!(
        vault3.destroy(*subscriber.as_uuid()).await.unwrap(),
        Destroyed::Now
    );
    assert_eq!(
        vault3.destroy(*subscriber.as_uuid()).await.unwrap(),
        Destroyed::Already
    );
    let events = store3.read_stream(&stream, 0).await.unwrap();
    let decoded: Vec<SubscriberEvent> = events.iter().map(|e| e.decode().unwrap()).collect();
    assert!(matches!(decoded[0], SubscriberEvent::PersonalDataErased(_)));
    assert!(matches!(decoded[1], SubscriberEvent::SubscriberErased(_)));
    let (state, _) = load::<Subscriber>(&store3, &stream).await.unwrap();
    assert!(state.is_erased());
    // read_all too, and personal data is never stored again for this stream.
    let all = store3.read_all(None, 10).await.unwrap();
    assert_eq!(all[0].event_type, "PersonalDataErased");
    assert!(
        execute::<Subscriber>(&store3, &SystemClock, &stream, &request(), &meta)
            .await
            .is_err()
    );

    // The anonymous statistics saw a request and an erasure on "news".
    let stats = Stats::new(&vault3);
    stats.catch_up(inner.as_ref()).await.unwrap();
    let counts = stats.counts().await.unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!((counts[0].requested, counts[0].erased), (1, 1));

    // And the vault file holds no key bytes for the subscriber any more once the WAL is gone.
    assert!(vault3.truncate_wal().await.unwrap());
}
