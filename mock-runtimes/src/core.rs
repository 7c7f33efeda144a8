//! The state shared by the services of one mock: configuration, stores, call log, faults, and
//! the start and end of every RPC (call record, injected fault, error recoding).

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use iri_spec::{
    bucket::v1alpha1 as bucket, irikit::reservation::v1alpha1 as rsv, machine::v1alpha1 as machine,
    reservation::ledger::Usage, volume::v1alpha1 as volume,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status};

use crate::{
    Method, Mutant,
    calls::{Call, CallLog, Recorded, RequestMessage},
    classes::{BucketClassConfig, MachineClassConfig, VolumeClassConfig},
    clock::{Clock, IdGen},
    conn::ConnHandle,
    events::EventLogs,
    fault::{Effect, FaultPlan},
    lock,
    mutant::MutantSet,
    store::Store,
};

/// How long the state machine takes for each kind of transition. All zero by default.
///
/// A transition with delay `d`, caused by a call at time `t`, becomes visible to the first call
/// that *starts* at or after `t + d` — never in the response of the call that caused it. With
/// zero delays a create therefore returns PENDING and the next call sees RUNNING/AVAILABLE/READY,
/// and a delete returns OK and the next call no longer sees the object. Delays use tokio's clock,
/// so tests can `tokio::time::pause()` and `advance()` through them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delays {
    /// PENDING → RUNNING (machines), → AVAILABLE (volumes, buckets), → READY (snapshots).
    pub provision: Duration,
    /// A spec change being applied: volume/NIC status ATTACHED, `observed_generation` caught up,
    /// volume expansion reflected in status.
    pub apply: Duration,
    /// A power change reaching the machine state.
    pub power: Duration,
    /// A deleted object staying listed (deleted_at set, TERMINATING) before it is gone.
    pub terminate: Duration,
}

impl Delays {
    /// The same delay for every transition.
    pub fn uniform(d: Duration) -> Self {
        Delays {
            provision: d,
            apply: d,
            power: d,
            terminate: d,
        }
    }
}

/// Static configuration of one mock instance.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) machine_classes: Vec<MachineClassConfig>,
    pub(crate) volume_classes: Vec<VolumeClassConfig>,
    pub(crate) bucket_classes: Vec<BucketClassConfig>,
    pub(crate) delays: Delays,
    pub(crate) runtime_name: String,
    pub(crate) runtime_version: String,
    pub(crate) power_off_stopped: bool,
    pub(crate) exec_url_prefix: Option<String>,
    pub(crate) console: Option<crate::console::ConsoleServer>,
    pub(crate) event_capacity: usize,
    /// Whether the `ReservationRuntime` extension is served (else it answers `Unimplemented`).
    pub(crate) reservations: bool,
    /// The host's local storage in bytes (reservations' `local_storage_bytes_per_machine`).
    pub(crate) local_storage_bytes: i64,
    /// The host's cpu (millicores) and memory (bytes); `None`: the classes' sum.
    pub(crate) host_resources: Option<(i64, i64)>,
    /// Whether every CreateMachine must fit the capacity (not only while reservations hold).
    pub(crate) enforce_capacity: bool,
}

/// The reservations of one mock, in creation order, and what was consumed of them.
#[derive(Debug, Default)]
pub(crate) struct Reservations {
    pub(crate) items: Vec<rsv::Reservation>,
    /// Reservation id → machines created against it so far, per class (the hold shrinks by
    /// one machine each time).
    pub(crate) consumed: HashMap<String, HashMap<String, i64>>,
    /// Holds of deleted reservations that stay counted (only under
    /// [`Mutant::ReservationDeleteKeepsHold`]).
    pub(crate) released: Vec<Usage>,
}

/// Everything one mock instance shares between its services and handles.
pub(crate) struct Core {
    pub(crate) config: Config,
    pub(crate) clock: Clock,
    pub(crate) started: Instant,
    pub(crate) mutants: MutantSet,
    pub(crate) calls: Mutex<CallLog>,
    pub(crate) faults: Mutex<FaultPlan>,
    pub(crate) faults_on: AtomicBool,
    pub(crate) ids: Mutex<IdGen>,
    pub(crate) machines: Mutex<Store<machine::Machine>>,
    pub(crate) volumes: Mutex<Store<volume::Volume>>,
    pub(crate) snapshots: Mutex<Store<volume::VolumeSnapshot>>,
    pub(crate) buckets: Mutex<Store<bucket::Bucket>>,
    /// Each service's events.
    pub(crate) events: EventLogs,
    /// The one id every machine gets under [`Mutant::DuplicateIds`].
    pub(crate) duplicate_id: Mutex<Option<String>>,
    pub(crate) reservations: Mutex<Reservations>,
    pub(crate) shutdown: CancellationToken,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("config", &self.config)
            .field("mutants", &self.mutants.active())
            .finish_non_exhaustive()
    }
}

