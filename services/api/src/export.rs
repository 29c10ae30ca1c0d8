//! The subscriber export (GDPR art. 15 access and art. 20 portability): one versioned JSON
//! document with everything held about a subscriber, built from their event stream (read
//! through the decrypting store) and the admin audit entries about them.
//!
//! # Schema `newsletter.subscriber-export`, version 2
//!
//! Version 2 holds every personal value the stream holds, current or not: version 1 left out
//! the addresses and profiles of superseded, cancelled and expired requests and the values
//! replaced or cleared by a later confirmation or a rectification. Version 2 adds `requests[]`
//! and `earlier_values[]` for them; every version-1 member is unchanged.
//!
//! | member | content |
//! |---|---|
//! | `schema`, `schema_version` | `"newsletter.subscriber-export"`, `2` (additions keep the version; removals or changes of meaning raise it) |
//! | `generated_at`, `subscriber_id` | when, and the opaque id |
//! | `profile` | confirmed `email`, `name`, `company`, `address`, `phone`, `locale` (absent members: not held) |
//! | `restricted` | processing restricted (art. 18) |
//! | `pending_request` | the request waiting for confirmation: `request_id`, `lists`, `email`, `profile`, `locale`, `requested_at`, `confirm_by` |
//! | `requests[]` | every signup request as made, whatever became of it: `request_id`, `lists`, `email`, `profile` (as typed), `locale`, `requested_at`, `confirm_by`, `outcome` (`pending`, `confirmed`, `superseded`, `cancelled`, `expired`), `ended_at` |
//! | `earlier_values[]` | values of the confirmed profile (`email`, `name`, `company`, `address`, `phone`) no longer current: `field`, `value`, `held_from`, `held_until`, `replaced_by` (the value that followed; null when the field was cleared), `change` (`confirmation` or `rectification`) |
//! | `subscriptions[]` | per list: `list`, current `status` (`pending`, `confirmed`, `unsubscribed`), `since`, and `history[]` of `{status, at, request_id?, channel?}` (statuses also `expired`, `cancelled`, `superseded`) |
//! | `consent[]` | evidence of each act of consent: `step` (`signup` or `confirmation`), `request_id`, `lists`, `policy_version`, `source`, `at`, `ip`, `user_agent`, `recorded_at` |
//! | `mails[]` | confirmation mails: `kind` (`confirmation`), `request_id`, `outcome` (`sent`, `failed`), `message_id`, `reason`, `permanent`, `at` |
//! | `policies[]` | the configured privacy-policy versions the consent records name: `version`, `url`, `effective_from` (`NEWSLETTER_POLICY_VERSIONS`) |
//! | `admin_actions[]` | `{action, actor, at, source, outcome?, detail?}`: from the stream (`profile_rectified` with the changed field names, `processing_restricted`/`restriction_lifted` with the reason, `data_exported`, `unsubscribed_by_admin`; `source: "event"`) and from the audit log (every admin read or change; `source: "audit"`) |

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use newsletter_domain::{
    Decider, EmailAddress, FieldChange, ListId, Locale, Profile, RequestId, Subscriber,
    SubscriberEvent, SubscriberState, UnsubscribeChannel,
};
use newsletter_eventstore::RecordedEvent;
use serde::Serialize;
use utoipa::ToSchema;

/// The schema name of the export document.
pub const EXPORT_SCHEMA: &str = "newsletter.subscriber-export";
/// Its version (2: adds `requests` and `earlier_values`).
pub const EXPORT_SCHEMA_VERSION: u32 = 2;

/// The confirmed profile.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExportProfile {
    /// The confirmed address.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub email: Option<EmailAddress>,
    /// Name, company, address and phone, as held.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub fields: Profile,
    /// Language of mails.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub locale: Option<Locale>,
}

/// The request waiting for confirmation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExportPending {
    /// Its id.
    #[schema(value_type = String)]
    pub request_id: RequestId,
    /// Lists it would confirm.
    #[schema(value_type = Vec<String>)]
    pub lists: Vec<ListId>,
    /// The address it was made for.
    #[schema(value_type = String)]
    pub email: EmailAddress,
    /// The profile typed into the form.
    #[schema(value_type = Object)]
    pub profile: Profile,
    /// Language.
    #[schema(value_type = String)]
    pub locale: Locale,
    /// When.
    pub requested_at: DateTime<Utc>,
    /// Until when it can be confirmed.
    pub confirm_by: DateTime<Utc>,
}

