//! One behaviour suite every `Store` implementation must pass. Each check gets a fresh, empty
//! store from the caller's factory.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use chrono::{Duration, Utc};
use futures_util::future::join_all;
use serde_json::json;
use uuid::Uuid;

use super::{Cursor, PageRequest, Read, Store, StoreError};
use crate::domain::{
    Attempt, CustomHeaders, DeliveryLog, DeliveryState, EventEnvelope, EventPattern, Gcra, NewWebhook, RateLimit,
    SecretToken, Webhook, WebhookId, WebhookName, WebhookUrl,
};
use crate::events::EventType;

pub(crate) fn webhook(name: &str, event_types: &[EventType]) -> Webhook {
    let new = NewWebhook {
        event_types: event_types.iter().copied().map(EventPattern::from).collect(),
        secret_token: Some(SecretToken::parse("s3cret").expect("test secret")),
        ..NewWebhook::new(
            WebhookName::parse(name).expect("test name"),
            WebhookUrl::parse("https://example.com/hook", false).expect("test url"),
        )
    };
    Webhook::new(new, Utc::now())
}

pub(crate) fn delivery(webhook_id: WebhookId, created_at: chrono::DateTime<Utc>) -> DeliveryLog {
    let envelope = EventEnvelope {
        event_id: Uuid::new_v4(),
        event_type: EventType::Ping,
        event: json!({"ping_id": Uuid::new_v4()}).into(),
        instance_id: Uuid::nil(),
        instance_name: "test".into(),
        created_at,
    };
    DeliveryLog::new(webhook_id, envelope, created_at, Duration::days(7))
}

/// Runs every check, each on a fresh store from `fresh`.
pub(crate) async fn run_all<F, Fut>(mut fresh: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    a_created_webhook_reads_back_whole(fresh().await.as_ref()).await;
    creating_the_same_id_twice_conflicts(fresh().await.as_ref()).await;
    an_update_moves_subscriptions_to_the_new_event_types(fresh().await.as_ref()).await;
    an_update_from_a_stale_version_conflicts(fresh().await.as_ref()).await;
    updating_or_deleting_a_missing_webhook_is_not_found(fresh().await.as_ref()).await;
    a_delete_removes_the_webhook_and_its_subscriptions(fresh().await.as_ref()).await;
    listing_pages_through_every_webhook_once(fresh().await.as_ref()).await;
    listing_by_event_type_pages_through_only_subscribers(fresh().await.as_ref()).await;
    a_foreign_cursor_is_refused(fresh().await.as_ref()).await;
    a_delivery_is_inserted_once_per_webhook_and_event(fresh().await.as_ref()).await;
    a_delivery_update_from_a_stale_version_conflicts(fresh().await.as_ref()).await;
    every_field_of_a_delivery_reads_back_after_an_update(fresh().await.as_ref()).await;
    entries_inserted_together_report_which_were_new(fresh().await.as_ref()).await;
    a_reused_event_id_keeps_each_entrys_own_payload(fresh().await.as_ref()).await;
    a_payload_reads_back_with_the_same_bytes(fresh().await.as_ref()).await;
    deliveries_list_newest_first_filtered_and_paginated(fresh().await.as_ref()).await;
    deliveries_since_returns_only_that_state_after_the_time(fresh().await.as_ref()).await;
    an_entry_past_retention_is_gone_before_any_purge(fresh().await.as_ref()).await;
    entries_load_by_their_key_one_at_a_time_and_together(fresh().await.as_ref()).await;
    a_run_of_failures_keeps_its_start_until_restarted_or_cleared(fresh().await.as_ref()).await;
    succeeded_since_sees_only_successes_from_that_time(fresh().await.as_ref()).await;
    rate_slots_are_reserved_one_interval_apart_and_start_again_after_a_quiet_spell(fresh().await.as_ref()).await;
    headers_and_a_rate_limit_read_back_and_an_update_replaces_or_removes_them(fresh().await.as_ref()).await;
    a_wildcard_subscription_is_stored_under_its_own_key(fresh().await.as_ref()).await;
    listing_by_type_includes_the_wildcard_subscribers_once_in_id_order(fresh().await.as_ref()).await;
}

