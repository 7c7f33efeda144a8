//! Endpoint discovery, connecting, and calling with a deadline; gRPC errors become
//! `<CodeName>: <message>` so the user sees `NotFound`, `InvalidArgument`, ...

use anyhow::{Result, anyhow};
use iri_spec::bucket::v1alpha1::bucket_runtime_client::BucketRuntimeClient;
use iri_spec::endpoint::{self, RuntimeKind};
use iri_spec::machine::v1alpha1::machine_runtime_client::MachineRuntimeClient;
use iri_spec::volume::v1alpha1::volume_runtime_client::VolumeRuntimeClient;
use tonic::transport::Channel;

use crate::{Global, Service};

/// Connects to runtimes as the flags say.
pub(crate) struct Connector<'a> {
    global: &'a Global,
}

impl<'a> Connector<'a> {
    /// A connector for these flags.
    pub(crate) fn new(global: &'a Global) -> Self {
        Connector { global }
    }

    /// The service `get status|events|version` talks to: `--service`, else the only runtime
    /// whose endpoint flag is given, else machine.
    pub(crate) fn default_service(&self) -> Service {
        if let Some(service) = self.global.service {
            return service;
        }
        let given = [
            (Service::Machine, &self.global.machine_endpoint),
            (Service::Volume, &self.global.volume_endpoint),
            (Service::Bucket, &self.global.bucket_endpoint),
        ]
        .into_iter()
        .filter(|(_, flag)| flag.as_deref().is_some_and(|s| !s.is_empty()))
        .map(|(service, _)| service)
        .collect::<Vec<_>>();
        match given.as_slice() {
            [only] => *only,
            _ => Service::Machine,
        }
    }

    async fn channel(&self, kind: RuntimeKind) -> Result<Channel> {
        let specific = match kind {
            RuntimeKind::Machine => &self.global.machine_endpoint,
            RuntimeKind::Volume => &self.global.volume_endpoint,
            RuntimeKind::Bucket => &self.global.bucket_endpoint,
        };
        let explicit = specific
            .as_deref()
            .filter(|s| !s.is_empty())
            .or(self.global.address.as_deref());
        let endpoint = endpoint::discover(kind, explicit, self.global.discovery_timeout).await?;
        tracing::debug!(%endpoint, "connecting");
        match tokio::time::timeout(self.global.timeout, endpoint::connect(&endpoint)).await {
            Ok(res) => Ok(res?),
            Err(_) => Err(anyhow!(
                "connect to {endpoint}: no connection within {}",
                humantime::format_duration(self.global.timeout)
            )),
        }
    }

    /// A machine runtime client.
    pub(crate) async fn machine(&self) -> Result<MachineRuntimeClient<Channel>> {
        Ok(MachineRuntimeClient::new(
            self.channel(RuntimeKind::Machine).await?,
        ))
    }

    /// A volume runtime client.
    pub(crate) async fn volume(&self) -> Result<VolumeRuntimeClient<Channel>> {
        Ok(VolumeRuntimeClient::new(
            self.channel(RuntimeKind::Volume).await?,
        ))
    }

    /// A bucket runtime client.
    pub(crate) async fn bucket(&self) -> Result<BucketRuntimeClient<Channel>> {
        Ok(BucketRuntimeClient::new(
            self.channel(RuntimeKind::Bucket).await?,
        ))
    }

    /// A client of irikit's reservation extension, on the machine runtime's endpoint.
    pub(crate) async fn reservation(
        &self,
    ) -> Result<
        iri_spec::irikit::reservation::v1alpha1::reservation_runtime_client::ReservationRuntimeClient<
            Channel,
        >,
    >{
        Ok(
            iri_spec::irikit::reservation::v1alpha1::reservation_runtime_client::ReservationRuntimeClient::new(
                self.channel(RuntimeKind::Machine).await?,
            ),
        )
    }

    /// A request carrying the deadline, so the runtime can give up too.
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.global.timeout);
        request
    }

    /// Await a call under the deadline and turn its status into a readable error.
    pub(crate) async fn call<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T> {
        let deadline = || {
            anyhow!(
                "DeadlineExceeded: no answer within {}",
                humantime::format_duration(self.global.timeout)
            )
        };
        match tokio::time::timeout(self.global.timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            // tonic enforces the request's grpc-timeout itself and reports it as Cancelled.
            Ok(Err(status))
                if status.code() == tonic::Code::Cancelled
                    && status.message() == "Timeout expired" =>
            {
                Err(deadline())
            }
            Ok(Err(status)) => Err(status_error(&status)),
            Err(_) => Err(deadline()),
        }
    }
}

/// `NotFound: machine abc not found`.
pub(crate) fn status_error(status: &tonic::Status) -> anyhow::Error {
    let code = format!("{:?}", status.code());
    if status.message().is_empty() {
        anyhow!("{code}")
    } else {
        anyhow!("{code}: {}", status.message())
    }
}