/// A signup request as it was made (version 2), whatever became of it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExportRequest {
    /// Its id.
    pub request_id: String,
    /// The lists it named.
    pub lists: Vec<String>,
    /// The address it was made for.
    #[schema(value_type = String)]
    pub email: EmailAddress,
    /// The profile as typed into the form (later rectifications are in `earlier_values`).
    #[schema(value_type = Object)]
    pub profile: Profile,
    /// Language.
    #[schema(value_type = String)]
    pub locale: Locale,
    /// When.
    pub requested_at: DateTime<Utc>,
    /// Until when it could be confirmed.
    pub confirm_by: DateTime<Utc>,
    /// `pending`, `confirmed`, `superseded` (by a later request), `cancelled`, `expired`.
    pub outcome: &'static str,
    /// When it stopped being pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
}

/// A value of the confirmed profile that is no longer current (version 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct EarlierValue {
    /// `email`, `name`, `company`, `address` or `phone`.
    pub field: String,
    /// The value.
    pub value: String,
    /// From when it was the current value.
    pub held_from: DateTime<Utc>,
    /// Until when.
    pub held_until: DateTime<Utc>,
    /// The value that replaced it; null when the field was cleared.
    pub replaced_by: Option<String>,
    /// What replaced or cleared it: `confirmation` (of a later request) or `rectification`.
    pub change: &'static str,
}

/// One change of a list status.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatusChange {
    /// `pending`, `confirmed`, `unsubscribed`, `expired`, `cancelled`, `superseded`.
    pub status: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The request concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// How an unsubscribe came in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// One list of the subscriber.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExportSubscription {
    /// The list id.
    pub list: String,
    /// The current status (absent when only past requests named it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Since when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// Every change, oldest first.
    pub history: Vec<StatusChange>,
}

/// Evidence of one act of consent.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConsentRecord {
    /// `signup` or `confirmation`.
    pub step: &'static str,
    /// The request.
    pub request_id: String,
    /// The lists concerned.
    pub lists: Vec<String>,
    /// The privacy-policy version shown.
    pub policy_version: String,
    /// The form or integration.
    pub source: Option<String>,
    /// When the person acted.
    pub at: DateTime<Utc>,
    /// Their IP address.
    pub ip: Option<String>,
    /// Their browser.
    pub user_agent: Option<String>,
    /// When the service recorded it.
    pub recorded_at: DateTime<Utc>,
}

/// One confirmation mail.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MailRecord {
    /// Always `confirmation` (the service sends no other mail).
    pub kind: &'static str,
    /// The request it was for.
    pub request_id: String,
    /// `sent` or `failed`.
    pub outcome: &'static str,
    /// Its Message-ID when sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether the failure was permanent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permanent: Option<bool>,
    /// When.
    pub at: DateTime<Utc>,
}

/// One administrative action.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AdminAction {
    /// What.
    pub action: String,
    /// Who (a token or role name).
    pub actor: String,
    /// When.
    pub at: DateTime<Utc>,
    /// `event` (from the stream) or `audit` (from the audit log).
    pub source: &'static str,
    /// How it ended (audit entries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Changed field names, a reason or a reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AdminAction {
    /// An action recorded as an event of the subscriber's stream.
    fn from_event(action: &str, actor: String, at: DateTime<Utc>, detail: Option<String>) -> Self {
        Self {
            action: action.to_owned(),
            actor,
            at,
            source: "event",
            outcome: None,
            detail,
        }
    }
}

/// A configured privacy-policy version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PolicyInfo {
    /// The version stamped on consent evidence.
    pub version: String,
    /// Where that version is published.
    pub url: String,
    /// The day it took effect.
    pub effective_from: chrono::NaiveDate,
}

/// The export document (see the module documentation for the schema).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExportDocument {
    /// `newsletter.subscriber-export`.
    pub schema: &'static str,
    /// `2`.
    pub schema_version: u32,
    /// When this document was made.
    pub generated_at: DateTime<Utc>,
    /// The subscriber's opaque id.
    pub subscriber_id: String,
    /// The confirmed profile.
    pub profile: ExportProfile,
    /// Processing restricted.
    pub restricted: bool,
    /// The request waiting for confirmation.
    pub pending_request: Option<ExportPending>,
    /// Every signup request as made, with what became of it.
    pub requests: Vec<ExportRequest>,
    /// Values of the confirmed profile that were replaced or cleared, oldest first.
    pub earlier_values: Vec<EarlierValue>,
    /// Every list, with its history.
    pub subscriptions: Vec<ExportSubscription>,
    /// Consent evidence of every signup and confirmation.
    pub consent: Vec<ConsentRecord>,
    /// Confirmation mails.
    pub mails: Vec<MailRecord>,
    /// Administrative actions.
    pub admin_actions: Vec<AdminAction>,
    /// The configured privacy-policy versions that consent records name (URL and effective
    /// date); empty when none are configured.
    pub policies: Vec<PolicyInfo>,
}