async fn rate_slots_are_reserved_one_interval_apart_and_start_again_after_a_quiet_spell(store: &dyn Store) {
    let id = WebhookId::new();
    let limit = Gcra::of(4);
    let now = Utc::now();

    let mut booked = Vec::new();
    for _ in 0..3 {
        booked.push(store.reserve_rate_slot(id, limit, now).await.expect("reserve"));
    }
    let together = join_all((0..6).map(|_| store.reserve_rate_slot(id, limit, now))).await;
    let after_quiet = store.reserve_rate_slot(id, limit, now + Duration::seconds(10)).await.expect("reserve");
    let other = store.reserve_rate_slot(WebhookId::new(), limit, now).await.expect("reserve");

    assert_eq!(booked, [now, now + Duration::milliseconds(250), now + Duration::milliseconds(500)]);
    let mut together: Vec<_> = together.into_iter().map(|slot| slot.expect("reserve")).collect();
    together.sort();
    let expected: Vec<_> = (3..9).map(|k| now + Duration::milliseconds(250 * k)).collect();
    assert_eq!(together, expected, "concurrent reservations each get a slot of their own");
    assert_eq!(after_quiet, now + Duration::seconds(10), "a slot in the past is owed to no one");
    assert_eq!(other, now, "each webhook has its own limit");
}

async fn entries_load_by_their_key_one_at_a_time_and_together(store: &dyn Store) {
    let webhook_id = WebhookId::new();
    let stored = delivery(webhook_id, Utc::now() - Duration::minutes(3));
    let missing = delivery(webhook_id, Utc::now());
    assert!(store.insert_delivery(&stored).await.expect("insert"));

    let one = store.load_delivery(&stored.key(), Read::MaybeStale).await.expect("load");
    let none = store.load_delivery(&missing.key(), Read::Latest).await.expect("load missing");
    let both = store.load_deliveries(&[missing.key(), stored.key()]).await.expect("load both");

    assert_eq!(one.as_ref(), Some(&stored));
    assert_eq!(none, None);
    assert_eq!(both, vec![None, Some(stored)]);
}

async fn a_run_of_failures_keeps_its_start_until_restarted_or_cleared(store: &dyn Store) {
    let id = WebhookId::new();
    let start = Utc::now() - Duration::hours(1);
    let t = |minutes: i64| {
        let at = start + Duration::minutes(minutes);
        chrono::DateTime::from_timestamp_millis(at.timestamp_millis()).expect("time")
    };

    let first = store.note_failure(id, t(0)).await.expect("note");
    let second = store.note_failure(id, t(1)).await.expect("note again");
    store.restart_failures(id, t(2)).await.expect("restart");
    let restarted = store.note_failure(id, t(3)).await.expect("note after restart");
    store.clear_failures(id).await.expect("clear");
    let cleared = store.note_failure(id, t(4)).await.expect("note after clear");
    let other = store.note_failure(WebhookId::new(), t(5)).await.expect("another webhook");

    assert_eq!((first, second), (t(0), t(0)), "a run keeps the time it began");
    assert_eq!(restarted, t(2));
    assert_eq!(cleared, t(4));
    assert_eq!(other, t(5), "each webhook has its own run");
}

async fn succeeded_since_sees_only_successes_from_that_time(store: &dyn Store) {
    let webhook_id = WebhookId::new();
    let now = Utc::now();
    let mut old_success = delivery(webhook_id, now - Duration::hours(3));
    old_success.state = DeliveryState::Succeeded;
    old_success.updated_at = now - Duration::hours(2);
    let mut recent_failure = delivery(webhook_id, now - Duration::minutes(30));
    recent_failure.state = DeliveryState::Failed;
    recent_failure.updated_at = now - Duration::minutes(20);
    for entry in [&old_success, &recent_failure] {
        assert!(store.insert_delivery(entry).await.expect("insert"));
    }

    let since_hour = store.succeeded_since(webhook_id, now - Duration::hours(1)).await.expect("since an hour");
    let since_day = store.succeeded_since(webhook_id, now - Duration::days(1)).await.expect("since a day");
    let elsewhere = store.succeeded_since(WebhookId::new(), now - Duration::days(1)).await.expect("another");

    assert!(!since_hour, "the only success is older");
    assert!(since_day);
    assert!(!elsewhere);
}

