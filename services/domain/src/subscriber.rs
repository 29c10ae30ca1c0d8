//! [`Subscriber`]: the decider of one subscriber's stream — every rule of the lifecycle.
//!
//! The rules are listed in the crate documentation; `tests/rules.rs` has one given/when/then
//! test per rule.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use crate::command::{SubscriberCommand, UnsubscribeScope};
use crate::decider::Decider;
use crate::error::DomainError;
use crate::event::{
    ConfirmationMailFailed, ConfirmationMailSent, DataExported, ProcessingRestricted,
    ProfileRectified, RestrictionLifted, SubscriberErased, SubscriberEvent, SubscriptionConfirmed,
    SubscriptionRequestCancelled, SubscriptionRequestExpired, SubscriptionRequested, Unsubscribed,
};
use crate::ids::RequestId;
use crate::list::ListId;
use crate::state::{
    Lifecycle, ListMembership, ListStatus, MailFailure, PendingRequest, RequestOutcome, SentMail,
    SubscriberState,
};

/// The decider of one subscriber: `decide` holds the rules, `evolve` folds events into
/// [`SubscriberState`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Subscriber;

type Decision = Result<Vec<SubscriberEvent>, DomainError>;

impl Decider for Subscriber {
    type State = SubscriberState;
    type Command = SubscriberCommand;
    type Event = SubscriberEvent;
    type Error = DomainError;

