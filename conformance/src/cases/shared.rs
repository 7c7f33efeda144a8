//! What the case bodies of several services share: the error-code case shape the
//! `code_cases!` rows expand to, the list, delete and event checks written once over the
//! object kind ([`Template`], [`Events`]), and waiting for the events about one object.

use std::{collections::HashMap, fmt::Debug, time::Duration};

use anyhow::{Context as _, bail, ensure};
use iri_spec::{
    bucket::v1alpha1 as bucket, event::v1alpha1::Event, kind::IriKind,
    machine::v1alpha1 as machine, volume::v1alpha1 as volume,
};
use tonic::{Code, Status};

use crate::{
    case::{Case, Profile, Service, gone_at_once, pass},
    ctx::{
        Ctx, RuntimeKind, expect_code, expect_error, expect_ok, meta_id, plausible_ns, unknown_id,
    },
    report::RuntimeVersion,
};

/// A case of the shape most error-code cases share: `call` runs the RPC and its raw result
/// must be the status `code` (`what` names the call in the failure).
pub(crate) fn code_case<F, Fut, T>(
    service: Service,
    id: &'static str,
    description: &'static str,
    code: Code,
    what: &'static str,
    call: F,
) -> Case
where
    F: Fn(Ctx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<Result<T, Status>>> + Send + 'static,
    T: Debug,
{
    Case::new(id, service, Profile::Core, description, move |ctx| {
        let res = call(ctx);
        async move {
            expect_code(res.await?, code, what)?;
            pass()
        }
    })
}

/// The events about `kind` object `id` that `list` (the service's ListEvents filtered by that
/// id) returns, waiting until at least one names the object.
pub(crate) async fn wait_events_about<F, Fut>(
    ctx: &Ctx,
    kind: &str,
    id: &str,
    list: F,
) -> anyhow::Result<Vec<Event>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<Vec<Event>>>,
{
    ctx.wait_until(&format!("an event about {kind} {id}"), || async {
        let about: Vec<_> = list()
            .await?
            .into_iter()
            .filter(|e| {
                e.spec
                    .as_ref()
                    .and_then(|s| s.involved_object_meta.as_ref())
                    .is_some_and(|md| md.id == id)
            })
            .collect();
        Ok(if about.is_empty() {
            Err("no events".to_owned())
        } else {
            Ok(about)
        })
    })
    .await
}

/// The Version answer of `service`'s runtime to a request with `version`, which must succeed.
pub(crate) async fn version(
    ctx: &Ctx,
    service: Service,
    version: &str,
) -> anyhow::Result<RuntimeVersion> {
    let version = version.to_owned();
    let pair = |name, version| RuntimeVersion { name, version };
    let res = match service {
        Service::Machine => {
            let mut c = ctx.mc()?;
            let r = ctx.rpc(c.version(machine::VersionRequest { version }));
            r.await.map(|r| pair(r.runtime_name, r.runtime_version))
        }
        Service::Volume => {
            let mut c = ctx.vc()?;
            let r = ctx.rpc(c.version(volume::VersionRequest { version }));
            r.await.map(|r| pair(r.runtime_name, r.runtime_version))
        }
        Service::Bucket => {
            let mut c = ctx.bc()?;
            let r = ctx.rpc(c.version(bucket::VersionRequest { version }));
            r.await.map(|r| pair(r.runtime_name, r.runtime_version))
        }
    };
    expect_ok(res, "Version")
}

/// `service`'s Version answers a non-empty runtime_name and runtime_version.
pub(crate) async fn version_set(ctx: &Ctx, service: Service) -> anyhow::Result<()> {
    let r = version(ctx, service, "").await?;
    ensure!(
        !r.name.is_empty() && !r.version.is_empty(),
        "empty Version answer: {r:?}"
    );
    Ok(())
}

/// A kind the cases create from the run's valid template (class, size, run labels).
pub(crate) trait Template: RuntimeKind {
    /// The valid template with the run labels and `extra` labels.
    fn template(ctx: &Ctx, extra: &[(&str, &str)]) -> anyhow::Result<Self>;
    /// Sets the class of a spec.
    fn set_class(spec: &mut Self::Spec, class: &str);
}

impl Template for machine::Machine {
    fn template(ctx: &Ctx, extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        ctx.machine_spec(extra)
    }
    fn set_class(spec: &mut Self::Spec, class: &str) {
        class.clone_into(&mut spec.class);
    }
}

impl Template for volume::Volume {
    fn template(ctx: &Ctx, extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        ctx.volume_spec(extra)
    }
    fn set_class(spec: &mut Self::Spec, class: &str) {
        class.clone_into(&mut spec.class);
    }
}

impl Template for bucket::Bucket {
    fn template(ctx: &Ctx, extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        ctx.bucket_spec(extra)
    }
    fn set_class(spec: &mut Self::Spec, class: &str) {
        class.clone_into(&mut spec.class);
    }
}

/// A class no runtime offers.
pub(crate) const NO_SUCH_CLASS: &str = "conformance-no-such-class";

/// The valid `K` template (run labels) with `change` applied to its spec.
pub(crate) fn with_spec<K: Template>(
    ctx: &Ctx,
    change: impl FnOnce(&mut K::Spec),
) -> anyhow::Result<K> {
    let mut obj = K::template(ctx, &[])?;
    change(obj.spec_mut().as_mut().context("template has spec")?);
    Ok(obj)
}

/// The valid `K` template with a class no runtime offers.
pub(crate) fn with_unknown_class<K: Template>(ctx: &Ctx) -> anyhow::Result<K> {
    with_spec(ctx, |s| K::set_class(s, NO_SUCH_CLASS))
}

/// The create RPC of `K` with a class no runtime offers fails (any code).
pub(crate) async fn unknown_class_fails<K: Template>(ctx: &Ctx) -> anyhow::Result<()> {
    let res = ctx.try_create(with_unknown_class::<K>(ctx)?).await;
    expect_error(res, &format!("{} with an unknown class", K::CREATE))?;
    Ok(())
}

/// Creates a `K` from the template with `extra` labels; its id.
pub(crate) async fn new<K: Template>(ctx: &Ctx, extra: &[(&str, &str)]) -> anyhow::Result<String> {
    Ok(ctx.create(K::template(ctx, extra)?).await?.0)
}

/// Creates a `K` from the template with `extra` labels; its id and the labels it was sent
/// with (the run labels and `extra`).
pub(crate) async fn labelled<K: Template>(
    ctx: &Ctx,
    extra: &[(&str, &str)],
) -> anyhow::Result<(String, HashMap<String, String>)> {
    Ok((new::<K>(ctx, extra).await?, ctx.labels(extra)))
}

/// A new `K` is listed with a metadata.created_at within 10 minutes of now in Unix nanoseconds.
pub(crate) async fn created_at_now<K: Template>(ctx: &Ctx) -> anyhow::Result<()> {
    let id = new::<K>(ctx, &[]).await?;
    let listed = ctx.get::<K>(&id).await?;
    let obj =
        listed.with_context(|| format!("{} {id} is not listed by {} by id", K::NAME, K::LIST))?;
    let t = obj.metadata().context("no metadata")?.created_at;
    ensure!(
        plausible_ns(t, Duration::from_secs(600)),
        "created_at {t} is not within 10 min of now in Unix ns"
    );
    Ok(())
}

/// The ids of listed objects (one without metadata has none).
pub(crate) fn ids_of<K: IriKind>(list: &[K]) -> Vec<String> {
    list.iter()
        .filter_map(|x| x.metadata().map(|md| md.id.clone()))
        .collect()
}

/// The list RPC of `K` by id `id` returns exactly that object.
pub(crate) async fn listed_alone_by_id<K: RuntimeKind>(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let res = ctx.list::<K>(Some(K::filter(id, HashMap::new()))).await;
    let ids = ids_of(&expect_ok(res, &format!("{} by id", K::LIST))?);
    ensure!(ids == [id], "{} by id {id} returned {ids:?}", K::LIST);
    Ok(())
}

/// Of two new `K`, the list RPC by the first one's id returns exactly that one.
pub(crate) async fn list_by_id<K: Template>(ctx: &Ctx) -> anyhow::Result<()> {
    let a = new::<K>(ctx, &[]).await?;
    new::<K>(ctx, &[]).await?;
    listed_alone_by_id::<K>(ctx, &a).await
}

/// Of a new `K` labelled `want` and one labelled `other`, the list RPC by the case's labels
/// and `want` returns exactly the first.
pub(crate) async fn list_by_label<K: Template>(
    ctx: &Ctx,
    want: &[(&str, &str)],
    other: &[(&str, &str)],
) -> anyhow::Result<()> {
    let a = new::<K>(ctx, want).await?;
    new::<K>(ctx, other).await?;
    let mut sel = ctx.case_selector();
    sel.extend(want.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let ids = ids_of(&ctx.list_by_labels::<K>(sel).await?);
    ensure!(
        ids == [a.clone()],
        "selector {want:?} returned {ids:?}, want [{a}]"
    );
    Ok(())
}

/// With a new `K` about, the list RPC by the case's labels and a label it does not carry
/// returns nothing.
pub(crate) async fn list_no_match_empty<K: Template>(ctx: &Ctx) -> anyhow::Result<()> {
    new::<K>(ctx, &[]).await?;
    let mut sel = ctx.case_selector();
    sel.insert("conformance.example/none".into(), "x".into());
    let ids = ids_of(&ctx.list_by_labels::<K>(sel).await?);
    ensure!(ids.is_empty(), "a non-matching selector returned {ids:?}");
    Ok(())
}

/// The list RPC of `K` by an unknown id returns an empty list, not an error.
pub(crate) async fn list_unknown_id_empty<K: RuntimeKind>(ctx: &Ctx) -> anyhow::Result<()> {
    let res = ctx
        .list::<K>(Some(K::filter(&unknown_id(), HashMap::new())))
        .await;
    let ids = ids_of(&expect_ok(res, &format!("{} unknown id", K::LIST))?);
    ensure!(ids.is_empty(), "{} by unknown id returned {ids:?}", K::LIST);
    Ok(())
}

/// A new `K`, listed by the case's labels with metadata (an id), spec and status; the list.
pub(crate) async fn list_items_complete<K: Template>(ctx: &Ctx) -> anyhow::Result<Vec<K>> {
    new::<K>(ctx, &[]).await?;
    let list = ctx.list_by_labels::<K>(ctx.case_selector()).await?;
    ensure!(
        !list.is_empty(),
        "the {} is not listed by its labels",
        K::NAME
    );
    for x in &list {
        meta_id(x.metadata(), &format!("listed {}", K::NAME))?;
        ensure!(
            x.spec().is_some() && x.status().is_some(),
            "listed {} lacks spec or status: {x:?}",
            K::NAME
        );
    }
    Ok(list)
}

/// The create RPC of `K` without the object returns InvalidArgument (`what` names the call); an
/// object it creates all the same is deleted.
pub(crate) async fn create_none_rejected<K: RuntimeKind>(
    ctx: &Ctx,
    what: &str,
) -> anyhow::Result<()> {
    let res = ctx.try_create_none::<K>().await;
    if let Ok(obj) = &res
        && !obj.id().is_empty()
    {
        let _ = ctx.delete::<K>(obj.id()).await;
    }
    expect_code(res, Code::InvalidArgument, what)
}

/// The delete RPC of `K` for `id`, which must succeed; the object as listed right after, or a
/// skip when it was gone at once (so `what` is not observable).
pub(crate) async fn deleted<K: RuntimeKind>(ctx: &Ctx, id: &str, what: &str) -> anyhow::Result<K> {
    expect_ok(ctx.delete::<K>(id).await, K::DELETE)?;
    let listed = ctx.get::<K>(id).await?;
    listed.ok_or_else(|| gone_at_once(K::NAME, what).into())
}

/// Polls until `K` `id` is no longer listed.
pub(crate) async fn wait_gone<K: RuntimeKind>(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let what = format!("to be gone after {}", K::DELETE);
    ctx.wait::<K>(id, &what, |x| x.is_none()).await?;
    Ok(())
}

/// The delete RPC of `K` for `id`, which must succeed, then polls until it is gone.
pub(crate) async fn delete_until_gone<K: RuntimeKind>(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    expect_ok(ctx.delete::<K>(id).await, K::DELETE)?;
    wait_gone::<K>(ctx, id).await
}

/// Once `K` `id` is gone after a delete, another delete returns NotFound.
pub(crate) async fn delete_not_found_after_gone<K: RuntimeKind>(
    ctx: &Ctx,
    id: &str,
) -> anyhow::Result<()> {
    delete_until_gone::<K>(ctx, id).await?;
    let what = format!("{} after gone", K::DELETE);
    expect_code(ctx.delete::<K>(id).await, Code::NotFound, &what)
}

/// Repeated delete RPCs of `K` `id` return OK, or NotFound only once it is gone (never the
/// first); it ends up gone.
pub(crate) async fn delete_repeatedly<K: RuntimeKind>(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let rpc = K::DELETE;
    for i in 0..ctx.params().idempotent_count {
        match ctx.delete::<K>(id).await {
            Ok(()) => {}
            Err(st) if st.code() == Code::NotFound => {
                ensure!(i > 0, "first {rpc} returned NotFound");
                ensure!(
                    ctx.get::<K>(id).await?.is_none(),
                    "{rpc} #{i} returned NotFound while the {} is listed",
                    K::NAME
                );
            }
            Err(st) => bail!("{rpc} #{i}: {:?}: {}", st.code(), st.message()),
        }
    }
    wait_gone::<K>(ctx, id).await
}

/// A kind whose service lists events about it.
pub(crate) trait Events: Template {
    /// ListEvents of the kind's service by object id (`""`: any), label selector and time
    /// window (`(0, 0)`: any), which must succeed.
    fn events(
        ctx: &Ctx,
        id: &str,
        label_selector: HashMap<String, String>,
        window: (i64, i64),
    ) -> impl Future<Output = anyhow::Result<Vec<Event>>> + Send;
}

macro_rules! events_kind {
    ($ty:ty, $m:ident, $client:ident, $what:literal) => {
        impl Events for $ty {
            async fn events(
                ctx: &Ctx,
                id: &str,
                label_selector: HashMap<String, String>,
                (events_from_time, events_to_time): (i64, i64),
            ) -> anyhow::Result<Vec<Event>> {
                let mut c = ctx.$client()?;
                let filter = Some($m::EventFilter {
                    id: id.to_owned(),
                    label_selector,
                    events_from_time,
                    events_to_time,
                });
                let res = ctx
                    .rpc(c.list_events($m::ListEventsRequest { filter }))
                    .await;
                Ok(expect_ok(res, $what)?.events)
            }
        }
    };
}
events_kind!(machine::Machine, machine, mc, "ListEvents");
events_kind!(volume::Volume, volume, vc, "volume ListEvents");

/// Events about `K` `id`, waiting until at least one exists.
pub(crate) async fn wait_events_of<K: Events>(ctx: &Ctx, id: &str) -> anyhow::Result<Vec<Event>> {
    let list = || K::events(ctx, id, HashMap::new(), (0, 0));
    wait_events_about(ctx, K::NAME, id, list).await
}

/// The id of the object an event is about (`""` without one).
pub(crate) fn about(e: Event) -> String {
    e.spec
        .and_then(|s| s.involved_object_meta)
        .map(|md| md.id)
        .unwrap_or_default()
}

/// Every event about a new `K` has an event_time within 10 minutes of now in Unix seconds.
pub(crate) async fn events_time_in_seconds<K: Events>(ctx: &Ctx) -> anyhow::Result<()> {
    let id = new::<K>(ctx, &[]).await?;
    let now = crate::ctx::unix_secs();
    for e in wait_events_of::<K>(ctx, &id).await? {
        let t = e.spec.as_ref().map_or(0, |s| s.event_time);
        ensure!(
            (now - 600..=now + 600).contains(&t),
            "event_time {t} is not within 10 min of now in Unix seconds ({now})"
        );
    }
    Ok(())
}

/// Every event in `events` carries `want` as the labels of its involved object.
pub(crate) fn events_carry_labels(
    events: Vec<Event>,
    want: &HashMap<String, String>,
) -> anyhow::Result<()> {
    for e in events {
        let got = e
            .spec
            .and_then(|s| s.involved_object_meta)
            .map(|md| md.labels)
            .unwrap_or_default();
        ensure!(
            got == *want,
            "event labels {got:?} != object labels {want:?}"
        );
    }
    Ok(())
}

/// Of a new `K` labelled which=a and one labelled which=b, ListEvents by the case's labels and
/// which=a returns events, and only about the first.
pub(crate) async fn events_label_filter<K: Events>(ctx: &Ctx) -> anyhow::Result<()> {
    let a = new::<K>(ctx, &[("which", "a")]).await?;
    new::<K>(ctx, &[("which", "b")]).await?;
    wait_events_of::<K>(ctx, &a).await?;
    let mut sel = ctx.case_selector();
    sel.insert("which".into(), "a".into());
    let evs = K::events(ctx, "", sel, (0, 0)).await?;
    ensure!(!evs.is_empty(), "no events for selector which=a");
    for id in evs.into_iter().map(about) {
        ensure!(
            id == a,
            "event about {id} returned for selector which=a ({} {a})",
            K::NAME
        );
    }
    Ok(())
}

/// Of events about a new `K` (waited for), ListEvents by its id and a window in 1970 returns
/// none; the id.
pub(crate) async fn events_none_in_1970<K: Events>(ctx: &Ctx) -> anyhow::Result<String> {
    let id = new::<K>(ctx, &[]).await?;
    wait_events_of::<K>(ctx, &id).await?;
    let evs = K::events(ctx, &id, HashMap::new(), (1, 1000)).await?;
    ensure!(
        evs.is_empty(),
        "a window in 1970 returned {} events",
        evs.len()
    );
    Ok(id)
}