async fn headers_and_a_rate_limit_read_back_and_an_update_replaces_or_removes_them(store: &dyn Store) {
    let mut hook = webhook("options", &[EventType::TaskCreated]);
    hook.headers = CustomHeaders::parse([("Authorization", "Bearer k1"), ("X-Tenant", "42")]).expect("headers");
    hook.rate_limit_per_second = Some(RateLimit::new(7).expect("limit"));
    store.create_webhook(&hook).await.expect("create");
    let created = store.get_webhook(hook.webhook_id).await.expect("get").expect("exists");

    hook.headers = CustomHeaders::parse([("X-Other", "v")]).expect("headers");
    hook.rate_limit_per_second = Some(RateLimit::new(10_000).expect("limit"));
    hook.version += 1;
    store.update_webhook(&hook).await.expect("replace");
    let replaced = store.get_webhook(hook.webhook_id).await.expect("get").expect("exists");

    hook.headers = None;
    hook.rate_limit_per_second = None;
    hook.version += 1;
    store.update_webhook(&hook).await.expect("remove");
    let removed = store.get_webhook(hook.webhook_id).await.expect("get").expect("exists");

    let names = |w: &Webhook| w.headers.as_ref().map(|h| h.names().join(",")).unwrap_or_default();
    let values = |w: &Webhook| {
        w.headers.as_ref().map(|h| h.expose().map(|(_, v)| v.to_owned()).collect::<Vec<_>>()).unwrap_or_default()
    };
    assert_eq!(names(&created), "Authorization,X-Tenant", "the order given is kept");
    assert_eq!(values(&created), ["Bearer k1", "42"]);
    assert_eq!(created.rate_limit_per_second.map(RateLimit::per_second), Some(7));
    assert_eq!(names(&replaced), "X-Other");
    assert_eq!(replaced.rate_limit_per_second.map(RateLimit::per_second), Some(10_000));
    assert_eq!(removed, hook);
    assert_eq!((removed.headers, removed.rate_limit_per_second), (None, None));
}

/// The stores key subscriptions by `pattern.as_str()`: `"*"` reads back as itself, beside
/// named types, and its items move and go with the webhook like any other.
async fn a_wildcard_subscription_is_stored_under_its_own_key(store: &dyn Store) {
    let mut everything = webhook("everything", &[]);
    everything.event_types = vec![EventPattern::All, EventType::DeliveryFailed.into()];
    let named = webhook("named", &[EventType::TaskCreated]);
    store.create_webhook(&everything).await.expect("create");
    store.create_webhook(&named).await.expect("create");

    let read = store.get_webhook(everything.webhook_id).await.expect("get").expect("exists");
    let by_task = store.subscribers(EventType::TaskCreated).await.expect("subs");
    let by_failed = store.subscribers(EventType::DeliveryFailed).await.expect("subs");
    let (all_listed, _) = collect_pages(store, None, 10).await;

    assert_eq!(read.event_types, [EventPattern::All, EventPattern::Type(EventType::DeliveryFailed)]);
    assert!(by_task.iter().any(|w| w.webhook_id == named.webhook_id));
    assert!(by_task.iter().any(|w| w.webhook_id == everything.webhook_id), "\"*\" reaches every OneFuzz type");
    assert_eq!(by_task.len(), 2, "each subscriber once");
    assert_eq!(by_failed.iter().map(|w| w.webhook_id).collect::<Vec<_>>(), [everything.webhook_id]);
    assert_eq!(all_listed.len(), 2);

    everything.event_types = vec![EventType::TaskCreated.into()];
    everything.version += 1;
    store.update_webhook(&everything).await.expect("update");
    assert!(store.subscribers(EventType::DeliveryFailed).await.expect("subs").is_empty());
    assert_eq!(store.subscribers(EventType::TaskCreated).await.expect("subs").len(), 2);
    store.delete_webhook(everything.webhook_id).await.expect("delete");
    assert_eq!(store.subscribers(EventType::TaskCreated).await.expect("subs").len(), 1);
}

