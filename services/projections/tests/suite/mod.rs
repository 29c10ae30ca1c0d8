//! The read-side suite every backend must pass, and the helpers that drive the real decider
//! through the real event store.
//!
//! Each check takes a fresh event store, read models and email index from a [`Backend`];
//! `read_side_suite!` turns the list of checks into one `#[tokio::test]` per check.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use newsletter_domain::{
    ActorName, ConsentEvidence, EmailAddress, ErasureReference, ListCatalog, ListId, Locale,
    MessageId, PersonName, PolicyVersion, Profile, ReasonText, RequestId, SourceId, Subscriber,
    SubscriberCommand, SubscriberId, UnsubscribeChannel, UnsubscribeScope, UserAgent,
};
use newsletter_eventstore::{Clock, CommandError, EventMetadata, EventStore, StreamId, execute};
use newsletter_projections::{
    EmailIndex, LiveStatus, LiveStatusOptions, MemberCursor, MemberStatus, MemberView,
    ProjectionRunner, ReadModels, StatusCount, StatusView, SubscriberView,
};
use uuid::Uuid;

/// A way to get a fresh event store and read side of one backend.
pub trait Backend: Sized + Send {
    /// A new, empty event store with empty read models.
    async fn fresh() -> Self;
    /// The event store.
    fn store(&self) -> Arc<dyn EventStore>;
    /// The read models.
    fn models(&self) -> ReadModels;
    /// Opens the same read models again with new connections, as a restarted process would.
    async fn reopen_models(&mut self) -> ReadModels;
    /// A second, empty read-model database on the same log.
    async fn other_models(&mut self) -> ReadModels;
    /// The email index (opened on first use).
    async fn email_index(&mut self) -> EmailIndex;
    /// Removes what `fresh` created (best effort).
    async fn cleanup(self);
    /// How many events are committed in the log, whether or not `read_all` may return them yet
    /// (PostgreSQL holds back events behind any transaction still open in the cluster).
    async fn committed_events(&self) -> usize;
}

/// One test per check for a backend; the bracketed attributes go on every test.
#[macro_export]
macro_rules! read_side_suite {
    ($backend:ty, $attrs:tt) => {
        $crate::read_side_suite!(@tests $backend, $attrs,
            views_follow_a_subscriber_through_its_whole_life,
            keyset_pagination_returns_each_member_once,
            a_crash_mid_way_resumes_from_the_checkpoint_to_identical_rows,
            rebuild_gives_identical_rows,
            batched_and_one_by_one_application_agree,
            the_runner_follows_live_events_and_stops_on_shutdown,
            concurrent_claims_of_one_address_agree_on_one_id,
            batched_claims_of_many_addresses_each_get_their_own_winner,
            the_email_index_finds_many_and_forgets_on_removal,
            reactor_checkpoints_are_stored_by_name,
            the_live_status_view_loads_the_read_model_then_follows_the_log,
            the_live_status_view_reads_a_stream_only_when_the_batch_cannot_be_folded_alone,
        );
    };
    (@tests $backend:ty, $attrs:tt, $($name:ident),* $(,)?) => {
        $( $crate::read_side_suite!(@one $backend, $attrs, $name); )*
    };
    (@one $backend:ty, [$($attr:tt)*], $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        $($attr)*
        async fn $name() {
            let mut backend = <$backend as $crate::suite::Backend>::fresh().await;
            $crate::suite::$name(&mut backend).await;
            backend.cleanup().await;
        }
    };
}

/// The longest any single wait may take before a check fails (liveness, not performance).
const PATIENCE: Duration = Duration::from_secs(60);

/// 2026-11-25 09:00 UTC plus `hours`.
pub fn t(hours: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 9, 0, 0).unwrap() + TimeDelta::hours(hours)
}

