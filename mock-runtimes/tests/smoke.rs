//! Smoke test of the in-process transport and the basic machine lifecycle.
#![allow(clippy::unwrap_used)]

mod common;

use common::Clients;
use iri_mock::{Method, MockRuntime, fixtures};
use iri_spec::machine::v1alpha1 as machine;

#[tokio::test]
async fn create_list_delete() {
    let mock = MockRuntime::builder().start_in_process().await.unwrap();
    mock.expect(Method::CreateMachine).times(1);
    let mut clients = Clients::new(&mock);
    let created = clients.create_machine_object(fixtures::machine()).await;
    let client = &mut clients.machine;
    let id = created.metadata.unwrap().id;
    assert!(iri_mock::is_idgen_id(&id));
    assert_eq!(
        created.status.unwrap().state,
        machine::MachineState::MachinePending as i32
    );
    let listed = client
        .list_machines(machine::ListMachinesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .machines;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].status.as_ref().unwrap().state,
        machine::MachineState::MachineRunning as i32
    );
    client
        .delete_machine(machine::DeleteMachineRequest {
            machine_id: id.clone(),
        })
        .await
        .unwrap();
    let err = client
        .delete_machine(machine::DeleteMachineRequest { machine_id: id })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}