async fn listing_by_type_includes_the_wildcard_subscribers_once_in_id_order(store: &dyn Store) {
    let mut expected = Vec::new();
    for i in 0..6 {
        let mut hook = webhook(&format!("hook-{i}"), &[]);
        hook.event_types = match i % 3 {
            0 => vec![EventType::TaskCreated.into()],
            1 => vec![EventPattern::All, EventType::TaskCreated.into(), EventType::DeliveryFailed.into()],
            _ => vec![EventType::Ping.into()],
        };
        store.create_webhook(&hook).await.expect("create");
        if i % 3 != 2 {
            expected.push(hook.webhook_id);
        }
    }
    expected.sort_by_key(|id| id.to_string());

    let (one_per_page, pages) = collect_pages(store, Some(EventType::TaskCreated), 1).await;
    let (at_once, _) = collect_pages(store, Some(EventType::TaskCreated), 10).await;
    let (operational, _) = collect_pages(store, Some(EventType::DeliveryFailed), 10).await;
    let (by_ping, _) = collect_pages(store, Some(EventType::Ping), 10).await;

    assert_eq!(one_per_page, expected, "page by page, each once, in id order");
    assert!(pages >= 4);
    assert_eq!(at_once, expected);
    assert_eq!(operational.len(), 2, "operational types only where named");
    assert_eq!(by_ping.len(), 4, "\"*\" lists under every OneFuzz type");
}

async fn an_entry_past_retention_is_gone_before_any_purge(store: &dyn Store) {
    let webhook_id = WebhookId::new();
    let mut expired = delivery(webhook_id, Utc::now() - Duration::days(8));
    expired.state = DeliveryState::Failed;
    let mut kept = delivery(webhook_id, Utc::now() - Duration::days(1));
    kept.state = DeliveryState::Failed;
    assert!(store.insert_delivery(&expired).await.expect("insert expired"));
    assert!(store.insert_delivery(&kept).await.expect("insert kept"));

    let got = store.get_delivery(webhook_id, expired.event_id).await.expect("get");
    let listed = store.list_deliveries(webhook_id, None, PageRequest { limit: 10, cursor: None }).await;
    let failed =
        store.list_deliveries(webhook_id, Some(DeliveryState::Failed), PageRequest { limit: 10, cursor: None });
    let since = store.deliveries_since(webhook_id, DeliveryState::Failed, Utc::now() - Duration::days(9)).await;

    assert_eq!(got, None);
    assert_eq!(listed.expect("list").items, vec![kept.clone()]);
    assert_eq!(failed.await.expect("list failed").items, vec![kept.clone()]);
    assert_eq!(since.expect("since"), vec![kept]);

    // The same event arriving again starts a new entry in its place.
    let again = DeliveryLog::new(webhook_id, expired.envelope.clone(), Utc::now(), Duration::days(7));
    assert!(store.insert_delivery(&again).await.expect("insert again"), "the expired entry counts as absent");
    assert_eq!(store.get_delivery(webhook_id, again.event_id).await.expect("get again"), Some(again.clone()));
    assert!(!store.insert_delivery(&again).await.expect("insert a third time"), "a live entry is kept");
}

async fn a_created_webhook_reads_back_whole(store: &dyn Store) {
    let mut created = webhook("a", &[EventType::TaskCreated]);
    created.message_format = Some(crate::domain::MessageFormat::CloudEvents);

    store.create_webhook(&created).await.expect("create");
    let read = store.get_webhook(created.webhook_id).await.expect("get");

    assert_eq!(read, Some(created));
    assert_eq!(store.get_webhook(WebhookId::new()).await.expect("get missing"), None);
}