struct FixedClock(DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

pub fn list(id: &str) -> ListId {
    ListCatalog::new(["news", "events", "product"])
        .unwrap()
        .parse(id)
        .unwrap()
}

fn consent(at: DateTime<Utc>) -> ConsentEvidence {
    ConsentEvidence {
        policy_version: PolicyVersion::parse("2026-11").unwrap(),
        source: Some(SourceId::parse("footer-form").unwrap()),
        at,
        ip: Some("192.0.2.7".parse().unwrap()),
        user_agent: Some(UserAgent::parse("Mozilla/5.0").unwrap()),
    }
}

fn actor() -> ActorName {
    ActorName::parse("dpo").unwrap()
}

fn reason() -> ReasonText {
    ReasonText::parse("disputes accuracy").unwrap()
}

pub fn email(n: usize) -> EmailAddress {
    EmailAddress::parse(&format!("Reader.{n}@Example.com")).unwrap()
}

pub fn request(
    request: RequestId,
    lists: &[&str],
    email: &EmailAddress,
    name: Option<&str>,
    at: DateTime<Utc>,
) -> SubscriberCommand {
    SubscriberCommand::RequestSubscription {
        request_id: request,
        lists: lists.iter().map(|l| list(l)).collect(),
        email: email.clone(),
        profile: Profile {
            name: name.map(|n| PersonName::parse(n).unwrap()),
            ..Profile::default()
        },
        locale: Locale::Da,
        consent: consent(at),
        confirm_by: at + TimeDelta::days(7),
    }
}

pub fn confirm(request: RequestId, at: DateTime<Utc>) -> SubscriberCommand {
    SubscriberCommand::Confirm {
        request_id: request,
        consent: consent(at),
    }
}

pub fn mail_sent(request: RequestId, n: u32) -> SubscriberCommand {
    SubscriberCommand::RecordConfirmationMailSent {
        request_id: request,
        message_id: MessageId::parse(&format!("<{n}@newsletter.example>")).unwrap(),
    }
}

pub fn unsubscribe(from: &str) -> SubscriberCommand {
    SubscriberCommand::Unsubscribe {
        scope: UnsubscribeScope::List(list(from)),
        channel: UnsubscribeChannel::OneClick,
    }
}

pub fn restrict() -> SubscriberCommand {
    SubscriberCommand::Restrict {
        actor: actor(),
        reason: reason(),
    }
}

pub fn lift() -> SubscriberCommand {
    SubscriberCommand::LiftRestriction {
        actor: actor(),
        reason: reason(),
    }
}

pub fn erase() -> SubscriberCommand {
    SubscriberCommand::Erase {
        actor: actor(),
        reference: ErasureReference::parse("DSR-2026-0042").unwrap(),
    }
}

/// Runs a command through the real decider and the real store at time `now`; panics on refusal.
pub async fn exec(
    store: &dyn EventStore,
    id: SubscriberId,
    command: SubscriberCommand,
    now: DateTime<Utc>,
) {
    try_exec(store, id, &command, now)
        .await
        .unwrap_or_else(|e| panic!("{} refused: {e}", command.name()));
}

/// Runs a command through the real decider and the real store at time `now`.
async fn try_exec(
    store: &dyn EventStore,
    id: SubscriberId,
    command: &SubscriberCommand,
    now: DateTime<Utc>,
) -> Result<(), CommandError<newsletter_domain::DomainError>> {
    let stream = StreamId::new(id.stream_name()).unwrap();
    execute::<Subscriber>(
        store,
        &FixedClock(now),
        &stream,
        command,
        &EventMetadata::default(),
    )
    .await
    .map(|_| ())
}

pub fn new_id() -> SubscriberId {
    SubscriberId::from_uuid(Uuid::now_v7())
}

pub fn rid() -> RequestId {
    RequestId::from_uuid(Uuid::now_v7())
}

/// Applies every committed event: catches up until the projection has applied as many events
/// as the log holds (a bounded wait: on PostgreSQL a committed event is readable only once no
/// older transaction is open anywhere in the cluster, which other tests may briefly hold).
async fn catch_up(backend: &impl Backend) -> u64 {
    catch_up_with(backend, &backend.models(), &ProjectionRunner::default()).await
}

/// [`catch_up`] into the given read models with the given runner settings.
async fn catch_up_with(
    backend: &impl Backend,
    models: &ReadModels,
    runner: &ProjectionRunner,
) -> u64 {
    let committed = backend.committed_events().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut applied = 0;
    loop {
        applied += runner
            .catch_up_once(&backend.store(), models)
            .await
            .expect("catch up");
        let checkpoint = models.projection_checkpoint().await.expect("checkpoint");
        let behind_or_at = backend
            .store()
            .read_all(None, usize::MAX >> 1)
            .await
            .expect("read all")
            .into_iter()
            .filter(|e| checkpoint.is_some_and(|c| e.position <= c))
            .count();
        if behind_or_at >= committed {
            return applied;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {behind_or_at} of {committed} committed events became readable"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn view(models: &ReadModels, id: SubscriberId) -> SubscriberView {
    models
        .subscriber(id)
        .await
        .expect("query")
        .expect("the subscriber has a view")
}

/// Every member of a list with a status, walking all pages.
pub async fn all_members(
    models: &ReadModels,
    list_id: &str,
    status: MemberStatus,
    limit: usize,
) -> Vec<MemberView> {
    let mut members = Vec::new();
    let mut after: Option<MemberCursor> = None;
    for _ in 0..10_000 {
        let (page, next) = models
            .list_members(&list(list_id), status, after, limit)
            .await
            .expect("list members");
        assert!(page.len() <= limit);
        members.extend(page);
        match next {
            Some(cursor) => after = Some(cursor),
            None => return members,
        }
    }
    panic!("the listing never ended");
}

async fn ids_on(models: &ReadModels, list_id: &str, status: MemberStatus) -> Vec<SubscriberId> {
    all_members(models, list_id, status, 100)
        .await
        .into_iter()
        .map(|m| m.subscriber_id)
        .collect()
}

/// Everything the read models answer about the given subscribers, for comparing two databases.
#[derive(Debug, PartialEq, Eq)]
pub struct Dump {
    subscribers: Vec<SubscriberView>,
    listings: BTreeMap<(String, &'static str), Vec<MemberView>>,
    counts: Vec<StatusCount>,
}

pub async fn dump(models: &ReadModels, ids: &[SubscriberId]) -> Dump {
    let mut listings = BTreeMap::new();
    for list_id in ["news", "events", "product"] {
        for status in MemberStatus::ALL {
            listings.insert(
                (list_id.to_owned(), status.as_str()),
                all_members(models, list_id, status, 7).await,
            );
        }
    }
    Dump {
        subscribers: models.subscribers_by_ids(ids).await.expect("views"),
        listings,
        counts: models.counts().await.expect("counts"),
    }
}

fn count(counts: &[StatusCount], list_id: &str, status: MemberStatus) -> u64 {
    counts
        .iter()
        .find(|c| c.list.as_str() == list_id && c.status == status)
        .map_or(0, |c| c.count)
}

pub async fn views_follow_a_subscriber_through_its_whole_life(backend: &mut impl Backend) {
    let store = backend.store();
    let store = store.as_ref();
    let models = backend.models();
    let jane = new_id();
    let other = new_id();
    let address = EmailAddress::parse("Jane.Doe@Example.com").unwrap();
    let req = rid();
    let (news, events) = (list("news"), list("events"));

    assert!(models.subscriber(jane).await.unwrap().is_none());
    assert_eq!(catch_up(backend).await, 0, "an empty log applies nothing");

    // Someone else on the news list, so listings are never trivially empty.
    let other_req = rid();
    exec(
        store,
        other,
        request(other_req, &["news"], &email(1), None, t(0)),
        t(0),
    )
    .await;
    exec(store, other, confirm(other_req, t(1)), t(1)).await;

    // Request: pending on both lists, address and locale from the request, no confirmed name.
    exec(
        store,
        jane,
        request(req, &["news", "events"], &address, Some("Jane Doe"), t(2)),
        t(2),
    )
    .await;
    assert_eq!(catch_up(backend).await, 3);
    let v = view(&models, jane).await;
    assert_eq!(v.status_on(&news), Some(MemberStatus::Pending));
    assert_eq!(v.status_on(&events), Some(MemberStatus::Pending));
    assert_eq!(
        v.email.as_ref().map(EmailAddress::as_str),
        Some("Jane.Doe@example.com")
    );
    assert_eq!(
        v.name, None,
        "the name becomes the subscriber's only on confirmation"
    );
    assert_eq!(v.locale, Some(Locale::Da));
    assert!(!v.restricted);
    assert_eq!(v.version, 1);
    assert_eq!(v.lists[0].since, t(2));
    assert_eq!(
        ids_on(&models, "news", MemberStatus::Pending).await,
        vec![jane]
    );
    assert_eq!(
        ids_on(&models, "news", MemberStatus::Confirmed).await,
        vec![other]
    );

    // The confirmation mail changes no status, only the version.
    exec(store, jane, mail_sent(req, 1), t(3)).await;
    assert_eq!(catch_up(backend).await, 1);
    let v = view(&models, jane).await;
    assert_eq!(v.version, 2);
    assert_eq!(v.status_on(&news), Some(MemberStatus::Pending));

    // Confirm: confirmed on both, with the name.
    exec(store, jane, confirm(req, t(4)), t(4)).await;
    catch_up(backend).await;
    let v = view(&models, jane).await;
    assert_eq!(v.status_on(&news), Some(MemberStatus::Confirmed));
    assert_eq!(v.status_on(&events), Some(MemberStatus::Confirmed));
    assert_eq!(v.name.as_ref().map(PersonName::as_str), Some("Jane Doe"));
    assert!(v.lists.iter().all(|m| m.since == t(4)));
    let mut both = vec![jane, other];
    both.sort();
    assert_eq!(ids_on(&models, "news", MemberStatus::Confirmed).await, both);
    let page = all_members(&models, "events", MemberStatus::Confirmed, 10).await;
    assert_eq!(page.len(), 1);
    assert_eq!(
        page[0].email.as_ref().map(EmailAddress::as_str),
        Some("Jane.Doe@example.com")
    );
    assert_eq!(
        page[0].name.as_ref().map(PersonName::as_str),
        Some("Jane Doe")
    );
    assert_eq!(page[0].locale, Some(Locale::Da));

    // Unsubscribe from one list: that list only.
    exec(store, jane, unsubscribe("news"), t(5)).await;
    catch_up(backend).await;
    let v = view(&models, jane).await;
    assert_eq!(v.status_on(&news), Some(MemberStatus::Unsubscribed));
    assert_eq!(v.status_on(&events), Some(MemberStatus::Confirmed));
    assert_eq!(
        ids_on(&models, "news", MemberStatus::Confirmed).await,
        vec![other]
    );
    assert_eq!(
        ids_on(&models, "news", MemberStatus::Unsubscribed).await,
        vec![jane]
    );

    // Restrict: every list reads restricted; absent from the confirmed listing.
    exec(store, jane, restrict(), t(6)).await;
    catch_up(backend).await;
    let v = view(&models, jane).await;
    assert!(v.restricted);
    assert!(v.lists.iter().all(|m| m.status == MemberStatus::Restricted));
    assert!(
        ids_on(&models, "events", MemberStatus::Confirmed)
            .await
            .is_empty()
    );
    assert_eq!(
        ids_on(&models, "events", MemberStatus::Restricted).await,
        vec![jane]
    );
    assert_eq!(
        ids_on(&models, "news", MemberStatus::Restricted).await,
        vec![jane]
    );
    let counts = models.counts().await.unwrap();
    assert_eq!(count(&counts, "events", MemberStatus::Confirmed), 0);
    assert_eq!(count(&counts, "events", MemberStatus::Restricted), 1);
    assert_eq!(count(&counts, "news", MemberStatus::Confirmed), 1);

    // Lift: back to what the lists were.
    exec(store, jane, lift(), t(7)).await;
    catch_up(backend).await;
    let v = view(&models, jane).await;
    assert!(!v.restricted);
    assert_eq!(v.status_on(&news), Some(MemberStatus::Unsubscribed));
    assert_eq!(v.status_on(&events), Some(MemberStatus::Confirmed));
    assert_eq!(
        ids_on(&models, "events", MemberStatus::Confirmed).await,
        vec![jane]
    );

    // Erase: no rows left.
    exec(store, jane, erase(), t(8)).await;
    catch_up(backend).await;
    assert!(models.subscriber(jane).await.unwrap().is_none());
    assert!(models.subscribers_by_ids(&[jane]).await.unwrap().is_empty());
    for list_id in ["news", "events"] {
        for status in MemberStatus::ALL {
            assert!(!ids_on(&models, list_id, status).await.contains(&jane));
        }
    }
    let counts = models.counts().await.unwrap();
    assert_eq!(count(&counts, "events", MemberStatus::Confirmed), 0);
    assert_eq!(count(&counts, "news", MemberStatus::Unsubscribed), 0);
    assert_eq!(
        count(&counts, "news", MemberStatus::Confirmed),
        1,
        "the other subscriber stays"
    );
    assert_eq!(
        models
            .subscribers_by_ids(&[jane, other])
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(catch_up(backend).await, 0, "nothing left to apply");
}

/// Makes `n` subscribers confirmed on `news`; every `restricted_every`-th is then restricted.
async fn confirmed_members(
    store: &dyn EventStore,
    n: usize,
    restricted_every: usize,
) -> (Vec<SubscriberId>, Vec<SubscriberId>) {
    let mut listed = Vec::new();
    let mut restricted = Vec::new();
    for i in 0..n {
        let id = new_id();
        let req = rid();
        exec(
            store,
            id,
            request(req, &["news"], &email(i), None, t(0)),
            t(0),
        )
        .await;
        exec(store, id, confirm(req, t(1)), t(1)).await;
        if restricted_every > 0 && i % restricted_every == 0 {
            exec(store, id, restrict(), t(2)).await;
            restricted.push(id);
        } else {
            listed.push(id);
        }
    }
    (listed, restricted)
}

pub async fn keyset_pagination_returns_each_member_once(backend: &mut impl Backend) {
    let store = backend.store();
    let (mut listed, mut restricted) = confirmed_members(store.as_ref(), 250, 25).await;
    listed.sort();
    restricted.sort();
    assert_eq!(listed.len(), 240);
    catch_up(backend).await;
    let models = backend.models();

    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let (page, next) = models
            .list_members(&list("news"), MemberStatus::Confirmed, after, 100)
            .await
            .unwrap();
        pages.push(page.len());
        seen.extend(page.iter().map(|m| m.subscriber_id));
        assert!(page.iter().all(|m| m.status == MemberStatus::Confirmed));
        match next {
            Some(cursor) => {
                assert_eq!(Some(cursor.0), page.last().map(|m| m.subscriber_id));
                // The cursor survives its text form (it goes into query strings).
                after = Some(cursor.to_string().parse::<MemberCursor>().unwrap());
            }
            None => break,
        }
    }
    assert_eq!(pages, vec![100, 100, 40]);
    assert_eq!(
        seen, listed,
        "every listed member exactly once, in id order"
    );
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len());
    assert!(
        restricted.iter().all(|id| !unique.contains(id)),
        "restricted never confirmed"
    );
    assert_eq!(
        ids_on(&models, "news", MemberStatus::Restricted).await,
        restricted
    );
    assert!(
        ids_on(&models, "events", MemberStatus::Confirmed)
            .await
            .is_empty()
    );

    // Limits are clamped: 0 behaves as 1.
    let (one, next) = models
        .list_members(&list("news"), MemberStatus::Confirmed, None, 0)
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert!(next.is_some());

    let counts = models.counts().await.unwrap();
    assert_eq!(count(&counts, "news", MemberStatus::Confirmed), 240);
    assert_eq!(count(&counts, "news", MemberStatus::Restricted), 10);
    assert_eq!(
        counts.len(),
        2,
        "no other list or status has members: {counts:?}"
    );

    let views = models.subscribers_by_ids(&listed).await.unwrap();
    assert_eq!(
        views.iter().map(|v| v.id).collect::<Vec<_>>(),
        listed,
        "in the order asked"
    );
}

/// A varied history: `n` subscribers, each at a different point of the lifecycle.
async fn varied_history(store: &dyn EventStore, n: usize) -> Vec<SubscriberId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = new_id();
        let req = rid();
        let at = t(i as i64 % 5);
        exec(
            store,
            id,
            request(req, &["news", "events"], &email(i), Some("Reader"), at),
            at,
        )
        .await;
        exec(store, id, mail_sent(req, i as u32), at).await;
        if i % 7 != 0 {
            exec(
                store,
                id,
                confirm(req, at + TimeDelta::hours(1)),
                at + TimeDelta::hours(1),
            )
            .await;
        }
        if i % 3 == 0 {
            exec(store, id, unsubscribe("news"), at + TimeDelta::hours(2)).await;
        }
        if i % 4 == 0 {
            exec(store, id, restrict(), at + TimeDelta::hours(3)).await;
        }
        if i % 8 == 0 {
            exec(store, id, lift(), at + TimeDelta::hours(4)).await;
        }
        if i % 6 == 1 {
            let second = rid();
            exec(
                store,
                id,
                request(
                    second,
                    &["product"],
                    &email(i),
                    None,
                    at + TimeDelta::hours(6),
                ),
                at + TimeDelta::hours(6),
            )
            .await;
        }
        if i % 11 == 5 {
            exec(store, id, erase(), at + TimeDelta::hours(7)).await;
        }
        ids.push(id);
    }
    ids
}

pub async fn a_crash_mid_way_resumes_from_the_checkpoint_to_identical_rows(
    backend: &mut impl Backend,
) {
    let store = backend.store();
    let ids = varied_history(store.as_ref(), 60).await;
    // The history was appended one command after another, so the last subscriber's last event
    // is the last of the log. On PostgreSQL it becomes readable in the global log only once
    // every older transaction in the cluster (other tests') has ended; wait for that, so the
    // log read below and the runners see all of it (and everything before it with it).
    let last_stream = StreamId::new(ids.last().expect("a history").stream_name()).unwrap();
    let last = store
        .read_stream(&last_stream, 0)
        .await
        .unwrap()
        .last()
        .map(|e| e.position)
        .expect("events");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while last_position(store.as_ref()).await != last {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the last appended event never became readable"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A runner applying one event per transaction, killed as soon as it has made progress.
    let models = backend.models();
    let runner = ProjectionRunner {
        batch_size: 1,
        ..ProjectionRunner::default()
    };
    let task = tokio::spawn({
        let store = Arc::clone(&store);
        let models = models.clone();
        async move {
            runner
                .run(store, models, std::future::pending::<()>())
                .await
        }
    });
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while models.projection_checkpoint().await.unwrap().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the runner made no progress"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    task.abort();
    let _ = task.await;
    drop(models);

    let restarted = backend.reopen_models().await;
    let stopped_at = restarted
        .projection_checkpoint()
        .await
        .unwrap()
        .expect("a checkpoint");
    assert!(
        stopped_at < last,
        "the crash happened mid-way ({stopped_at} of {last})"
    );
    let resumed = ProjectionRunner {
        batch_size: 5,
        ..ProjectionRunner::default()
    }
    .catch_up_once(&store, &restarted)
    .await
    .unwrap();
    assert!(resumed > 0);
    assert_eq!(restarted.projection_checkpoint().await.unwrap(), Some(last));

    let straight = backend.other_models().await;
    let total = newsletter_projections::catch_up_once(&store, &straight)
        .await
        .unwrap();
    let all = u64::try_from(store.read_all(None, 100_000).await.unwrap().len()).unwrap();
    assert_eq!(total, all);
    assert!(
        resumed < total,
        "the restart continued, it did not start over"
    );

    let expected = dump(&straight, &ids).await;
    assert!(!expected.subscribers.is_empty());
    assert_eq!(dump(&restarted, &ids).await, expected);
}

pub async fn rebuild_gives_identical_rows(backend: &mut impl Backend) {
    let store = backend.store();
    let ids = varied_history(store.as_ref(), 40).await;
    let models = backend.models();
    catch_up(backend).await;
    let before = dump(&models, &ids).await;
    let erased = before.subscribers.len();
    assert!(erased < ids.len(), "the history erases some subscribers");

    let report = newsletter_projections::rebuild(&store, &models)
        .await
        .unwrap();
    let all = store.read_all(None, 100_000).await.unwrap().len();
    assert_eq!(report.events, u64::try_from(all).unwrap());
    assert_eq!(
        report.subscribers,
        u64::try_from(before.subscribers.len()).unwrap()
    );
    let memberships: usize = before.subscribers.iter().map(|v| v.lists.len()).sum();
    assert_eq!(report.memberships, u64::try_from(memberships).unwrap());
    assert_eq!(dump(&models, &ids).await, before);
}

/// One step of a generated history: what happens next to one of a few subscribers.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    /// A subscription request for a non-empty subset of the three lists (bit mask).
    Request(u8),
    /// The confirmation mail of the subscriber's latest request was sent.
    MailSent,
    /// The latest request is confirmed.
    Confirm,
    /// Unsubscribe from one of the three lists.
    Unsubscribe(u8),
    Restrict,
    Lift,
    Erase,
}

const LISTS: [&str; 3] = ["news", "events", "product"];

/// Runs `steps` (subscriber number, step) through the real decider and store, hour by hour;
/// steps the domain refuses (confirming without a request, anything after erasure, …) are
/// skipped. Returns the subscribers' ids.
pub async fn run_steps(
    store: &dyn EventStore,
    subscribers: usize,
    steps: &[(usize, Step)],
) -> Vec<SubscriberId> {
    let ids: Vec<SubscriberId> = (0..subscribers).map(|_| new_id()).collect();
    let mut requests: Vec<Option<RequestId>> = vec![None; subscribers];
    for (hour, &(who, step)) in steps.iter().enumerate() {
        let who = who % subscribers;
        let at = t(hour as i64);
        let command = match step {
            Step::Request(mask) => {
                let req = rid();
                requests[who] = Some(req);
                let lists: Vec<&str> = LISTS
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| (mask.max(1) >> i) & 1 == 1)
                    .map(|(_, l)| *l)
                    .collect();
                let lists = if lists.is_empty() {
                    vec!["news"]
                } else {
                    lists
                };
                request(req, &lists, &email(who), Some("Reader"), at)
            }
            Step::MailSent => match requests[who] {
                Some(req) => mail_sent(req, hour as u32),
                None => continue,
            },
            Step::Confirm => match requests[who] {
                Some(req) => confirm(req, at),
                None => continue,
            },
            Step::Unsubscribe(list) => unsubscribe(LISTS[usize::from(list) % LISTS.len()]),
            Step::Restrict => restrict(),
            Step::Lift => lift(),
            Step::Erase => erase(),
        };
        match try_exec(store, ids[who], &command, at).await {
            Ok(_) | Err(CommandError::Refused(_)) => {}
            Err(e) => panic!("{} failed: {e}", command.name()),
        }
    }
    ids
}