impl ExportDocument {
    /// Fills `policies` with the configured versions the consent records name.
    pub fn attach_policies(&mut self, configured: &[PolicyInfo]) {
        let named: std::collections::BTreeSet<&str> = self
            .consent
            .iter()
            .map(|c| c.policy_version.as_str())
            .collect();
        self.policies = configured
            .iter()
            .filter(|p| named.contains(p.version.as_str()))
            .cloned()
            .collect();
    }
}

fn channel_name(channel: UnsubscribeChannel) -> &'static str {
    match channel {
        UnsubscribeChannel::OneClick => "one_click",
        UnsubscribeChannel::Link => "link",
        UnsubscribeChannel::Api => "api",
        UnsubscribeChannel::Admin => "admin",
    }
}

fn changed_fields(changes: &newsletter_domain::ProfileChanges) -> String {
    let mut names = Vec::new();
    let mut push = |name: &'static str, keep: bool| {
        if !keep {
            names.push(name);
        }
    };
    push("name", matches!(changes.name, FieldChange::Keep));
    push("company", matches!(changes.company, FieldChange::Keep));
    push("address", matches!(changes.address, FieldChange::Keep));
    push("phone", matches!(changes.phone, FieldChange::Keep));
    names.join(",")
}

/// An audit entry about the subscriber, as the exporter gets it.
#[derive(Debug, Clone)]
pub struct AuditLine {
    /// What.
    pub action: String,
    /// Who.
    pub actor: String,
    /// When.
    pub at: DateTime<Utc>,
    /// How it ended.
    pub outcome: String,
    /// A reference, if any.
    pub detail: Option<String>,
}

/// The values of the confirmed profile (`email` and the profile fields) as strings.
fn held_values(state: &SubscriberState) -> BTreeMap<String, String> {
    let mut held = BTreeMap::new();
    if let Some(email) = state.email() {
        held.insert("email".to_owned(), email.as_str().to_owned());
    }
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(state.profile()) {
        for (field, value) in fields {
            if let serde_json::Value::String(value) = value {
                held.insert(field, value);
            }
        }
    }
    held
}

/// Records the values `before` held that `after` no longer holds, and when the new ones began.
fn track_values(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
    at: DateTime<Utc>,
    change: &'static str,
    since: &mut BTreeMap<String, DateTime<Utc>>,
    earlier: &mut Vec<EarlierValue>,
) {
    for (field, value) in before {
        let replaced_by = after.get(field);
        if replaced_by == Some(value) {
            continue;
        }
        earlier.push(EarlierValue {
            field: field.clone(),
            value: value.clone(),
            held_from: since.get(field).copied().unwrap_or(at),
            held_until: at,
            replaced_by: replaced_by.cloned(),
            change,
        });
    }
    for (field, value) in after {
        if before.get(field) != Some(value) {
            since.insert(field.clone(), at);
        }
    }
}

/// Marks a request as ended, if it is still pending.
fn end_request(
    requests: &mut [ExportRequest],
    request_id: RequestId,
    outcome: &'static str,
    at: DateTime<Utc>,
) {
    let id = request_id.to_string();
    if let Some(request) = requests
        .iter_mut()
        .find(|r| r.request_id == id && r.ended_at.is_none())
    {
        request.outcome = outcome;
        request.ended_at = Some(at);
    }
}

