//! Machine cases: ListEvents: what a machine's events carry and how they filter.

use anyhow::{Context as _, ensure};
use iri_spec::machine::v1alpha1::{self as m};

use crate::case::{Case, pass};

use super::rpc::*;

pub(super) fn cases(v: &mut Vec<Case>) {
    // ------------------------------------------------------------ events
    case!(
        v,
        "machine.events.listed",
        "creating a machine produces at least one event about it",
        |ctx| {
            let id = ctx.new_machine().await?;
            wait_events_of(&ctx, &id).await?;
            pass()
        }
    );
    case!(
        v,
        "machine.events.complete",
        "every event has spec and involved_object_meta with the object's id",
        |ctx| {
            let id = ctx.new_machine().await?;
            for e in wait_events_of(&ctx, &id).await? {
                let s = e.spec.as_ref().context("event without spec")?;
                let md = s
                    .involved_object_meta
                    .as_ref()
                    .context("event without involved_object_meta")?;
                ensure!(!md.id.is_empty(), "involved_object_meta has no id");
                ensure!(
                    !s.reason.is_empty() || !s.message.is_empty(),
                    "event has neither reason nor message"
                );
            }
            pass()
        }
    );
    case!(
        v,
        "machine.events.time_in_seconds",
        "event_time is in Unix seconds",
        |ctx| {
            let id = ctx.new_machine().await?;
            let now = crate::ctx::unix_secs();
            for e in wait_events_of(&ctx, &id).await? {
                let t = e.spec.as_ref().map_or(0, |s| s.event_time);
                ensure!(
                    (now - 600..=now + 600).contains(&t),
                    "event_time {t} is not within 10 min of now in Unix seconds ({now})"
                );
            }
            pass()
        }
    );
    case!(
        v,
        "machine.events.involved_labels",
        "involved_object_meta carries the machine's labels",
        |ctx| {
            let spec = ctx.machine_spec(&[("evt", "yes")])?;
            let want = spec
                .metadata
                .as_ref()
                .map(|md| md.labels.clone())
                .unwrap_or_default();
            let (id, _) = ctx.create_machine(spec).await?;
            for e in wait_events_of(&ctx, &id).await? {
                let got = e
                    .spec
                    .as_ref()
                    .and_then(|s| s.involved_object_meta.as_ref())
                    .map(|md| md.labels.clone())
                    .unwrap_or_default();
                ensure!(
                    got == want,
                    "event labels {got:?} != machine labels {want:?}"
                );
            }
            pass()
        }
    );
    case!(
        v,
        "machine.events.action_set",
        "every event has a non-empty action",
        |ctx| {
            let id = ctx.new_machine().await?;
            for e in wait_events_of(&ctx, &id).await? {
                let s = e.spec.as_ref().context("event without spec")?;
                ensure!(
                    !s.action.is_empty(),
                    "event {:?} has an empty action",
                    s.reason
                );
            }
            pass()
        }
    );
    case!(
        v,
        "machine.events.id_filter",
        "ListEvents with an id filter returns only events about that object",
        |ctx| {
            let a = ctx.new_machine().await?;
            let _b = ctx.new_machine().await?;
            wait_events_of(&ctx, &a).await?;
            let evs = events(
                &ctx,
                m::EventFilter {
                    id: a.clone(),
                    ..Default::default()
                },
            )
            .await?;
            for e in evs {
                let id = e
                    .spec
                    .and_then(|s| s.involved_object_meta)
                    .map(|md| md.id)
                    .unwrap_or_default();
                ensure!(id == a, "event about {id} returned for id filter {a}");
            }
            pass()
        }
    );
    case!(
        v,
        "machine.events.label_filter",
        "ListEvents with a label selector returns only events of matching objects",
        |ctx| {
            let a = ctx
                .create_machine(ctx.machine_spec(&[("which", "a")])?)
                .await?
                .0;
            let _b = ctx
                .create_machine(ctx.machine_spec(&[("which", "b")])?)
                .await?
                .0;
            wait_events_of(&ctx, &a).await?;
            let mut sel = ctx.case_selector();
            sel.insert("which".into(), "a".into());
            let evs = events(
                &ctx,
                m::EventFilter {
                    label_selector: sel,
                    ..Default::default()
                },
            )
            .await?;
            ensure!(!evs.is_empty(), "no events for selector which=a");
            for e in evs {
                let id = e
                    .spec
                    .and_then(|s| s.involved_object_meta)
                    .map(|md| md.id)
                    .unwrap_or_default();
                ensure!(
                    id == a,
                    "event about {id} returned for selector which=a (machine {a})"
                );
            }
            pass()
        }
    );
    case!(
        v,
        "machine.events.time_window",
        "ListEvents with both time bounds > 0 returns only events inside the window",
        |ctx| {
            let id = ctx.new_machine().await?;
            wait_events_of(&ctx, &id).await?;
            let evs = events(
                &ctx,
                m::EventFilter {
                    id: id.clone(),
                    events_from_time: 1,
                    events_to_time: 1000,
                    ..Default::default()
                },
            )
            .await?;
            ensure!(
                evs.is_empty(),
                "a window in 1970 returned {} events",
                evs.len()
            );
            let now = crate::ctx::unix_secs();
            let evs = events(
                &ctx,
                m::EventFilter {
                    id,
                    events_from_time: now - 600,
                    events_to_time: now + 600,
                    ..Default::default()
                },
            )
            .await?;
            ensure!(!evs.is_empty(), "a window around now returned no events");
            pass()
        }
    );
}