/// The rows a history projects to do not depend on how the log is cut into batches: one event
/// per transaction, batches of 7 (cutting subscribers' histories apart) and a rebuild (large
/// batches) give the same answers. Checked on the given steps.
pub async fn batching_does_not_change_rows(
    backend: &mut impl Backend,
    subscribers: usize,
    steps: &[(usize, Step)],
) -> (Vec<SubscriberId>, Dump) {
    let store = backend.store();
    let ids = run_steps(store.as_ref(), subscribers, steps).await;
    let one_by_one = backend.other_models().await;
    let single = ProjectionRunner {
        batch_size: 1,
        ..ProjectionRunner::default()
    };
    catch_up_with(backend, &one_by_one, &single).await;
    let expected = dump(&one_by_one, &ids).await;

    let sevens = backend.other_models().await;
    let seven = ProjectionRunner {
        batch_size: 7,
        ..ProjectionRunner::default()
    };
    catch_up_with(backend, &sevens, &seven).await;
    assert_eq!(dump(&sevens, &ids).await, expected, "batches of 7");

    let models = backend.models();
    newsletter_projections::rebuild(&store, &models)
        .await
        .unwrap();
    // Rebuild reads what is readable now; make sure that is everything.
    catch_up_with(backend, &models, &ProjectionRunner::default()).await;
    assert_eq!(dump(&models, &ids).await, expected, "rebuild");
    (ids, expected)
}