async fn creating_the_same_id_twice_conflicts(store: &dyn Store) {
    let created = webhook("a", &[EventType::TaskCreated]);
    store.create_webhook(&created).await.expect("create");

    let again = store.create_webhook(&created).await;

    assert!(matches!(again, Err(StoreError::Conflict)), "{again:?}");
}

async fn an_update_moves_subscriptions_to_the_new_event_types(store: &dyn Store) {
    let mut hook = webhook("a", &[EventType::TaskCreated, EventType::TaskFailed]);
    store.create_webhook(&hook).await.expect("create");

    hook.event_types = vec![EventType::TaskFailed.into(), EventType::JobCreated.into()];
    hook.name = WebhookName::parse("renamed").expect("name");
    hook.version += 1;
    store.update_webhook(&hook).await.expect("update");

    assert!(store.subscribers(EventType::TaskCreated).await.expect("subs").is_empty());
    let failed = store.subscribers(EventType::TaskFailed).await.expect("subs");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].name.as_str(), "renamed");
    assert_eq!(store.subscribers(EventType::JobCreated).await.expect("subs").len(), 1);
    assert_eq!(store.get_webhook(hook.webhook_id).await.expect("get"), Some(hook));
}

async fn an_update_from_a_stale_version_conflicts(store: &dyn Store) {
    let hook = webhook("a", &[EventType::TaskCreated]);
    store.create_webhook(&hook).await.expect("create");
    let mut first = hook.clone();
    first.version = 1;
    first.event_types = vec![EventType::JobCreated.into()];
    store.update_webhook(&first).await.expect("first update");

    let mut stale = hook.clone();
    stale.version = 1;
    stale.event_types = vec![EventType::NodeCreated.into()];
    let result = store.update_webhook(&stale).await;

    assert!(matches!(result, Err(StoreError::Conflict)), "{result:?}");
    assert!(store.subscribers(EventType::NodeCreated).await.expect("subs").is_empty());
    assert_eq!(store.subscribers(EventType::JobCreated).await.expect("subs").len(), 1);
}

async fn updating_or_deleting_a_missing_webhook_is_not_found(store: &dyn Store) {
    let mut ghost = webhook("ghost", &[EventType::TaskCreated]);
    ghost.version = 1;

    let updated = store.update_webhook(&ghost).await;
    let deleted = store.delete_webhook(ghost.webhook_id).await;

    assert!(matches!(updated, Err(StoreError::NotFound)), "{updated:?}");
    assert!(matches!(deleted, Err(StoreError::NotFound)), "{deleted:?}");
    assert!(store.subscribers(EventType::TaskCreated).await.expect("subs").is_empty());
}

async fn a_delete_removes_the_webhook_and_its_subscriptions(store: &dyn Store) {
    let gone = webhook("gone", &[EventType::TaskCreated, EventType::Ping]);
    let kept = webhook("kept", &[EventType::TaskCreated]);
    store.create_webhook(&gone).await.expect("create");
    store.create_webhook(&kept).await.expect("create");

    store.delete_webhook(gone.webhook_id).await.expect("delete");

    assert_eq!(store.get_webhook(gone.webhook_id).await.expect("get"), None);
    let subs = store.subscribers(EventType::TaskCreated).await.expect("subs");
    assert_eq!(subs.iter().map(|w| w.webhook_id).collect::<Vec<_>>(), vec![kept.webhook_id]);
    assert!(store.subscribers(EventType::Ping).await.expect("subs").is_empty());
}

async fn collect_pages(store: &dyn Store, event_type: Option<EventType>, limit: usize) -> (Vec<WebhookId>, usize) {
    let mut ids = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<Cursor> = None;
    loop {
        let page = store.list_webhooks(event_type, PageRequest { limit, cursor: cursor.take() }).await.expect("list");
        pages += 1;
        assert!(page.items.len() <= limit, "a page holds at most the limit");
        ids.extend(page.items.iter().map(|w| w.webhook_id));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages < 100, "pagination does not end");
    }
    (ids, pages)
}