    fn decide(
        state: &SubscriberState,
        command: &SubscriberCommand,
        now: DateTime<Utc>,
    ) -> Decision {
        use SubscriberCommand as C;
        if state.is_erased() {
            return match command {
                C::Unsubscribe { .. }
                | C::CancelRequest { .. }
                | C::ExpirePending { .. }
                | C::Erase { .. } => Ok(vec![]),
                _ => Err(DomainError::Erased),
            };
        }
        match command {
            C::RequestSubscription {
                request_id,
                lists,
                email,
                profile,
                locale,
                consent,
                confirm_by,
            } => {
                if lists.is_empty() {
                    return Err(DomainError::NoLists);
                }
                if state.knows_request(*request_id) {
                    return Ok(vec![]);
                }
                if state.restricted {
                    return Err(DomainError::Restricted);
                }
                if *confirm_by <= now {
                    return Err(DomainError::ConfirmByNotInFuture);
                }
                let lists: BTreeSet<ListId> = lists
                    .iter()
                    .filter(|list| state.status_of(list) != Some(ListStatus::Confirmed))
                    .cloned()
                    .collect();
                if lists.is_empty() {
                    return Ok(vec![]);
                }
                if let Some(retry_after) = state.confirmation_retry_after(now) {
                    return Err(DomainError::TooManyConfirmationMails { retry_after });
                }
                Ok(vec![SubscriberEvent::SubscriptionRequested(
                    SubscriptionRequested {
                        request_id: *request_id,
                        lists,
                        email: email.clone(),
                        profile: profile.clone(),
                        locale: *locale,
                        consent: consent.clone(),
                        confirm_by: *confirm_by,
                        at: now,
                    },
                )])
            }
            C::RecordConfirmationMailSent {
                request_id,
                message_id,
            } => {
                if state.restricted {
                    return Err(DomainError::Restricted);
                }
                let pending = pending_or_error(state, *request_id)?;
                if pending.mails.iter().any(|m| m.message_id == *message_id) {
                    return Ok(vec![]);
                }
                Ok(vec![SubscriberEvent::ConfirmationMailSent(
                    ConfirmationMailSent {
                        request_id: *request_id,
                        message_id: message_id.clone(),
                        at: now,
                    },
                )])
            }
            C::RecordConfirmationMailFailed {
                request_id,
                reason,
                permanent,
            } => {
                pending_or_error(state, *request_id)?;
                Ok(vec![SubscriberEvent::ConfirmationMailFailed(
                    ConfirmationMailFailed {
                        request_id: *request_id,
                        reason: reason.clone(),
                        permanent: *permanent,
                        at: now,
                    },
                )])
            }
            C::Confirm {
                request_id,
                consent,
            } => {
                if state.request_outcome(*request_id) == Some(RequestOutcome::Confirmed) {
                    return Ok(vec![]);
                }
                let pending = pending_or_error(state, *request_id)?;
                if now > pending.confirm_by {
                    return Err(DomainError::RequestExpired {
                        request_id: *request_id,
                    });
                }
                Ok(vec![SubscriberEvent::SubscriptionConfirmed(
                    SubscriptionConfirmed {
                        request_id: *request_id,
                        lists: pending.lists.clone(),
                        consent: consent.clone(),
                        at: now,
                    },
                )])
            }
            C::Unsubscribe { scope, channel } => {
                let active = |status: Option<ListStatus>| {
                    matches!(status, Some(ListStatus::Pending | ListStatus::Confirmed))
                };
                let lists: BTreeSet<ListId> = match scope {
                    UnsubscribeScope::List(list) => {
                        if active(state.status_of(list)) {
                            BTreeSet::from([list.clone()])
                        } else {
                            BTreeSet::new()
                        }
                    }
                    UnsubscribeScope::All => state
                        .lists
                        .iter()
                        .filter(|(_, m)| active(Some(m.status)))
                        .map(|(list, _)| list.clone())
                        .collect(),
                };
                if lists.is_empty() {
                    return Ok(vec![]);
                }
                let cancels = state
                    .pending
                    .as_ref()
                    .filter(|p| p.lists.is_subset(&lists))
                    .map(|p| p.request_id);
                let mut events = vec![SubscriberEvent::Unsubscribed(Unsubscribed {
                    lists,
                    channel: *channel,
                    at: now,
                })];
                if let Some(request_id) = cancels {
                    events.push(SubscriberEvent::SubscriptionRequestCancelled(
                        SubscriptionRequestCancelled {
                            request_id,
                            at: now,
                        },
                    ));
                }
                Ok(events)
            }
            C::RectifyProfile { changes, actor } => {
                require_existing(state)?;
                let on_confirmed = changes.effective_against(&state.profile);
                let on_pending = state
                    .pending
                    .as_ref()
                    .map(|p| changes.effective_against(&p.profile));
                if on_confirmed.is_empty() && on_pending.is_none_or(|c| c.is_empty()) {
                    return Ok(vec![]);
                }
                Ok(vec![SubscriberEvent::ProfileRectified(ProfileRectified {
                    changes: changes.clone(),
                    actor: actor.clone(),
                    at: now,
                })])
            }
            C::Restrict { actor, reason } => {
                require_existing(state)?;
                if state.restricted {
                    return Ok(vec![]);
                }
                Ok(vec![SubscriberEvent::ProcessingRestricted(
                    ProcessingRestricted {
                        actor: actor.clone(),
                        reason: reason.clone(),
                        at: now,
                    },
                )])
            }
            C::LiftRestriction { actor, reason } => {
                require_existing(state)?;
                if !state.restricted {
                    return Ok(vec![]);
                }
                Ok(vec![SubscriberEvent::RestrictionLifted(
                    RestrictionLifted {
                        actor: actor.clone(),
                        reason: reason.clone(),
                        at: now,
                    },
                )])
            }
            C::CancelRequest { request_id } => {
                if state.request_outcome(*request_id).is_some() {
                    return Ok(vec![]);
                }
                state
                    .pending_with(*request_id)
                    .ok_or(DomainError::UnknownRequest {
                        request_id: *request_id,
                    })?;
                Ok(vec![SubscriberEvent::SubscriptionRequestCancelled(
                    SubscriptionRequestCancelled {
                        request_id: *request_id,
                        at: now,
                    },
                )])
            }
            C::ExpirePending { request_id } => {
                if state.request_outcome(*request_id).is_some() {
                    return Ok(vec![]);
                }
                let pending =
                    state
                        .pending_with(*request_id)
                        .ok_or(DomainError::UnknownRequest {
                            request_id: *request_id,
                        })?;
                if now <= pending.confirm_by {
                    return Err(DomainError::NotYetExpired {
                        request_id: *request_id,
                        confirm_by: pending.confirm_by,
                    });
                }
                Ok(vec![SubscriberEvent::SubscriptionRequestExpired(
                    SubscriptionRequestExpired {
                        request_id: *request_id,
                        at: now,
                    },
                )])
            }
            C::Erase { actor, reference } => {
                require_existing(state)?;
                Ok(vec![SubscriberEvent::SubscriberErased(SubscriberErased {
                    actor: actor.clone(),
                    reference: reference.clone(),
                    at: now,
                })])
            }
            C::RecordExport { actor } => {
                require_existing(state)?;
                Ok(vec![SubscriberEvent::DataExported(DataExported {
                    actor: actor.clone(),
                    at: now,
                })])
            }
        }
    }