/// [`batching_does_not_change_rows`] on a pseudo-random history of 40 subscribers with an
/// erasure in the middle of it, so that a batch holds an erasure among other subscribers'
/// events.
pub async fn batched_and_one_by_one_application_agree(backend: &mut impl Backend) {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        // xorshift64
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut steps = Vec::new();
    for who in 0..40 {
        steps.push((who, Step::Request(3)));
    }
    for i in 0..300_u32 {
        let who = (next() % 40) as usize;
        let step = match next() % 16 {
            0..=2 => Step::MailSent,
            3..=6 => Step::Confirm,
            7 | 8 => Step::Request((next() % 7 + 1) as u8),
            9 | 10 => Step::Unsubscribe((next() % 3) as u8),
            11 => Step::Restrict,
            12 => Step::Lift,
            13 if i.is_multiple_of(3) => Step::Erase,
            _ => Step::MailSent,
        };
        steps.push((who, step));
        if i == 150 {
            steps.push((5, Step::Erase));
        }
    }
    let (ids, expected) = batching_does_not_change_rows(backend, 40, &steps).await;
    assert!(
        expected.subscribers.iter().all(|v| v.id != ids[5]),
        "the erased subscriber has no view"
    );
    assert!(
        expected.subscribers.len() > 10,
        "most subscribers have views"
    );
    assert!(
        expected.listings.values().map(Vec::len).sum::<usize>() > 10,
        "listings are not trivially empty"
    );
}

