//! A per-method circuit breaker in front of the conformance client's channels.
//!
//! Every unary call goes through [`Guarded`], which applies the per-RPC deadline itself and
//! counts, per gRPC method (`ListMachines`, `Status`, ...), the calls that ran into it. Once a
//! method has timed out [`Breaker::threshold`] times (default 2, `--breaker-threshold`), later
//! calls of that method fail at once with `DeadlineExceeded` and the message "ListMachines timed
//! out 2 times; not called again": a runtime whose ListMachines hangs costs the run two
//! deadlines, not one per case, and the final cleanup never waits on a method known to hang.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use tonic::{Status, body::Body, transport::Channel};

/// The default number of timed-out calls after which a method is not called again.
pub const DEFAULT_THRESHOLD: usize = 2;

/// Per-method timeout counts, shared by every clone of the clients of one run.
#[derive(Debug)]
pub struct Breaker {
    deadline_ms: AtomicU64,
    threshold: AtomicUsize,
    timeouts: Mutex<HashMap<String, usize>>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            deadline_ms: AtomicU64::new(10_000),
            threshold: AtomicUsize::new(DEFAULT_THRESHOLD),
            timeouts: Mutex::new(HashMap::new()),
        }
    }
}

impl Breaker {
    /// Sets the per-call deadline and the threshold (0 = never open).
    pub fn configure(&self, deadline: Duration, threshold: usize) {
        self.deadline_ms.store(
            u64::try_from(deadline.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            Ordering::Relaxed,
        );
        self.threshold.store(threshold, Ordering::Relaxed);
    }

    /// The per-call deadline.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms.load(Ordering::Relaxed))
    }

    /// The threshold.
    pub fn threshold(&self) -> usize {
        self.threshold.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.timeouts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a call of `path` (`/machine.v1alpha1.MachineRuntime/ListMachines`) that ran
    /// into its deadline. Counts are per path: a hanging machine `Status` leaves the volume
    /// runtime's `Status` alone.
    pub fn record_timeout(&self, path: &str) {
        *self.lock().entry(path.to_owned()).or_default() += 1;
    }

    /// The error a call of `path` fails with at once, when the breaker is open for it.
    pub fn open_error(&self, path: &str) -> Option<Status> {
        let n = self.threshold();
        let count = self.lock().get(path).copied().unwrap_or(0);
        (n > 0 && count >= n).then(|| {
            Status::deadline_exceeded(format!(
                "{} timed out {count} times; not called again",
                method_of(path)
            ))
        })
    }

    /// Methods that are open (their RPC names), with their timeout counts (sorted).
    pub fn open_methods(&self) -> Vec<(String, usize)> {
        let n = self.threshold();
        let mut v: Vec<_> = self
            .lock()
            .iter()
            .filter(|(_, c)| n > 0 && **c >= n)
            .map(|(p, c)| (method_of(p).to_owned(), *c))
            .collect();
        v.sort();
        v
    }
}

/// A channel behind the breaker: the transport the conformance clients use.
#[derive(Debug, Clone)]
pub struct Guarded {
    inner: Channel,
    breaker: Arc<Breaker>,
}

impl Guarded {
    /// `inner` behind `breaker`.
    pub fn new(inner: Channel, breaker: Arc<Breaker>) -> Self {
        Guarded { inner, breaker }
    }
}

/// The method name of a gRPC path (`/machine.v1alpha1.MachineRuntime/ListMachines`).
fn method_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl tower::Service<http::Request<Body>> for Guarded {
    type Response = http::Response<Body>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.inner, cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let path = req.uri().path().to_owned();
        let breaker = self.breaker.clone();
        if let Some(st) = breaker.open_error(&path) {
            return Box::pin(async move { Err(Box::new(st) as Self::Error) });
        }
        let deadline = breaker.deadline();
        let fut = tower::Service::call(&mut self.inner, req);
        Box::pin(async move {
            match tokio::time::timeout(deadline, fut).await {
                Ok(res) => res.map_err(Into::into),
                Err(_) => {
                    breaker.record_timeout(&path);
                    Err(Box::new(Status::deadline_exceeded(format!(
                        "{}: no answer within the RPC deadline of {deadline:?}",
                        method_of(&path)
                    ))) as Self::Error)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_per_method_after_the_threshold() {
        let b = Breaker::default();
        let list = "/machine.v1alpha1.MachineRuntime/ListMachines";
        let status = "/machine.v1alpha1.MachineRuntime/Status";
        b.record_timeout(list);
        assert!(b.open_error(list).is_none());
        b.record_timeout(list);
        let st = b.open_error(list).unwrap();
        assert_eq!(st.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(
            st.message(),
            "ListMachines timed out 2 times; not called again"
        );
        assert!(b.open_error(status).is_none());
        assert!(
            b.open_error("/volume.v1alpha1.VolumeRuntime/ListVolumes")
                .is_none()
        );
        assert_eq!(b.open_methods(), vec![("ListMachines".to_owned(), 2)]);
        b.configure(Duration::from_secs(1), 0);
        assert!(b.open_error(list).is_none(), "threshold 0 never opens");
        b.configure(Duration::from_secs(1), 3);
        assert!(b.open_error(list).is_none());
    }
}