    fn evolve(state: SubscriberState, event: &SubscriberEvent) -> SubscriberState {
        let mut state = state;
        if state.is_erased() {
            return state;
        }
        match event {
            SubscriberEvent::SubscriptionRequested(SubscriptionRequested { at, .. })
            | SubscriberEvent::SubscriptionConfirmed(SubscriptionConfirmed { at, .. })
            | SubscriberEvent::Unsubscribed(Unsubscribed { at, .. })
            | SubscriberEvent::SubscriptionRequestCancelled(SubscriptionRequestCancelled {
                at,
                ..
            })
            | SubscriberEvent::SubscriptionRequestExpired(SubscriptionRequestExpired {
                at, ..
            })
            | SubscriberEvent::RestrictionLifted(RestrictionLifted { at, .. }) => {
                state.last_change = Some(*at);
            }
            _ => {}
        }
        match event {
            SubscriberEvent::SubscriptionRequested(e) => {
                state.lifecycle = Lifecycle::Active;
                let mut previous = std::collections::BTreeMap::new();
                if let Some(old) = state.pending.take() {
                    state
                        .closed_requests
                        .insert(old.request_id, RequestOutcome::Superseded);
                    for (list, before) in old.previous {
                        if e.lists.contains(&list) {
                            previous.insert(list, before);
                        } else {
                            restore(&mut state, list, before);
                        }
                    }
                }
                for list in &e.lists {
                    let before = state.lists.get(list).cloned();
                    previous.entry(list.clone()).or_insert(before);
                    state.lists.insert(
                        list.clone(),
                        ListMembership {
                            status: ListStatus::Pending,
                            since: e.at,
                            request_id: Some(e.request_id),
                        },
                    );
                }
                state.pending = Some(PendingRequest {
                    request_id: e.request_id,
                    lists: e.lists.clone(),
                    email: e.email.clone(),
                    profile: e.profile.clone(),
                    locale: e.locale,
                    consent: e.consent.clone(),
                    confirm_by: e.confirm_by,
                    requested_at: e.at,
                    mails: Vec::new(),
                    last_failure: None,
                    previous,
                });
            }
            SubscriberEvent::ConfirmationMailSent(e) => {
                state.confirmation_mails.push(e.at);
                if let Some(pending) = pending_mut(&mut state, e.request_id) {
                    pending.mails.push(SentMail {
                        message_id: e.message_id.clone(),
                        at: e.at,
                    });
                }
            }
            SubscriberEvent::ConfirmationMailFailed(e) => {
                if let Some(pending) = pending_mut(&mut state, e.request_id) {
                    pending.last_failure = Some(MailFailure {
                        reason: e.reason.clone(),
                        permanent: e.permanent,
                        at: e.at,
                    });
                }
            }
            SubscriberEvent::SubscriptionConfirmed(e) => {
                if let Some(pending) = take_pending(&mut state, e.request_id) {
                    state.email = Some(pending.email);
                    state.profile = state.profile.merged_with(&pending.profile);
                    state.locale = Some(pending.locale);
                    for (list, before) in pending.previous {
                        if !e.lists.contains(&list) {
                            restore(&mut state, list, before);
                        }
                    }
                }
                for list in &e.lists {
                    state.lists.insert(
                        list.clone(),
                        ListMembership {
                            status: ListStatus::Confirmed,
                            since: e.at,
                            request_id: Some(e.request_id),
                        },
                    );
                }
                state
                    .closed_requests
                    .insert(e.request_id, RequestOutcome::Confirmed);
            }
            SubscriberEvent::Unsubscribed(e) => {
                for list in &e.lists {
                    state.lists.insert(
                        list.clone(),
                        ListMembership {
                            status: ListStatus::Unsubscribed,
                            since: e.at,
                            request_id: None,
                        },
                    );
                    if let Some(pending) = state.pending.as_mut() {
                        pending.lists.remove(list);
                        pending.previous.remove(list);
                    }
                }
            }
            SubscriberEvent::SubscriptionRequestCancelled(e) => {
                close_pending(&mut state, e.request_id, RequestOutcome::Cancelled);
            }
            SubscriberEvent::ProfileRectified(e) => {
                state.profile = e.changes.apply_to(&state.profile);
                if let Some(pending) = state.pending.as_mut() {
                    pending.profile = e.changes.apply_to(&pending.profile);
                }
            }
            SubscriberEvent::ProcessingRestricted(_) => state.restricted = true,
            SubscriberEvent::RestrictionLifted(_) => state.restricted = false,
            SubscriberEvent::SubscriptionRequestExpired(e) => {
                close_pending(&mut state, e.request_id, RequestOutcome::Expired);
            }
            SubscriberEvent::SubscriberErased(e) => {
                state = SubscriberState {
                    lifecycle: Lifecycle::Erased { at: e.at },
                    ..SubscriberState::default()
                };
            }
            // Redacted by crypto-shredding: normally its SubscriberErased follows in the stream.
            // When the key is missing without a tombstone (a vault restored from an old
            // backup), nothing follows: the stream still names a subscriber, who can be erased.
            SubscriberEvent::PersonalDataErased(_) => {
                if state.lifecycle == Lifecycle::New {
                    state.lifecycle = Lifecycle::Active;
                }
            }
            SubscriberEvent::DataExported(_) => {}
        }
        state
    }
}