async fn listing_pages_through_every_webhook_once(store: &dyn Store) {
    let mut created = HashSet::new();
    for i in 0..5 {
        let hook = webhook(&format!("hook-{i}"), &[]);
        created.insert(hook.webhook_id);
        store.create_webhook(&hook).await.expect("create");
    }

    let (ids, pages) = collect_pages(store, None, 2).await;
    let (all_at_once, one_page) = collect_pages(store, None, 10).await;

    assert_eq!(ids.len(), 5, "no webhook twice");
    assert_eq!(ids.iter().copied().collect::<HashSet<_>>(), created);
    assert_eq!(pages, 3);
    assert_eq!(one_page, 1);
    assert_eq!(all_at_once, ids, "the order is stable");
}

async fn listing_by_event_type_pages_through_only_subscribers(store: &dyn Store) {
    let mut subscribed = HashSet::new();
    for i in 0..7 {
        let types: &[EventType] =
            if i % 2 == 0 { &[EventType::CrashReported, EventType::Ping] } else { &[EventType::Ping] };
        let hook = webhook(&format!("hook-{i}"), types);
        if i % 2 == 0 {
            subscribed.insert(hook.webhook_id);
        }
        store.create_webhook(&hook).await.expect("create");
    }

    let (ids, pages) = collect_pages(store, Some(EventType::CrashReported), 3).await;
    let fanout = store.subscribers(EventType::CrashReported).await.expect("subs");

    assert_eq!(ids.len(), 4);
    assert_eq!(ids.into_iter().collect::<HashSet<_>>(), subscribed);
    assert_eq!(pages, 2);
    assert_eq!(fanout.into_iter().map(|w| w.webhook_id).collect::<HashSet<_>>(), subscribed);
}

async fn a_foreign_cursor_is_refused(store: &dyn Store) {
    let bad = PageRequest { limit: 10, cursor: Some(Cursor::from_client("not-a-cursor!")) };

    let result = store.list_webhooks(None, bad.clone()).await;
    let logs = store.list_deliveries(WebhookId::new(), None, bad).await;

    assert!(matches!(result, Err(StoreError::BadCursor)), "{result:?}");
    assert!(matches!(logs, Err(StoreError::BadCursor)), "{logs:?}");
}

async fn a_delivery_is_inserted_once_per_webhook_and_event(store: &dyn Store) {
    let entry = delivery(WebhookId::new(), Utc::now());
    let mut other_webhook = entry.clone();
    other_webhook.webhook_id = WebhookId::new();

    let first = store.insert_delivery(&entry).await.expect("insert");
    let second = store.insert_delivery(&entry).await.expect("insert again");
    let other = store.insert_delivery(&other_webhook).await.expect("insert other");

    assert!(first);
    assert!(!second);
    assert!(other, "the same event for another webhook is its own delivery");
    assert_eq!(store.get_delivery(entry.webhook_id, entry.event_id).await.expect("get"), Some(entry));
}

async fn a_delivery_update_from_a_stale_version_conflicts(store: &dyn Store) {
    let entry = delivery(WebhookId::new(), Utc::now());
    store.insert_delivery(&entry).await.expect("insert");
    let mut succeeded = entry.clone();
    succeeded.version = 1;
    succeeded.state = DeliveryState::Succeeded;
    succeeded.try_count = 1;
    succeeded.attempts.push(Attempt {
        attempt: 1,
        at: Utc::now(),
        status_code: Some(200),
        error: None,
        duration_ms: 12,
        response_head: Some("ok".into()),
    });
    store.update_delivery(&succeeded).await.expect("update");

    let mut stale = entry.clone();
    stale.version = 1;
    stale.state = DeliveryState::Failed;
    let result = store.update_delivery(&stale).await;

    assert!(matches!(result, Err(StoreError::Conflict)), "{result:?}");
    assert_eq!(store.get_delivery(entry.webhook_id, entry.event_id).await.expect("get"), Some(succeeded));
}