pub async fn the_runner_follows_live_events_and_stops_on_shutdown(backend: &mut impl Backend) {
    let store = backend.store();
    let models = backend.models();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = ProjectionRunner {
        poll_interval: Duration::from_millis(50),
        ..ProjectionRunner::default()
    };
    let task = tokio::spawn({
        let store = Arc::clone(&store);
        let models = models.clone();
        async move {
            runner
                .run(store, models, async move {
                    let _ = stopped.await;
                })
                .await
        }
    });
    let id = new_id();
    let req = rid();
    exec(
        store.as_ref(),
        id,
        request(req, &["news"], &email(1), None, t(0)),
        t(0),
    )
    .await;
    exec(store.as_ref(), id, confirm(req, t(1)), t(1)).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = models.subscriber(id).await.unwrap()
            && v.status_on(&list("news")) == Some(MemberStatus::Confirmed)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the live event never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    let applied = tokio::time::timeout(PATIENCE, task)
        .await
        .expect("stops")
        .unwrap();
    assert_eq!(applied, 2);
    assert_eq!(
        catch_up(backend).await,
        0,
        "the runner's checkpoint is stored"
    );
}

pub async fn concurrent_claims_of_one_address_agree_on_one_id(backend: &mut impl Backend) {
    let index = backend.email_index().await;
    let spellings = [
        "Jane.Doe@Example.com",
        "jane.doe@example.com",
        "JANE.DOE@EXAMPLE.COM",
    ];
    let mut tasks = Vec::new();
    let mut candidates = BTreeSet::new();
    for n in 0..16 {
        let index = index.clone();
        let address = EmailAddress::parse(spellings[n % spellings.len()]).unwrap();
        let candidate = new_id();
        candidates.insert(candidate);
        tasks.push(tokio::spawn(async move {
            index.claim(&address, candidate).await
        }));
    }
    let mut winners = BTreeSet::new();
    for task in futures::future::join_all(tasks).await {
        winners.insert(task.unwrap().unwrap());
    }
    assert_eq!(winners.len(), 1, "exactly one id wins: {winners:?}");
    let winner = *winners.first().unwrap();
    assert!(candidates.contains(&winner));
    for spelling in spellings {
        let address = EmailAddress::parse(spelling).unwrap();
        assert_eq!(index.find(&address).await.unwrap(), Some(winner));
        assert_eq!(
            index.claim(&address, new_id()).await.unwrap(),
            winner,
            "a later claim gets the winner"
        );
    }
    let stranger = EmailAddress::parse("someone.else@example.com").unwrap();
    assert_eq!(index.find(&stranger).await.unwrap(), None);
}

