//! The generated gRPC clients of the runtime under test, behind one circuit breaker: what the
//! case context, the runner and the lifecycle environment share to reach the runtime.

use std::sync::Arc;

use iri_spec::{
    bucket::v1alpha1::bucket_runtime_client::BucketRuntimeClient,
    machine::v1alpha1::machine_runtime_client::MachineRuntimeClient,
    volume::v1alpha1::volume_runtime_client::VolumeRuntimeClient,
};
use tonic::transport::Channel;

use crate::breaker::{Breaker, Guarded};

/// The generated clients of the runtime under test; `None` for a service without an endpoint.
#[derive(Debug, Clone, Default)]
pub struct Clients {
    /// MachineRuntime client.
    pub machine: Option<MachineRuntimeClient<Guarded>>,
    /// VolumeRuntime client.
    pub volume: Option<VolumeRuntimeClient<Guarded>>,
    /// BucketRuntime client.
    pub bucket: Option<BucketRuntimeClient<Guarded>>,
    /// irikit's ReservationRuntime extension, on the machine runtime's channel.
    pub reservation: Option<iri_spec::reservation::ReservationClient>,
    /// The per-method circuit breaker all three share ([`crate::breaker`]).
    pub breaker: Arc<Breaker>,
}

impl Clients {
    /// Clients on the given channels, behind one fresh breaker.
    pub fn new(machine: Option<Channel>, volume: Option<Channel>, bucket: Option<Channel>) -> Self {
        let breaker = Arc::new(Breaker::default());
        let guard = |c: Channel| Guarded::new(c, breaker.clone());
        Clients {
            reservation: machine
                .clone()
                .map(iri_spec::reservation::ReservationClient::new),
            machine: machine.map(guard).map(MachineRuntimeClient::new),
            volume: volume.map(guard).map(VolumeRuntimeClient::new),
            bucket: bucket.map(guard).map(BucketRuntimeClient::new),
            breaker,
        }
    }
}