async fn every_field_of_a_delivery_reads_back_after_an_update(store: &dyn Store) {
    let mut entry = delivery(WebhookId::new(), Utc::now());
    entry.envelope.event =
        json!({"task": {"nested": [1, 2.5, "three", null, {"deep": true}]}, "text": "ü ✓ \"q\""}).into();
    entry.envelope.instance_name = "instance-ß".into();
    let mut same_event_other_webhook = entry.clone();
    same_event_other_webhook.webhook_id = WebhookId::new();
    store.insert_delivery(&entry).await.expect("insert");
    store.insert_delivery(&same_event_other_webhook).await.expect("insert other");

    let mut retrying = entry.clone();
    retrying.version = 1;
    retrying.state = DeliveryState::Retrying;
    retrying.try_count = 1;
    retrying.updated_at = entry.updated_at + Duration::seconds(1);
    retrying.next_attempt_at = Some(entry.created_at + Duration::minutes(5));
    retrying.lease_until = Some(entry.created_at + Duration::seconds(30));
    retrying.retry_scheduled = true;
    retrying.attempts.push(Attempt {
        attempt: 1,
        at: Utc::now(),
        status_code: None,
        error: Some("connection refused".into()),
        duration_ms: 3,
        response_head: None,
    });
    store.update_delivery(&retrying).await.expect("update");

    assert_eq!(store.get_delivery(entry.webhook_id, entry.event_id).await.expect("get"), Some(retrying.clone()));
    let other = store.get_delivery(same_event_other_webhook.webhook_id, entry.event_id).await.expect("get other");
    assert_eq!(other, Some(same_event_other_webhook));
    let listed = store.list_deliveries(entry.webhook_id, None, PageRequest { limit: 10, cursor: None }).await;
    assert_eq!(listed.expect("list").items, vec![retrying]);
}

async fn entries_inserted_together_report_which_were_new(store: &dyn Store) {
    let existing = delivery(WebhookId::new(), Utc::now());
    store.insert_delivery(&existing).await.expect("insert");
    let mut already_there = existing.clone();
    already_there.state = DeliveryState::Failed;
    let mut same_event = existing.clone();
    same_event.webhook_id = WebhookId::new();
    let other_event = delivery(WebhookId::new(), Utc::now());

    let inserted = store
        .insert_deliveries(&[already_there, same_event.clone(), other_event.clone()])
        .await
        .expect("insert together");

    assert_eq!(inserted, vec![false, true, true]);
    for entry in [&existing, &same_event, &other_event] {
        let read = store.get_delivery(entry.webhook_id, entry.event_id).await.expect("get");
        assert_eq!(read.as_ref(), Some(entry), "the first write of an entry wins");
    }
    assert_eq!(store.insert_deliveries(&[]).await.expect("nothing to insert"), Vec::<bool>::new());
}

async fn a_reused_event_id_keeps_each_entrys_own_payload(store: &dyn Store) {
    // Producers choose event ids; two different events may share one.
    let first = delivery(WebhookId::new(), Utc::now());
    let mut second = first.clone();
    second.webhook_id = WebhookId::new();
    second.envelope.event = json!({"ping_id": Uuid::new_v4(), "other": "event"}).into();
    let mut third = second.clone();
    third.webhook_id = WebhookId::new();
    store.insert_delivery(&first).await.expect("insert first");
    store.insert_deliveries(&[second.clone(), third.clone()]).await.expect("insert the others");
    let mut second_retried = second.clone();
    second_retried.version = 1;
    second_retried.state = DeliveryState::Retrying;
    store.update_delivery(&second_retried).await.expect("update");

    for entry in [&first, &second_retried, &third] {
        let read = store.get_delivery(entry.webhook_id, entry.event_id).await.expect("get");
        assert_eq!(read.as_ref(), Some(entry));
    }
}