/// An RPC in flight: records its outcome when finished, or `Cancelled` when dropped unfinished.
pub(crate) struct CallGuard<'a> {
    core: &'a Core,
    seq: u64,
    method: Method,
    recorded: Arc<Recorded>,
    fault: Option<Effect>,
    done: bool,
}

impl CallGuard<'_> {
    fn finish_with(&mut self, code: Code, message: &str) {
        if self.done {
            return;
        }
        self.done = true;
        lock(&self.core.calls).finish(
            self.seq,
            self.method,
            &self.recorded,
            code,
            message,
            self.fault.clone(),
        );
    }

    /// Records the outcome and turns it into the RPC's return value.
    pub(crate) fn finish<T>(mut self, res: Result<T, Status>) -> Result<Response<T>, Status> {
        let res = res.map_err(|st| self.core.recode(self.method, st));
        match &res {
            Ok(_) => self.finish_with(Code::Ok, ""),
            Err(status) => {
                tracing::debug!(rpc = self.method.rpc(), code = ?status.code(), message = status.message(), "rpc failed");
                self.finish_with(status.code(), status.message());
            }
        }
        res.map(Response::new)
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        self.finish_with(Code::Cancelled, "call cancelled before it finished");
    }
}

impl Core {
    pub(crate) fn has(&self, m: Mutant) -> bool {
        self.mutants.has(m)
    }

    /// The error codes IronCore's own runtimes answer where the mock's differ (reference
    /// §2.1/§2.1a), switched on by the calibration mutants.
    fn recode(&self, method: Method, st: Status) -> Status {
        let code = st.code();
        let unknown_class = code == Code::InvalidArgument
            && (st.message().starts_with("unknown machine class")
                || st.message().starts_with("unknown volume class"));
        match method {
            Method::CreateMachine if unknown_class && self.has(Mutant::UnknownClassInternal) => {
                Status::internal(format!("machine class not supported: {}", st.message()))
            }
            Method::CreateMachine if unknown_class && self.has(Mutant::UnknownClassUnknown) => {
                Status::unknown(format!("machine class not supported: {}", st.message()))
            }
            Method::CreateVolume
                if unknown_class && self.has(Mutant::VolumeUnknownClassInternal) =>
            {
                Status::internal(format!("volume class not supported: {}", st.message()))
            }
            Method::AttachVolume
            | Method::DetachVolume
            | Method::AttachNetworkInterface
            | Method::DetachNetworkInterface
                if code == Code::NotFound && self.has(Mutant::AttachDetachPlainErrors) =>
            {
                Status::unknown(st.message().to_owned())
            }
            Method::DeleteVolume | Method::ExpandVolume
                if code == Code::NotFound && self.has(Mutant::VolumeUnknownIdInternal) =>
            {
                Status::internal(st.message().to_owned())
            }
            Method::DeleteVolumeSnapshot
                if code == Code::NotFound && self.has(Mutant::VolumeUnknownIdInternal) =>
            {
                Status::unknown(st.message().to_owned())
            }
            _ => st,
        }
    }

    /// How a new unix-socket or in-process connection treats `:authority`.
    pub(crate) fn authority(&self) -> iri_spec::serve::AuthorityPolicy {
        if self.has(Mutant::StrictAuthority) {
            iri_spec::serve::AuthorityPolicy::Strict
        } else {
            iri_spec::serve::AuthorityPolicy::Any
        }
    }

    pub(crate) fn new_id(&self) -> String {
        lock(&self.ids).next_id()
    }