/// Builds the document from the stream's events (decrypted) and the audit entries about the
/// subscriber. Returns the folded state too.
pub fn build_export(
    subscriber_id: &str,
    events: &[RecordedEvent],
    audit: Vec<AuditLine>,
    now: DateTime<Utc>,
) -> Result<(ExportDocument, SubscriberState), newsletter_domain::DecodeError> {
    let mut state = SubscriberState::default();
    let mut history: BTreeMap<String, Vec<StatusChange>> = BTreeMap::new();
    let mut request_lists: BTreeMap<RequestId, Vec<String>> = BTreeMap::new();
    let mut pending: Option<RequestId> = None;
    let mut request_emails: BTreeMap<RequestId, EmailAddress> = BTreeMap::new();
    let mut confirmed_email: Option<EmailAddress> = None;
    let mut consent = Vec::new();
    let mut mails = Vec::new();
    let mut admin_actions = Vec::new();
    let mut requests: Vec<ExportRequest> = Vec::new();
    let mut earlier_values = Vec::new();
    let mut held_since: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let close = |history: &mut BTreeMap<String, Vec<StatusChange>>,
                 lists: Option<&Vec<String>>,
                 status: &str,
                 request: RequestId,
                 at: DateTime<Utc>| {
        for list in lists.into_iter().flatten() {
            history.entry(list.clone()).or_default().push(StatusChange {
                status: status.to_owned(),
                at,
                request_id: Some(request.to_string()),
                channel: None,
            });
        }
    };
    for recorded in events {
        let event: SubscriberEvent = recorded.decode()?;
        let actor = recorded
            .metadata
            .actor
            .clone()
            .unwrap_or_else(|| "unknown".to_owned());
        match &event {
            SubscriberEvent::SubscriptionRequested(e) => {
                if let Some(old) = pending.take() {
                    close(
                        &mut history,
                        request_lists.get(&old),
                        "superseded",
                        old,
                        e.at,
                    );
                    end_request(&mut requests, old, "superseded", e.at);
                }
                requests.push(ExportRequest {
                    request_id: e.request_id.to_string(),
                    lists: e.lists.iter().map(|l| l.as_str().to_owned()).collect(),
                    email: e.email.clone(),
                    profile: e.profile.clone(),
                    locale: e.locale,
                    requested_at: e.at,
                    confirm_by: e.confirm_by,
                    outcome: "pending",
                    ended_at: None,
                });
                let lists: Vec<String> = e.lists.iter().map(|l| l.as_str().to_owned()).collect();
                for list in &lists {
                    history.entry(list.clone()).or_default().push(StatusChange {
                        status: "pending".to_owned(),
                        at: e.at,
                        request_id: Some(e.request_id.to_string()),
                        channel: None,
                    });
                }
                consent.push(ConsentRecord {
                    step: "signup",
                    request_id: e.request_id.to_string(),
                    lists: lists.clone(),
                    policy_version: e.consent.policy_version.as_str().to_owned(),
                    source: e.consent.source.as_ref().map(|s| s.as_str().to_owned()),
                    at: e.consent.at,
                    ip: e.consent.ip.map(|ip| ip.to_string()),
                    user_agent: e.consent.user_agent.as_ref().map(|u| u.as_str().to_owned()),
                    recorded_at: recorded.recorded_at,
                });
                request_lists.insert(e.request_id, lists);
                request_emails.insert(e.request_id, e.email.clone());
                pending = Some(e.request_id);
            }
            SubscriberEvent::SubscriptionConfirmed(e) => {
                let lists: Vec<String> = e.lists.iter().map(|l| l.as_str().to_owned()).collect();
                for list in &lists {
                    history.entry(list.clone()).or_default().push(StatusChange {
                        status: "confirmed".to_owned(),
                        at: e.at,
                        request_id: Some(e.request_id.to_string()),
                        channel: None,
                    });
                }
                consent.push(ConsentRecord {
                    step: "confirmation",
                    request_id: e.request_id.to_string(),
                    lists,
                    policy_version: e.consent.policy_version.as_str().to_owned(),
                    source: e.consent.source.as_ref().map(|s| s.as_str().to_owned()),
                    at: e.consent.at,
                    ip: e.consent.ip.map(|ip| ip.to_string()),
                    user_agent: e.consent.user_agent.as_ref().map(|u| u.as_str().to_owned()),
                    recorded_at: recorded.recorded_at,
                });
                if pending == Some(e.request_id) {
                    pending = None;
                }
                end_request(&mut requests, e.request_id, "confirmed", e.at);
                if let Some(email) = request_emails.get(&e.request_id) {
                    confirmed_email = Some(email.clone());
                }
            }
            SubscriberEvent::ConfirmationMailSent(e) => mails.push(MailRecord {
                kind: "confirmation",
                request_id: e.request_id.to_string(),
                outcome: "sent",
                message_id: Some(e.message_id.as_str().to_owned()),
                reason: None,
                permanent: None,
                at: e.at,
            }),
            SubscriberEvent::ConfirmationMailFailed(e) => mails.push(MailRecord {
                kind: "confirmation",
                request_id: e.request_id.to_string(),
                outcome: "failed",
                message_id: None,
                reason: Some(e.reason.as_str().to_owned()),
                permanent: Some(e.permanent),
                at: e.at,
            }),
            SubscriberEvent::Unsubscribed(e) => {
                for list in &e.lists {
                    history
                        .entry(list.as_str().to_owned())
                        .or_default()
                        .push(StatusChange {
                            status: "unsubscribed".to_owned(),
                            at: e.at,
                            request_id: None,
                            channel: Some(channel_name(e.channel).to_owned()),
                        });
                }
                if e.channel == UnsubscribeChannel::Admin {
                    admin_actions.push(AdminAction::from_event(
                        "unsubscribed_by_admin",
                        actor.clone(),
                        e.at,
                        None,
                    ));
                }
            }
            SubscriberEvent::SubscriptionRequestCancelled(e) => {
                close(
                    &mut history,
                    request_lists.get(&e.request_id),
                    "cancelled",
                    e.request_id,
                    e.at,
                );
                if pending == Some(e.request_id) {
                    pending = None;
                }
                end_request(&mut requests, e.request_id, "cancelled", e.at);
            }
            SubscriberEvent::SubscriptionRequestExpired(e) => {
                close(
                    &mut history,
                    request_lists.get(&e.request_id),
                    "expired",
                    e.request_id,
                    e.at,
                );
                if pending == Some(e.request_id) {
                    pending = None;
                }
                end_request(&mut requests, e.request_id, "expired", e.at);
            }
            SubscriberEvent::ProfileRectified(e) => admin_actions.push(AdminAction::from_event(
                "profile_rectified",
                e.actor.as_str().to_owned(),
                e.at,
                Some(changed_fields(&e.changes)),
            )),
            SubscriberEvent::ProcessingRestricted(e) => {
                admin_actions.push(AdminAction::from_event(
                    "processing_restricted",
                    e.actor.as_str().to_owned(),
                    e.at,
                    Some(e.reason.as_str().to_owned()),
                ))
            }
            SubscriberEvent::RestrictionLifted(e) => admin_actions.push(AdminAction::from_event(
                "restriction_lifted",
                e.actor.as_str().to_owned(),
                e.at,
                Some(e.reason.as_str().to_owned()),
            )),
            SubscriberEvent::DataExported(e) => admin_actions.push(AdminAction::from_event(
                "data_exported",
                e.actor.as_str().to_owned(),
                e.at,
                None,
            )),
            SubscriberEvent::SubscriberErased(_) | SubscriberEvent::PersonalDataErased(_) => {}
        }
        let change = match &event {
            SubscriberEvent::SubscriptionConfirmed(_) => Some("confirmation"),
            SubscriberEvent::ProfileRectified(_) => Some("rectification"),
            _ => None,
        };
        let before = change.map(|_| held_values(&state));
        state = Subscriber::evolve(state, &event);
        if let (Some(change), Some(before)) = (change, before) {
            track_values(
                &before,
                &held_values(&state),
                event.at(),
                change,
                &mut held_since,
                &mut earlier_values,
            );
        }
    }
    admin_actions.extend(audit.into_iter().map(|a| AdminAction {
        action: a.action,
        actor: a.actor,
        at: a.at,
        source: "audit",
        outcome: Some(a.outcome),
        detail: a.detail,
    }));
    admin_actions.sort_by_key(|a| a.at);
    let mut subscriptions: BTreeMap<String, ExportSubscription> = history
        .into_iter()
        .map(|(list, history)| {
            (
                list.clone(),
                ExportSubscription {
                    list,
                    status: None,
                    since: None,
                    history,
                },
            )
        })
        .collect();
    for (list, membership) in state.lists() {
        let entry = subscriptions
            .entry(list.as_str().to_owned())
            .or_insert_with(|| ExportSubscription {
                list: list.as_str().to_owned(),
                status: None,
                since: None,
                history: Vec::new(),
            });
        entry.status = serde_json::to_value(membership.status())
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned));
        entry.since = Some(membership.since());
    }
    let pending_request = state.pending_request().map(|p| ExportPending {
        request_id: p.request_id(),
        lists: p.lists().iter().cloned().collect(),
        email: p.email().clone(),
        profile: p.profile().clone(),
        locale: p.locale(),
        requested_at: p.requested_at(),
        confirm_by: p.confirm_by(),
    });
    if state.is_erased() {
        confirmed_email = None;
    }
    let document = ExportDocument {
        schema: EXPORT_SCHEMA,
        schema_version: EXPORT_SCHEMA_VERSION,
        generated_at: now,
        subscriber_id: subscriber_id.to_owned(),
        profile: ExportProfile {
            email: confirmed_email,
            fields: state.profile().clone(),
            locale: state.locale(),
        },
        restricted: state.is_restricted(),
        pending_request,
        requests,
        earlier_values,
        subscriptions: subscriptions.into_values().collect(),
        consent,
        mails,
        admin_actions,
        policies: Vec::new(),
    };
    Ok((document, state))
}
