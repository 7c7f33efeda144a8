//! The IRI `MachineRuntime` gRPC service over [`Runtime`], and the one error → status mapping.

use iri_spec::irikit::reservation::v1alpha1::{
    self as rsv, reservation_runtime_server::ReservationRuntime,
};
use iri_spec::machine::v1alpha1::{self as machine, machine_runtime_server::MachineRuntime};
use tonic::{Request, Response, Status};
use tracing::{Instrument as _, error, info_span};

use crate::runtime::{Error, Runtime};

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let message = format!("{e:#}");
        match e {
            Error::MachineNotFound(_)
            | Error::DeviceNotFound { .. }
            | Error::ReservationNotFound(_) => Status::not_found(message),
            Error::DeviceExists { .. } => Status::already_exists(message),
            Error::InvalidArgument(_) | Error::Confinement(_) => Status::invalid_argument(message),
            Error::Deleting(_)
            | Error::NicsUnsupported
            | Error::Reservation(_)
            | Error::ConsoleBusy(_) => Status::failed_precondition(message),
            Error::ConsoleUnavailable(_) => Status::unavailable(message),
            Error::OutOfRange(_) => Status::out_of_range(message),
            Error::ResourceExhausted(_) => Status::resource_exhausted(message),
            Error::Store(_) | Error::ConsoleBind(_) => {
                error!(error = %message, "request failed");
                Status::internal(message)
            }
        }
    }
}

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct MachineService {
    runtime: Runtime,
}

impl MachineService {
    /// Serve `runtime`.
    pub fn new(runtime: Runtime) -> Self {
        Self { runtime }
    }
}

fn require_id(id: &str) -> Result<(), Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument("machine_id is required"));
    }
    Ok(())
}

fn require_name(name: &str, what: &str) -> Result<(), Status> {
    if name.is_empty() {
        return Err(Status::invalid_argument(format!("{what} is required")));
    }
    Ok(())
}

#[tonic::async_trait]
impl MachineRuntime for MachineService {
    async fn version(
        &self,
        _request: Request<machine::VersionRequest>,
    ) -> Result<Response<machine::VersionResponse>, Status> {
        Ok(Response::new(machine::VersionResponse {
            runtime_name: env!("CARGO_PKG_NAME").to_owned(),
            runtime_version: env!("CARGO_PKG_VERSION").to_owned(),
        }))
    }

    async fn list_events(
        &self,
        request: Request<machine::ListEventsRequest>,
    ) -> Result<Response<machine::ListEventsResponse>, Status> {
        let events = self.runtime.events(request.get_ref().filter.as_ref());
        Ok(Response::new(machine::ListEventsResponse { events }))
    }

    async fn list_machines(
        &self,
        request: Request<machine::ListMachinesRequest>,
    ) -> Result<Response<machine::ListMachinesResponse>, Status> {
        let machines = self.runtime.list(request.get_ref().filter.as_ref());
        Ok(Response::new(machine::ListMachinesResponse { machines }))
    }

    async fn create_machine(
        &self,
        request: Request<machine::CreateMachineRequest>,
    ) -> Result<Response<machine::CreateMachineResponse>, Status> {
        let span = info_span!("rpc", rpc = "CreateMachine");
        let machine = self
            .runtime
            .create(request.into_inner().machine)
            .instrument(span)
            .await?;
        Ok(Response::new(machine::CreateMachineResponse {
            machine: Some(machine),
        }))
    }

    async fn delete_machine(
        &self,
        request: Request<machine::DeleteMachineRequest>,
    ) -> Result<Response<machine::DeleteMachineResponse>, Status> {
        let id = request.into_inner().machine_id;
        require_id(&id)?;
        let span = info_span!("rpc", rpc = "DeleteMachine", machine.id = %id);
        self.runtime.delete(&id).instrument(span).await?;
        Ok(Response::new(machine::DeleteMachineResponse {}))
    }

    async fn update_machine_annotations(
        &self,
        request: Request<machine::UpdateMachineAnnotationsRequest>,
    ) -> Result<Response<machine::UpdateMachineAnnotationsResponse>, Status> {
        let req = request.into_inner();
        require_id(&req.machine_id)?;
        self.runtime
            .update_annotations(&req.machine_id, req.annotations)
            .await?;
        Ok(Response::new(machine::UpdateMachineAnnotationsResponse {}))
    }