/// The pending request with this id, or why the command naming it is refused.
fn pending_or_error(
    state: &SubscriberState,
    request_id: RequestId,
) -> Result<&PendingRequest, DomainError> {
    if let Some(pending) = state.pending_with(request_id) {
        return Ok(pending);
    }
    Err(match state.request_outcome(request_id) {
        Some(RequestOutcome::Expired) => DomainError::RequestExpired { request_id },
        Some(
            RequestOutcome::Confirmed | RequestOutcome::Cancelled | RequestOutcome::Superseded,
        ) => DomainError::StaleRequest { request_id },
        None => DomainError::UnknownRequest { request_id },
    })
}

fn require_existing(state: &SubscriberState) -> Result<(), DomainError> {
    if state.is_new() {
        Err(DomainError::UnknownSubscriber)
    } else {
        Ok(())
    }
}

fn pending_mut(state: &mut SubscriberState, request_id: RequestId) -> Option<&mut PendingRequest> {
    state
        .pending
        .as_mut()
        .filter(|p| p.request_id == request_id)
}

fn take_pending(state: &mut SubscriberState, request_id: RequestId) -> Option<PendingRequest> {
    if state.pending_with(request_id).is_some() {
        state.pending.take()
    } else {
        None
    }
}

/// Ends the pending request: its lists go back to what they were before it.
fn close_pending(state: &mut SubscriberState, request_id: RequestId, outcome: RequestOutcome) {
    if let Some(pending) = take_pending(state, request_id) {
        for (list, before) in pending.previous {
            restore(state, list, before);
        }
        state.closed_requests.insert(request_id, outcome);
    }
}

fn restore(state: &mut SubscriberState, list: ListId, before: Option<ListMembership>) {
    match before {
        Some(membership) => {
            state.lists.insert(list, membership);
        }
        None => {
            state.lists.remove(&list);
        }
    }
}
