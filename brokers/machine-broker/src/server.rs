//! The gRPC surface: `MachineRuntime` and irikit's `ReservationRuntime` over a [`Broker`],
//! one span per RPC, every error through the one `From<Error> for Status`.

use iri_spec::{
    irikit::reservation::v1alpha1::{self as rsv, reservation_runtime_server::ReservationRuntime},
    machine::v1alpha1::{self as machine, machine_runtime_server::MachineRuntime},
};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::broker::Broker;

type R<T> = Result<Response<T>, Status>;

/// The broker's `MachineRuntime` and `ReservationRuntime` services.
#[derive(Debug, Clone)]
pub struct BrokerService {
    broker: Broker,
}

impl BrokerService {
    /// The services over `broker`.
    pub fn new(broker: Broker) -> Self {
        BrokerService { broker }
    }
}

async fn traced<T>(rpc: &'static str, fut: impl Future<Output = crate::error::Result<T>>) -> R<T> {
    let span = tracing::debug_span!("rpc", rpc);
    match fut.instrument(span).await {
        Ok(v) => Ok(Response::new(v)),
        Err(err) => {
            let status = Status::from(err);
            tracing::debug!(rpc, code = ?status.code(), message = status.message(), "rpc failed");
            Err(status)
        }
    }
}

#[tonic::async_trait]
impl MachineRuntime for BrokerService {
    async fn version(&self, _: Request<machine::VersionRequest>) -> R<machine::VersionResponse> {
        Ok(Response::new(self.broker.version()))
    }

    async fn list_events(
        &self,
        request: Request<machine::ListEventsRequest>,
    ) -> R<machine::ListEventsResponse> {
        let filter = request.into_inner().filter;
        traced("ListEvents", async {
            Ok(machine::ListEventsResponse {
                events: self.broker.list_events(filter).await?,
            })
        })
        .await
    }

    async fn list_machines(
        &self,
        request: Request<machine::ListMachinesRequest>,
    ) -> R<machine::ListMachinesResponse> {
        let filter = request.into_inner().filter;
        traced("ListMachines", async {
            Ok(machine::ListMachinesResponse {
                machines: self.broker.list_machines(filter).await?,
            })
        })
        .await
    }

    async fn create_machine(
        &self,
        request: Request<machine::CreateMachineRequest>,
    ) -> R<machine::CreateMachineResponse> {
        let m = request.into_inner().machine;
        traced("CreateMachine", async {
            Ok(machine::CreateMachineResponse {
                machine: Some(self.broker.create_machine(m).await?),
            })
        })
        .await
    }

    async fn delete_machine(
        &self,
        request: Request<machine::DeleteMachineRequest>,
    ) -> R<machine::DeleteMachineResponse> {
        let id = request.into_inner().machine_id;
        traced("DeleteMachine", async {
            self.broker.delete_machine(&id).await?;
            Ok(machine::DeleteMachineResponse {})
        })
        .await
    }

    async fn update_machine_annotations(
        &self,
        request: Request<machine::UpdateMachineAnnotationsRequest>,
    ) -> R<machine::UpdateMachineAnnotationsResponse> {
        let req = request.into_inner();
        traced("UpdateMachineAnnotations", async {
            self.broker
                .update_annotations(&req.machine_id, &req.annotations)
                .await?;
            Ok(machine::UpdateMachineAnnotationsResponse {})
        })
        .await
    }

    async fn update_machine_power(
        &self,
        request: Request<machine::UpdateMachinePowerRequest>,
    ) -> R<machine::UpdateMachinePowerResponse> {
        let req = request.into_inner();
        traced("UpdateMachinePower", async {
            self.broker.update_power(&req.machine_id, req.power).await?;
            Ok(machine::UpdateMachinePowerResponse {})
        })
        .await
    }

    async fn attach_volume(
        &self,
        request: Request<machine::AttachVolumeRequest>,
    ) -> R<machine::AttachVolumeResponse> {
        let req = request.into_inner();
        traced("AttachVolume", async {
            self.broker
                .attach_volume(&req.machine_id, req.volume)
                .await?;
            Ok(machine::AttachVolumeResponse {})
        })
        .await
    }

    async fn detach_volume(
        &self,
        request: Request<machine::DetachVolumeRequest>,
    ) -> R<machine::DetachVolumeResponse> {
        let req = request.into_inner();
        traced("DetachVolume", async {
            self.broker
                .detach_volume(&req.machine_id, &req.name)
                .await?;
            Ok(machine::DetachVolumeResponse {})
        })
        .await
    }

    async fn update_volume(
        &self,
        request: Request<machine::UpdateVolumeRequest>,
    ) -> R<machine::UpdateVolumeResponse> {
        let req = request.into_inner();
        traced("UpdateVolume", async {
            self.broker
                .update_volume(&req.machine_id, req.volume)
                .await?;
            Ok(machine::UpdateVolumeResponse {})
        })
        .await
    }

    async fn attach_network_interface(
        &self,
        request: Request<machine::AttachNetworkInterfaceRequest>,
    ) -> R<machine::AttachNetworkInterfaceResponse> {
        let req = request.into_inner();
        traced("AttachNetworkInterface", async {
            self.broker
                .attach_nic(&req.machine_id, req.network_interface)
                .await?;
            Ok(machine::AttachNetworkInterfaceResponse {})
        })
        .await
    }

    async fn detach_network_interface(
        &self,
        request: Request<machine::DetachNetworkInterfaceRequest>,
    ) -> R<machine::DetachNetworkInterfaceResponse> {
        let req = request.into_inner();
        traced("DetachNetworkInterface", async {
            self.broker.detach_nic(&req.machine_id, &req.name).await?;
            Ok(machine::DetachNetworkInterfaceResponse {})
        })
        .await
    }

    async fn status(&self, _: Request<machine::StatusRequest>) -> R<machine::StatusResponse> {
        traced("Status", self.broker.status()).await
    }

    async fn exec(&self, request: Request<machine::ExecRequest>) -> R<machine::ExecResponse> {
        let id = request.into_inner().machine_id;
        traced("Exec", async {
            Ok(machine::ExecResponse {
                url: self.broker.exec(&id).await?,
            })
        })
        .await
    }
}

#[tonic::async_trait]
impl ReservationRuntime for BrokerService {
    async fn create_reservation(
        &self,
        request: Request<rsv::CreateReservationRequest>,
    ) -> R<rsv::CreateReservationResponse> {
        let r = request.into_inner().reservation;
        traced("CreateReservation", async {
            Ok(rsv::CreateReservationResponse {
                reservation: Some(self.broker.create_reservation(r).await?),
            })
        })
        .await
    }

    async fn list_reservations(
        &self,
        request: Request<rsv::ListReservationsRequest>,
    ) -> R<rsv::ListReservationsResponse> {
        let filter = request.into_inner().filter;
        traced("ListReservations", async {
            Ok(rsv::ListReservationsResponse {
                reservations: self.broker.list_reservations(filter).await?,
            })
        })
        .await
    }

    async fn delete_reservation(
        &self,
        request: Request<rsv::DeleteReservationRequest>,
    ) -> R<rsv::DeleteReservationResponse> {
        let id = request.into_inner().reservation_id;
        traced("DeleteReservation", async {
            self.broker.delete_reservation(&id).await?;
            Ok(rsv::DeleteReservationResponse {})
        })
        .await
    }
}
