//! A client for irikit's `ReservationRuntime` extension that treats a runtime without it
//! (`Unimplemented`) as one with no reservations, as issue 15 and IEP-11 require: callers fall
//! back to best-effort placement for such a runtime; and, in [`ledger`], the capacity
//! arithmetic every runtime that serves reservations shares (what a reservation holds, what
//! is left of it, whether it is consumed, whether something new fits next to the holds).

pub mod ledger;

use tonic::{Code, Status, transport::Channel};

use crate::irikit::reservation::v1alpha1::{
    CreateReservationRequest, DeleteReservationRequest, ListReservationsRequest, Reservation,
    ReservationFilter, reservation_runtime_client::ReservationRuntimeClient,
};

pub use crate::keys::RESERVATION_ID_ANNOTATION;

/// What a reservation call found out about the runtime.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply<T> {
    /// The runtime serves reservations and answered.
    Served(T),
    /// The runtime answered `Unimplemented`: it has no reservations.
    Unsupported,
}

impl<T> Reply<T> {
    /// The answer, `None` for a runtime without reservations.
    pub fn served(self) -> Option<T> {
        match self {
            Self::Served(t) => Some(t),
            Self::Unsupported => None,
        }
    }
}

fn reply<T>(res: Result<tonic::Response<T>, Status>) -> Result<Reply<T>, Status> {
    match res {
        Ok(r) => Ok(Reply::Served(r.into_inner())),
        Err(s) if s.code() == Code::Unimplemented => Ok(Reply::Unsupported),
        Err(s) => Err(s),
    }
}

/// A `ReservationRuntime` client on a runtime's channel (the machine runtime's socket).
#[derive(Debug, Clone)]
pub struct ReservationClient {
    inner: ReservationRuntimeClient<Channel>,
}

impl ReservationClient {
    /// A client on `channel`.
    pub fn new(channel: Channel) -> Self {
        Self {
            inner: ReservationRuntimeClient::new(channel),
        }
    }

    /// Creates a reservation; the runtime's decision is in `status.state`.
    pub async fn create(&mut self, reservation: Reservation) -> Result<Reply<Reservation>, Status> {
        let res = self
            .inner
            .create_reservation(CreateReservationRequest {
                reservation: Some(reservation),
            })
            .await;
        Ok(match reply(res)? {
            Reply::Served(r) => Reply::Served(r.reservation.ok_or_else(|| {
                Status::internal("CreateReservation answered without a reservation")
            })?),
            Reply::Unsupported => Reply::Unsupported,
        })
    }

    /// Lists reservations; a runtime without reservations lists none.
    pub async fn list(
        &mut self,
        filter: Option<ReservationFilter>,
    ) -> Result<Vec<Reservation>, Status> {
        let res = self
            .inner
            .list_reservations(ListReservationsRequest { filter })
            .await;
        Ok(reply(res)?
            .served()
            .map(|r| r.reservations)
            .unwrap_or_default())
    }

    /// Deletes a reservation, releasing its hold. `Reply::Unsupported` from a runtime without
    /// reservations (there was nothing to release).
    pub async fn delete(&mut self, id: &str) -> Result<Reply<()>, Status> {
        let res = self
            .inner
            .delete_reservation(DeleteReservationRequest {
                reservation_id: id.to_string(),
            })
            .await;
        Ok(match reply(res)? {
            Reply::Served(_) => Reply::Served(()),
            Reply::Unsupported => Reply::Unsupported,
        })
    }

    /// Whether the runtime serves reservations (one `ListReservations` call).
    pub async fn supported(&mut self) -> Result<bool, Status> {
        let res = self
            .inner
            .list_reservations(ListReservationsRequest::default())
            .await;
        Ok(matches!(reply(res)?, Reply::Served(_)))
    }
}