/// 200 concurrent claims of 50 addresses (4 each, in different spellings, through two index
/// handles as two processes would): claims are committed in batches, and a batch that lost a
/// claim or handed one caller another's answer fails here.
pub async fn batched_claims_of_many_addresses_each_get_their_own_winner(
    backend: &mut impl Backend,
) {
    const ADDRESSES: usize = 50;
    const CLAIMS_EACH: usize = 4;
    let indexes = [backend.email_index().await, backend.email_index().await];
    let spelling = |n: usize, k: usize| {
        let address = format!("Batch.Reader.{n}@Example.com");
        EmailAddress::parse(&if k.is_multiple_of(2) {
            address
        } else {
            address.to_uppercase()
        })
        .unwrap()
    };
    let mut tasks = Vec::new();
    for k in 0..CLAIMS_EACH {
        for n in 0..ADDRESSES {
            let index = indexes[(n + k) % 2].clone();
            let address = spelling(n, k);
            let candidate = new_id();
            tasks.push(tokio::spawn(async move {
                let winner = index.claim(&address, candidate).await;
                (n, candidate, winner)
            }));
        }
    }
    let mut candidates: BTreeMap<usize, BTreeSet<SubscriberId>> = BTreeMap::new();
    let mut answers: BTreeMap<usize, BTreeSet<SubscriberId>> = BTreeMap::new();
    for task in futures::future::join_all(tasks).await {
        let (n, candidate, winner) = task.unwrap();
        candidates.entry(n).or_default().insert(candidate);
        answers.entry(n).or_default().insert(winner.unwrap());
    }
    assert_eq!(answers.len(), ADDRESSES, "every claim answered");
    let mut winners = BTreeSet::new();
    for (n, got) in &answers {
        assert_eq!(
            got.len(),
            1,
            "address {n}: every caller gets one id: {got:?}"
        );
        let winner = *got.first().unwrap();
        assert!(
            candidates[n].contains(&winner),
            "address {n}: the id is one of its own candidates, not another address's"
        );
        for index in &indexes {
            assert_eq!(index.find(&spelling(*n, 1)).await.unwrap(), Some(winner));
        }
        winners.insert(winner);
    }
    assert_eq!(winners.len(), ADDRESSES, "one id per address");
    let all: Vec<EmailAddress> = (0..ADDRESSES).map(|n| spelling(n, 0)).collect();
    let found = indexes[0].find_many(&all).await.unwrap();
    assert_eq!(found.len(), ADDRESSES, "every address is stored");
}

