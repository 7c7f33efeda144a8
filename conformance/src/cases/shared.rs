//! What the case bodies of several services share: the error-code case shape the
//! `code_cases!` rows expand to, and waiting for the events about one object.

use std::fmt::Debug;

use iri_spec::event::v1alpha1::Event;
use tonic::{Code, Status};

use crate::{
    case::{Case, Profile, Service, pass},
    ctx::{Ctx, expect_code},
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