    async fn update_machine_power(
        &self,
        request: Request<machine::UpdateMachinePowerRequest>,
    ) -> Result<Response<machine::UpdateMachinePowerResponse>, Status> {
        let req = request.into_inner();
        require_id(&req.machine_id)?;
        let span = info_span!("rpc", rpc = "UpdateMachinePower", machine.id = %req.machine_id);
        self.runtime
            .update_power(&req.machine_id, req.power)
            .instrument(span)
            .await?;
        Ok(Response::new(machine::UpdateMachinePowerResponse {}))
    }

    async fn attach_volume(
        &self,
        request: Request<machine::AttachVolumeRequest>,
    ) -> Result<Response<machine::AttachVolumeResponse>, Status> {
        let req = request.into_inner();
        require_id(&req.machine_id)?;
        self.runtime
            .attach_volume(&req.machine_id, req.volume)
            .await?;
        Ok(Response::new(machine::AttachVolumeResponse {}))
    }

    async fn detach_volume(
        &self,
        request: Request<machine::DetachVolumeRequest>,
    ) -> Result<Response<machine::DetachVolumeResponse>, Status> {
        let req = request.into_inner();
        require_id(&req.machine_id)?;
        require_name(&req.name, "name")?;
        self.runtime
            .detach_volume(&req.machine_id, &req.name)
            .await?;
        Ok(Response::new(machine::DetachVolumeResponse {}))
    }

    async fn update_volume(
        &self,
        request: Request<machine::UpdateVolumeRequest>,
    ) -> Result<Response<machine::UpdateVolumeResponse>, Status> {
        let req = request.into_inner();
        require_id(&req.machine_id)?;
        self.runtime
            .update_volume(&req.machine_id, req.volume)
            .await?;
        Ok(Response::new(machine::UpdateVolumeResponse {}))
    }

    async fn attach_network_interface(
        &self,
        request: Request<machine::AttachNetworkInterfaceRequest>,
    ) -> Result<Response<machine::AttachNetworkInterfaceResponse>, Status> {
        let req = request.into_inner();
        require_id(&req.machine_id)?;
        self.runtime
            .attach_nic(&req.machine_id, req.network_interface)
            .await?;
        Ok(Response::new(machine::AttachNetworkInterfaceResponse {}))
    }

    async fn detach_network_interface(
        &self,
        request: Request<machine::DetachNetworkInterfaceRequest>,
    ) -> Result<Response<machine::DetachNetworkInterfaceResponse>, Status> {
        let req = request.into_inner();
        require_id(&req.machine_id)?;
        require_name(&req.name, "name")?;
        self.runtime.detach_nic(&req.machine_id, &req.name).await?;
        Ok(Response::new(machine::DetachNetworkInterfaceResponse {}))
    }

    async fn status(
        &self,
        _request: Request<machine::StatusRequest>,
    ) -> Result<Response<machine::StatusResponse>, Status> {
        Ok(Response::new(machine::StatusResponse {
            machine_class_status: self.runtime.status(),
        }))
    }

    async fn exec(
        &self,
        request: Request<machine::ExecRequest>,
    ) -> Result<Response<machine::ExecResponse>, Status> {
        let id = request.into_inner().machine_id;
        require_id(&id)?;
        let url = self.runtime.exec(&id)?;
        Ok(Response::new(machine::ExecResponse { url }))
    }
}

/// irikit's `ReservationRuntime` extension (issue 15), served on the same socket.
#[derive(Debug, Clone)]
pub struct ReservationService {
    runtime: Runtime,
}

impl ReservationService {
    /// Serve the reservations of `runtime`.
    pub fn new(runtime: Runtime) -> Self {
        Self { runtime }
    }
}

#[tonic::async_trait]
impl ReservationRuntime for ReservationService {
    async fn create_reservation(
        &self,
        request: Request<rsv::CreateReservationRequest>,
    ) -> Result<Response<rsv::CreateReservationResponse>, Status> {
        let reservation = self
            .runtime
            .create_reservation(request.into_inner().reservation)
            .await?;
        Ok(Response::new(rsv::CreateReservationResponse {
            reservation: Some(reservation),
        }))
    }

    async fn list_reservations(
        &self,
        request: Request<rsv::ListReservationsRequest>,
    ) -> Result<Response<rsv::ListReservationsResponse>, Status> {
        let reservations = self
            .runtime
            .list_reservations(request.get_ref().filter.as_ref());
        Ok(Response::new(rsv::ListReservationsResponse {
            reservations,
        }))
    }

    async fn delete_reservation(
        &self,
        request: Request<rsv::DeleteReservationRequest>,
    ) -> Result<Response<rsv::DeleteReservationResponse>, Status> {
        self.runtime
            .delete_reservation(&request.into_inner().reservation_id)
            .await?;
        Ok(Response::new(rsv::DeleteReservationResponse {}))
    }
}