    /// Starts an RPC: records it, applies an injected fault, and hands back the message.
    pub(crate) async fn begin<T>(
        &self,
        method: Method,
        req: Request<T>,
    ) -> Result<(CallGuard<'_>, T), Status>
    where
        T: RequestMessage + prost::Message + Default,
    {
        let conn = req.extensions().get::<ConnHandle>().cloned();
        let msg = req.into_inner();
        let recorded = Recorded::new(&msg);
        let fault = if self.faults_on.load(Ordering::Relaxed) {
            lock(&self.faults).decide(method)
        } else {
            None
        };
        let seq = lock(&self.calls).push(Call {
            seq: 0,
            method,
            recorded: recorded.clone(),
            code: None,
            message: String::new(),
            fault: fault.clone(),
            at: self.clock.wall(),
            elapsed: Instant::now().saturating_duration_since(self.started),
        });
        let mut guard = CallGuard {
            core: self,
            seq,
            method,
            recorded,
            fault: fault.clone(),
            done: false,
        };
        match fault {
            None => {}
            Some(Effect::Delay(d)) => {
                tracing::debug!(rpc = method.rpc(), delay = ?d, "fault: delay");
                tokio::select! {
                    () = tokio::time::sleep(d) => {}
                    () = self.shutdown.cancelled() => {
                        guard.finish_with(Code::Unavailable, "mock runtime shutting down");
                        return Err(Status::unavailable("mock runtime shutting down"));
                    }
                }
            }
            Some(Effect::Error { code, message }) => {
                tracing::debug!(rpc = method.rpc(), ?code, "fault: error");
                guard.finish_with(code, &message);
                return Err(Status::new(code, message));
            }
            Some(Effect::Hang) => {
                tracing::debug!(rpc = method.rpc(), "fault: hang");
                self.shutdown.cancelled().await;
                guard.finish_with(Code::Unavailable, "mock runtime shutting down");
                return Err(Status::unavailable("mock runtime shutting down"));
            }
            Some(Effect::DropConnection) => {
                tracing::debug!(rpc = method.rpc(), "fault: drop connection");
                if let Some(conn) = conn {
                    conn.kill();
                }
                let message = "connection dropped by fault injection";
                guard.finish_with(Code::Unavailable, message);
                return Err(Status::unavailable(message));
            }
        }
        Ok((guard, msg))
    }

    pub(crate) fn machine_class(&self, name: &str) -> Option<&MachineClassConfig> {
        self.config.machine_classes.iter().find(|c| c.name == name)
    }

    pub(crate) fn volume_class(&self, name: &str) -> Option<&VolumeClassConfig> {
        self.config.volume_classes.iter().find(|c| c.name == name)
    }

    pub(crate) fn bucket_class(&self, name: &str) -> Option<&BucketClassConfig> {
        self.config.bucket_classes.iter().find(|c| c.name == name)
    }

    pub(crate) fn version(&self) -> (String, String) {
        if self.has(Mutant::VersionEmpty) {
            (String::new(), String::new())
        } else {
            (
                self.config.runtime_name.clone(),
                self.config.runtime_version.clone(),
            )
        }
    }

    /// `created_at` for a new object, honouring the timestamp mutants.
    pub(crate) fn created_at(&self, zero: bool, seconds: bool) -> i64 {
        if zero {
            0
        } else if seconds {
            self.clock.unix_secs()
        } else {
            self.clock.unix_nanos()
        }
    }
}

/// An `InvalidArgument` status.
pub(crate) fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg.into())
}

/// A `NotFound` status.
pub(crate) fn not_found(kind: &str, id: &str) -> Status {
    Status::not_found(format!("{kind} {id:?} not found"))
}

/// Declares a mock's gRPC service: the struct (on the shared [`Core`]), its `into_server`, and
/// the tonic trait, whose every RPC starts with [`Core::begin`] (call record, injected fault)
/// and ends with [`CallGuard::finish`] on `$body`, evaluated with `$core: &Core` and the
/// request message bound to `$req`. `@common(..)` adds the RPCs every IRI service has alike:
/// Version, and ListEvents on the service's log after its kinds' due transitions.
macro_rules! rpc_service {
    (
        $(#[$doc:meta])*
        $svc:ident: $trait:ident, $server:ident {
            $( @common($m:ident, $version:ident, $list_events:ident, $service:expr, [$($kind:ty),+]); )?
            $( $rpc:ident($method:ident, $req_ty:ty) -> $resp:ty = |$core:ident, $req:pat_param| $body:expr; )*
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $svc {
            pub(crate) core: std::sync::Arc<$crate::core::Core>,
        }

        impl $svc {
            /// The tonic server for this service.
            pub fn into_server(self) -> $server<Self> {
                $server::new(self)
            }
        }

        #[tonic::async_trait]
        impl $trait for $svc {
            $(
                async fn version(
                    &self,
                    request: tonic::Request<$m::VersionRequest>,
                ) -> Result<tonic::Response<$m::VersionResponse>, tonic::Status> {
                    let (call, _req) = self.core.begin($crate::Method::$version, request).await?;
                    let (runtime_name, runtime_version) = self.core.version();
                    call.finish(Ok($m::VersionResponse { runtime_name, runtime_version }))
                }

                async fn list_events(
                    &self,
                    request: tonic::Request<$m::ListEventsRequest>,
                ) -> Result<tonic::Response<$m::ListEventsResponse>, tonic::Status> {
                    let (call, req) = self.core.begin($crate::Method::$list_events, request).await?;
                    let f = req.filter.unwrap_or_default();
                    let q = $crate::events::EventQuery {
                        id: f.id,
                        labels: f.label_selector,
                        from: f.events_from_time,
                        to: f.events_to_time,
                    };
                    $( self.core.settle::<$kind>(); )+
                    call.finish(Ok($m::ListEventsResponse { events: self.core.events($service, &q) }))
                }
            )?
            $(
                async fn $rpc(
                    &self,
                    request: tonic::Request<$req_ty>,
                ) -> Result<tonic::Response<$resp>, tonic::Status> {
                    let (call, $req) = self.core.begin($crate::Method::$method, request).await?;
                    let $core: &$crate::core::Core = &self.core;
                    call.finish($body)
                }
            )*
        }
    };
}
pub(crate) use rpc_service;
