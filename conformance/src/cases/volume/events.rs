//! Volume cases: ListEvents: what a volume's events carry and how they filter.

use anyhow::ensure;
use iri_spec::volume::v1alpha1::{self as v};

use crate::case::{Case, pass};

use super::rpc::*;

pub(super) fn cases(v: &mut Vec<Case>) {
    // ------------------------------------------------------------ events
    case!(
        v,
        "volume.events.listed",
        "creating a volume produces at least one event about it",
        |ctx| {
            let id = ctx.new_volume().await?;
            wait_events_of(&ctx, &id).await?;
            pass()
        }
    );
    case!(
        v,
        "volume.events.time_in_seconds",
        "volume event_time is in Unix seconds",
        |ctx| {
            let id = ctx.new_volume().await?;
            let now = crate::ctx::unix_secs();
            for e in wait_events_of(&ctx, &id).await? {
                let t = e.spec.as_ref().map_or(0, |s| s.event_time);
                ensure!(
                    (now - 600..=now + 600).contains(&t),
                    "event_time {t} is not now in Unix seconds"
                );
            }
            pass()
        }
    );
    case!(
        v,
        "volume.events.involved_labels",
        "volume events carry the volume's labels in involved_object_meta",
        |ctx| {
            let (id, vol) = ctx.create_volume(ctx.volume_spec(&[("evt", "v")])?).await?;
            let want = vol.metadata.map(|m| m.labels).unwrap_or_default();
            for e in wait_events_of(&ctx, &id).await? {
                let got = e
                    .spec
                    .and_then(|s| s.involved_object_meta)
                    .map(|m| m.labels)
                    .unwrap_or_default();
                ensure!(got == want, "event labels {got:?} != {want:?}");
            }
            pass()
        }
    );
    case!(
        v,
        "volume.events.label_filter",
        "volume ListEvents with a label selector returns only events of matching volumes",
        |ctx| {
            let a = ctx
                .create_volume(ctx.volume_spec(&[("which", "a")])?)
                .await?
                .0;
            let _b = ctx
                .create_volume(ctx.volume_spec(&[("which", "b")])?)
                .await?
                .0;
            wait_events_of(&ctx, &a).await?;
            let mut sel = ctx.case_selector();
            sel.insert("which".into(), "a".into());
            let evs = events(
                &ctx,
                v::EventFilter {
                    label_selector: sel,
                    ..Default::default()
                },
            )
            .await?;
            ensure!(!evs.is_empty(), "no events for which=a");
            for e in evs {
                let id = e
                    .spec
                    .and_then(|s| s.involved_object_meta)
                    .map(|m| m.id)
                    .unwrap_or_default();
                ensure!(id == a, "event about {id} for selector which=a");
            }
            pass()
        }
    );
    case!(
        v,
        "volume.events.time_window",
        "volume ListEvents with both bounds > 0 honours the window",
        |ctx| {
            let id = ctx.new_volume().await?;
            wait_events_of(&ctx, &id).await?;
            let evs = events(
                &ctx,
                v::EventFilter {
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
            pass()
        }
    );
}
