//! irikit's own extension package (`irikit.reservation.v1alpha1`) lives in its own descriptor
//! set, apart from the IronCore packages, with the services and field numbers written here by
//! hand: a change to them is a wire change for every runtime that serves reservations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use iri_spec::irikit::reservation::v1alpha1 as rsv;
use iri_spec::meta::v1alpha1::ObjectMetadata;
use prost::Message;
use prost_types::FileDescriptorSet;

#[test]
fn extension_has_its_own_descriptor_set() {
    let iron = FileDescriptorSet::decode(iri_spec::FILE_DESCRIPTOR_SET).unwrap();
    assert!(
        iron.file
            .iter()
            .all(|f| !f.package().starts_with("irikit.")),
        "the IronCore descriptor set must not hold irikit's packages"
    );
    let ext = FileDescriptorSet::decode(iri_spec::IRIKIT_FILE_DESCRIPTOR_SET).unwrap();
    assert_eq!(ext.file.len(), 1);
    let file = &ext.file[0];
    assert_eq!(file.package(), "irikit.reservation.v1alpha1");
    assert_eq!(file.dependency, ["meta/v1alpha1/api.proto"]);
    let services: Vec<_> = file.service.iter().map(|s| s.name()).collect();
    assert_eq!(services, ["ReservationRuntime"]);
    let methods: Vec<_> = file.service[0]
        .method
        .iter()
        .map(|m| {
            (
                m.name(),
                m.input_type()
                    .trim_start_matches(".irikit.reservation.v1alpha1."),
                m.output_type()
                    .trim_start_matches(".irikit.reservation.v1alpha1."),
                m.client_streaming() || m.server_streaming(),
            )
        })
        .collect();
    assert_eq!(
        methods,
        [
            (
                "CreateReservation",
                "CreateReservationRequest",
                "CreateReservationResponse",
                false
            ),
            (
                "ListReservations",
                "ListReservationsRequest",
                "ListReservationsResponse",
                false
            ),
            (
                "DeleteReservation",
                "DeleteReservationRequest",
                "DeleteReservationResponse",
                false
            ),
        ]
    );
}

#[test]
fn reservation_wire_form() {
    let r = rsv::Reservation {
        metadata: Some(ObjectMetadata {
            id: "a".into(),
            ..Default::default()
        }),
        spec: Some(rsv::ReservationSpec {
            machine_classes: [("c".to_string(), 2)].into(),
            cpu_millis: 3,
            memory_bytes: 4,
            local_storage_bytes_per_machine: 5,
        }),
        status: Some(rsv::ReservationStatus {
            state: rsv::ReservationState::ReservationBound as i32,
        }),
    };
    let want: Vec<u8> = vec![
        0x0a, 3, 0x0a, 1, b'a', // metadata{id}
        0x12, 13, // spec
        0x0a, 5, 0x0a, 1, b'c', 0x10, 2, // machine_classes entry {c: 2}
        0x10, 3, 0x18, 4, 0x20,
        5, // cpu_millis, memory_bytes, local_storage_bytes_per_machine
        0x1a, 2, 0x08, 3, // status{state: BOUND}
    ];
    assert_eq!(r.encode_to_vec(), want);
    assert_eq!(rsv::ReservationState::ReservationPending as i32, 0);
    assert_eq!(rsv::ReservationState::ReservationAccepted as i32, 1);
    assert_eq!(rsv::ReservationState::ReservationRejected as i32, 2);
    assert_eq!(
        rsv::DeleteReservationRequest {
            reservation_id: "x".into()
        }
        .encode_to_vec(),
        [0x0a, 1, b'x']
    );
}