pub async fn the_email_index_finds_many_and_forgets_on_removal(backend: &mut impl Backend) {
    let index = backend.email_index().await;
    let mut known = Vec::new();
    for n in 0..1000 {
        if n % 2 == 0 {
            let id = new_id();
            assert_eq!(index.claim(&email(n), id).await.unwrap(), id);
            known.push((n, id));
        }
    }
    let asked: Vec<EmailAddress> = (0..1000).map(email).collect();
    let found = index.find_many(&asked).await.unwrap();
    assert_eq!(found.len(), 500);
    for ((address, id), (n, expected)) in found.iter().zip(&known) {
        assert_eq!(address, &email(*n));
        assert_eq!(id, expected);
    }
    assert!(index.find_many(&[]).await.unwrap().is_empty());
    let too_many: Vec<EmailAddress> = (0..1001).map(email).collect();
    assert!(matches!(
        index.find_many(&too_many).await,
        Err(newsletter_projections::ReadModelError::TooManyAddresses {
            max: 1000,
            got: 1001
        })
    ));
    let twice = index
        .find_many(&[email(0), email(1), email(0)])
        .await
        .unwrap();
    assert_eq!(twice.len(), 2, "an address given twice is answered twice");

    let (n, id) = known[0];
    assert_eq!(index.remove(id).await.unwrap(), 1);
    assert_eq!(index.remove(id).await.unwrap(), 0);
    assert_eq!(index.find(&email(n)).await.unwrap(), None);
    let fresh = new_id();
    assert_eq!(
        index.claim(&email(n), fresh).await.unwrap(),
        fresh,
        "a new signup gets a new id"
    );
    assert_eq!(
        index.find(&email(2)).await.unwrap(),
        Some(known[1].1),
        "others are untouched"
    );
}

pub async fn reactor_checkpoints_are_stored_by_name(backend: &mut impl Backend) {
    use newsletter_eventstore::Position;
    let models = backend.models();
    assert_eq!(models.load_checkpoint("mailer").await.unwrap(), None);
    models
        .save_checkpoint("mailer", Position::new(7, 9))
        .await
        .unwrap();
    models
        .save_checkpoint("other", Position::new(1, 1))
        .await
        .unwrap();
    assert_eq!(
        models.load_checkpoint("mailer").await.unwrap(),
        Some(Position::new(7, 9))
    );
    models
        .save_checkpoint("mailer", Position::new(8, 2))
        .await
        .unwrap();
    let reopened = backend.reopen_models().await;
    assert_eq!(
        reopened.load_checkpoint("mailer").await.unwrap(),
        Some(Position::new(8, 2))
    );
    assert_eq!(
        reopened.load_checkpoint("other").await.unwrap(),
        Some(Position::new(1, 1))
    );
    // A rebuild resets the projection, not reactors.
    newsletter_projections::rebuild(&backend.store(), &reopened)
        .await
        .unwrap();
    assert_eq!(
        reopened.load_checkpoint("mailer").await.unwrap(),
        Some(Position::new(8, 2))
    );
}

/// What the in-memory view should hold for a subscriber: the read model's view without the
/// personal data.
async fn sql_status(models: &ReadModels, id: SubscriberId) -> Option<StatusView> {
    models
        .subscriber(id)
        .await
        .expect("query")
        .map(|view| StatusView {
            id: view.id,
            locale: view.locale,
            lists: view.lists,
        })
}

async fn last_position(store: &dyn EventStore) -> newsletter_eventstore::Position {
    store
        .read_all(None, usize::MAX >> 1)
        .await
        .expect("read all")
        .last()
        .map(|e| e.position)
        .expect("events")
}