async fn a_payload_reads_back_with_the_same_bytes(store: &dyn Store) {
    // A retry sends the stored payload: it must serialise exactly as the first attempt did.
    let mut entry = delivery(WebhookId::new(), Utc::now());
    let text = r#"{"float":1.0,"tiny":-1.5e-7,"big":18446744073709551615,"zero":0.0,"text":"1.0","list":[2.50,{}]}"#;
    entry.envelope.event = serde_json::from_str(text).expect("payload");
    store.insert_delivery(&entry).await.expect("insert");
    let mut updated = entry.clone();
    updated.version = 1;
    store.update_delivery(&updated).await.expect("update");

    let read = store.get_delivery(entry.webhook_id, entry.event_id).await.expect("get").expect("present");
    let listed = store.list_deliveries(entry.webhook_id, None, PageRequest { limit: 1, cursor: None }).await;

    let expected = serde_json::to_string(&entry.envelope.event).expect("encode");
    assert_eq!(serde_json::to_string(&read.envelope.event).expect("encode"), expected);
    let listed = listed.expect("list").items.pop().expect("listed");
    assert_eq!(serde_json::to_string(&listed.envelope.event).expect("encode"), expected);
}

async fn deliveries_list_newest_first_filtered_and_paginated(store: &dyn Store) {
    let webhook_id = WebhookId::new();
    let start = Utc::now() - Duration::hours(1);
    let mut entries = Vec::new();
    for i in 0..5 {
        let mut entry = delivery(webhook_id, start + Duration::minutes(i));
        if i % 2 == 1 {
            entry.state = DeliveryState::Failed;
        }
        store.insert_delivery(&entry).await.expect("insert");
        entries.push(entry);
    }
    store.insert_delivery(&delivery(WebhookId::new(), start)).await.expect("other webhook");

    let first = store.list_deliveries(webhook_id, None, PageRequest { limit: 3, cursor: None }).await.expect("page 1");
    let second = store
        .list_deliveries(webhook_id, None, PageRequest { limit: 3, cursor: first.next.clone() })
        .await
        .expect("page 2");
    let failed = store
        .list_deliveries(webhook_id, Some(DeliveryState::Failed), PageRequest { limit: 1, cursor: None })
        .await
        .expect("failed");
    let failed_rest = store
        .list_deliveries(webhook_id, Some(DeliveryState::Failed), PageRequest { limit: 5, cursor: failed.next.clone() })
        .await
        .expect("failed rest");

    let newest_first: Vec<Uuid> = entries.iter().rev().map(|e| e.event_id).collect();
    let listed: Vec<Uuid> = first.items.iter().chain(&second.items).map(|e| e.event_id).collect();
    assert_eq!(listed, newest_first);
    assert!(second.next.is_none());
    assert_eq!(failed.items.len(), 1);
    assert_eq!(failed.items[0].event_id, entries[3].event_id);
    assert_eq!(failed_rest.items.iter().map(|e| e.event_id).collect::<Vec<_>>(), vec![entries[1].event_id]);
    assert!(failed_rest.next.is_none());
}

async fn deliveries_since_returns_only_that_state_after_the_time(store: &dyn Store) {
    let webhook_id = WebhookId::new();
    let start = Utc::now() - Duration::hours(3);
    let mut old_failed = delivery(webhook_id, start);
    old_failed.state = DeliveryState::Failed;
    let mut new_failed = delivery(webhook_id, start + Duration::hours(2));
    new_failed.state = DeliveryState::Failed;
    let new_ok = delivery(webhook_id, start + Duration::hours(2));
    for entry in [&old_failed, &new_failed, &new_ok] {
        store.insert_delivery(entry).await.expect("insert");
    }

    let found =
        store.deliveries_since(webhook_id, DeliveryState::Failed, start + Duration::hours(1)).await.expect("since");

    assert_eq!(found.iter().map(|e| e.event_id).collect::<Vec<_>>(), vec![new_failed.event_id]);
}