pub async fn the_live_status_view_loads_the_read_model_then_follows_the_log(
    backend: &mut impl Backend,
) {
    let store = backend.store();
    let models = backend.models();
    let ids = varied_history(store.as_ref(), 30).await;
    catch_up(backend).await;
    let checkpoint = models.projection_checkpoint().await.unwrap();

    // Changes after the read model's checkpoint, not projected into it.
    let (erased, restricted, unsubscribed) = (ids[1], ids[2], ids[3]);
    assert!(sql_status(&models, erased).await.is_some());
    exec(store.as_ref(), erased, erase(), t(20)).await;
    exec(store.as_ref(), restricted, restrict(), t(20)).await;
    exec(store.as_ref(), unsubscribed, unsubscribe("events"), t(20)).await;
    let late = new_id();
    let req = rid();
    exec(
        store.as_ref(),
        late,
        request(req, &["news"], &email(999), Some("Late"), t(20)),
        t(20),
    )
    .await;
    exec(store.as_ref(), late, confirm(req, t(21)), t(21)).await;

    // Loading reads the read model and its checkpoint, nothing of the log.
    let live = LiveStatus::new();
    assert!(!live.is_loaded());
    live.load(&models).await.unwrap();
    assert!(live.is_loaded());
    assert_eq!(live.position(), checkpoint);
    assert_eq!(
        live.len(),
        models.subscribers_by_ids(&ids).await.unwrap().len()
    );
    for id in &ids {
        assert_eq!(live.get(*id), sql_status(&models, *id).await, "loaded {id}");
    }
    assert!(
        live.get(erased).is_some(),
        "the erasure is after the checkpoint"
    );
    assert_eq!(
        live.get(late),
        None,
        "the new subscriber is after the checkpoint"
    );

    // Following the log from the checkpoint brings it to what the read model says once caught up.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn({
        let (live, store, models) = (live.clone(), Arc::clone(&store), models.clone());
        async move {
            live.run(
                store,
                models,
                LiveStatusOptions {
                    poll_interval: Duration::from_millis(50),
                    ..LiveStatusOptions::default()
                },
                async move {
                    let _ = stopped.await;
                },
            )
            .await;
        }
    });
    let head = last_position(store.as_ref()).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while live.position() < Some(head) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the view never reached the head of the log"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    catch_up(backend).await;
    for id in ids.iter().chain([&late]) {
        assert_eq!(
            live.get(*id),
            sql_status(&models, *id).await,
            "followed {id}"
        );
    }
    assert_eq!(live.get(erased), None, "erasure removes the entry");
    assert!(!live.contains(erased));
    let view = live.get(restricted).expect("restricted is kept");
    assert!(
        view.lists
            .iter()
            .all(|m| m.status == MemberStatus::Restricted),
        "restricted on every list: {view:?}"
    );
    let view = live.get(unsubscribed).expect("unsubscribed is kept");
    assert_eq!(
        view.lists
            .iter()
            .find(|m| m.list == list("events"))
            .map(|m| m.status),
        Some(MemberStatus::Unsubscribed)
    );
    let view = live.get(late).expect("the new subscriber");
    assert_eq!(view.locale, Some(Locale::Da));
    assert_eq!(view.lists.len(), 1);
    assert_eq!(view.lists[0].status, MemberStatus::Confirmed);

    // A live change arrives while it runs.
    exec(store.as_ref(), late, unsubscribe("news"), t(22)).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if live
            .get(late)
            .is_some_and(|v| v.lists[0].status == MemberStatus::Unsubscribed)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the live unsubscribe never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(PATIENCE, task)
        .await
        .expect("stops")
        .unwrap();
}

/// The log's events after `after` once `count` of them are readable (a bounded wait: on
/// PostgreSQL an event is readable once no older transaction is open in the cluster).
async fn next_events(
    store: &dyn EventStore,
    after: Option<newsletter_eventstore::Position>,
    count: usize,
) -> Vec<newsletter_eventstore::RecordedEvent> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let events = store.read_all(after, 1000).await.expect("read all");
        if events.len() >= count {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{count} events never became readable"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Checks the in-memory view holds what the SQL read model says of each subscriber.
async fn agrees_with_read_model(
    live: &LiveStatus,
    models: &ReadModels,
    ids: &[SubscriberId],
    when: &str,
) {
    for id in ids {
        assert_eq!(live.get(*id), sql_status(models, *id).await, "{when}: {id}");
    }
}

pub async fn the_live_status_view_reads_a_stream_only_when_the_batch_cannot_be_folded_alone(
    backend: &mut impl Backend,
) {
    let store = backend.store();
    let models = backend.models();
    let counting = newsletter_eventstore::CountingStreamReads::over(Arc::clone(&store));
    let live = LiveStatus::new();
    live.load(&models).await.unwrap();
    let (a, b) = (new_id(), new_id());
    let (ra, rb) = (rid(), rid());
    // Applies the next `count` events in one batch; returns how many streams it read.
    let mut after = None;
    let mut apply_next = async |count: usize| {
        let batch = next_events(store.as_ref(), after, count).await;
        assert_eq!(batch.len(), count, "the batch holds exactly the new events");
        live.apply(&counting, &batch).await.unwrap();
        after = batch.last().map(|e| e.position);
        assert_eq!(live.position(), after);
        counting.take()
    };

    // Two new streams, one of them with its confirmation mail: folded from the batch alone.
    exec(
        store.as_ref(),
        a,
        request(ra, &["news"], &email(1), Some("A"), t(1)),
        t(1),
    )
    .await;
    exec(store.as_ref(), a, mail_sent(ra, 1), t(1)).await;
    exec(
        store.as_ref(),
        b,
        request(rb, &["news", "events"], &email(2), None, t(1)),
        t(1),
    )
    .await;
    assert_eq!(apply_next(3).await, 0, "new streams need no read");
    catch_up(backend).await;
    agrees_with_read_model(&live, &models, &[a, b], "after signup").await;
    assert_eq!(live.get(a).unwrap().lists[0].status, MemberStatus::Pending);

    // Only a mail recorded: nothing to read, nothing changes.
    exec(store.as_ref(), b, mail_sent(rb, 2), t(2)).await;
    let before = live.get(b);
    assert_eq!(
        apply_next(1).await,
        0,
        "a status-neutral event needs no read"
    );
    assert_eq!(live.get(b), before);

    // A confirmation of a stream with earlier events: its whole stream is read.
    exec(store.as_ref(), a, confirm(ra, t(3)), t(3)).await;
    assert_eq!(apply_next(1).await, 1, "a confirmation re-reads its stream");
    assert_eq!(
        live.get(a).unwrap().lists[0].status,
        MemberStatus::Confirmed
    );

    // A stream whose first events were in an earlier batch, erased now: read, then removed.
    exec(store.as_ref(), b, erase(), t(4)).await;
    assert_eq!(apply_next(1).await, 1);
    assert_eq!(live.get(b), None);

    // Agrees with the read model, which folds every event.
    catch_up(backend).await;
    agrees_with_read_model(&live, &models, &[a, b], "at the end").await;
}
