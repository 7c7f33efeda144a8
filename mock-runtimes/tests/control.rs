//! Test control: the call log, expectations (verified on drop) and every fault kind.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Clients, start};
use iri_mock::{Effect, FaultRule, Method, MockRuntime, Trigger, fixtures};
use iri_spec::machine::v1alpha1 as machine;
use tonic::Code;

async fn version(c: &mut Clients) -> Result<(), tonic::Status> {
    c.machine
        .version(machine::VersionRequest::default())
        .await
        .map(|_| ())
}

/// A mock whose machine Version calls meet one fault rule, and clients for it.
async fn with_version_fault(trigger: Trigger, effect: Effect) -> (MockRuntime, Clients) {
    let rule = FaultRule::new(Method::MachineVersion, trigger, effect);
    let mock = MockRuntime::builder()
        .fault(rule)
        .start_in_process()
        .await
        .unwrap();
    let c = Clients::new(&mock);
    (mock, c)
}

#[tokio::test]
async fn call_log_records_method_request_code_and_time() {
    let (mock, mut c) = start(MockRuntime::builder()).await;
    let id = c
        .create_machine(fixtures::machine_with_labels(&[("k", "v")]))
        .await;
    let _ = c.delete_machine("nope").await;
    mock.assert_calls(&[Method::CreateMachine, Method::DeleteMachine]);
    mock.assert_called(Method::CreateMachine, 1);
    mock.assert_any_code(Method::DeleteMachine, Code::NotFound);
    let calls = mock.calls();
    let create = calls[0].request::<machine::CreateMachineRequest>().unwrap();
    assert_eq!(
        create
            .machine
            .as_ref()
            .unwrap()
            .metadata
            .as_ref()
            .unwrap()
            .labels["k"],
        "v"
    );
    assert!(calls[0].is_ok());
    assert_eq!(calls[1].code, Some(Code::NotFound));
    assert!(calls[0].at <= calls[1].at);
    assert!(calls[1].seq > calls[0].seq);
    assert!(
        calls[0]
            .request::<machine::DeleteMachineRequest>()
            .is_none()
    );
    assert!(!id.is_empty());
    mock.clear_calls();
    assert!(mock.calls().is_empty());
}

#[tokio::test]
async fn bounded_call_log_records_outcomes_after_wrapping_and_clearing() {
    let (mock, mut c) = start(MockRuntime::builder().call_log_capacity(3)).await;
    for _ in 0..4 {
        version(&mut c).await.unwrap();
    }
    c.delete_machine("nope").await.unwrap_err();
    let codes = |mock: &MockRuntime| -> Vec<(u64, Option<Code>)> {
        mock.calls()
            .iter()
            .map(|call| (call.seq, call.code))
            .collect()
    };
    assert_eq!(
        codes(&mock),
        [
            (2, Some(Code::Ok)),
            (3, Some(Code::Ok)),
            (4, Some(Code::NotFound))
        ]
    );
    mock.clear_calls();
    c.delete_machine("nope").await.unwrap_err();
    version(&mut c).await.unwrap();
    assert_eq!(
        codes(&mock),
        [(5, Some(Code::NotFound)), (6, Some(Code::Ok))]
    );
}

#[tokio::test]
async fn expectations_pass_and_fail() {
    let (mock, mut c) = start(MockRuntime::builder()).await;
    let create = mock.expect(Method::CreateMachine).times(2);
    mock.expect(Method::DeleteMachine).never();
    let not_found = mock
        .expect(Method::Exec)
        .with_code(Code::NotFound)
        .at_least(1);
    let labelled = mock.expect(Method::CreateMachine).matching(|call| {
        call.request::<machine::CreateMachineRequest>()
            .and_then(|r| r.machine.as_ref()?.metadata.as_ref())
            .is_some_and(|m| m.labels.contains_key("special"))
    });
    c.create_machine(fixtures::machine()).await;
    assert_eq!(create.matched(), 1);
    assert!(mock.verify().is_err(), "one create and no exec so far");
    c.create_machine(fixtures::machine_with_labels(&[("special", "1")]))
        .await;
    let _ = c.exec("nope").await;
    assert_eq!(not_found.matched(), 1);
    assert_eq!(labelled.matched(), 1);
    mock.verify().unwrap();

    // A failing expectation reports what was expected, named.
    mock.expect(Method::ListMachines)
        .times(3)
        .named("three relists");
    let err = mock.verify().unwrap_err();
    assert_eq!(
        err.to_string(),
        "expected exactly 3 call(s) of three relists, got 0"
    );
    mock.reset_expectations();
}

#[tokio::test]
async fn unmet_expectation_panics_on_drop_in_test_thread() {
    // Run the drop on a thread of our own to observe its panic without #[should_panic].
    let res = std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mock = MockRuntime::builder().start_in_process().await.unwrap();
            mock.expect(Method::CreateMachine).times(1);
            drop(mock);
        });
    })
    .join();
    let panic = res.unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(
        message.contains("expected exactly 1 call(s) of CreateMachine, got 0"),
        "{message}"
    );
}

#[tokio::test]
async fn unmet_expectation_does_not_panic_on_another_thread() {
    let mock = MockRuntime::builder().start_in_process().await.unwrap();
    mock.expect(Method::CreateMachine).times(1);
    // Dropped elsewhere: reported on stderr only.
    std::thread::spawn(move || drop(mock)).join().unwrap();
}

#[tokio::test]
async fn fault_error_first_n_and_nth() {
    let (mock, mut c) = with_version_fault(
        Trigger::FirstN(2),
        Effect::error(Code::Unavailable, "warming up"),
    )
    .await;
    let codes: Vec<Code> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(
                version(&mut c)
                    .await
                    .map_or_else(|s| s.code(), |()| Code::Ok),
            );
        }
        v
    };
    assert_eq!(
        codes,
        [Code::Unavailable, Code::Unavailable, Code::Ok, Code::Ok]
    );
    let faulted: Vec<_> = mock.calls().iter().map(|c| c.fault.is_some()).collect();
    assert_eq!(faulted, [true, true, false, false]);
    assert_eq!(mock.calls()[0].message, "warming up");

    mock.clear_faults();
    let id = mock.add_fault(FaultRule::new(
        Method::MachineVersion,
        Trigger::Nth(2),
        Effect::error(Code::Internal, "boom"),
    ));
    let got: Vec<bool> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(version(&mut c).await.is_ok());
        }
        v
    };
    assert_eq!(got, [true, false, true]);
    assert!(mock.remove_fault(id));
    assert!(!mock.remove_fault(id));
}

#[tokio::test]
async fn fault_always_and_any_method() {
    let (mock, mut c) = start(MockRuntime::builder()).await;
    mock.add_fault(FaultRule::any_method(
        Trigger::Always,
        Effect::error(Code::ResourceExhausted, "busy"),
    ));
    assert_eq!(
        version(&mut c).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    let err = c
        .machine
        .create_machine(machine::CreateMachineRequest {
            machine: Some(fixtures::machine()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(mock.machine_count(), 0, "a faulted call changes no state");
}

#[tokio::test]
async fn fault_probability_is_seeded() {
    let run = || async {
        let (_mock, mut c) = with_version_fault(
            Trigger::Probability { p: 0.3, seed: 99 },
            Effect::error(Code::Unavailable, "flaky"),
        )
        .await;
        let mut pattern = Vec::new();
        for _ in 0..50 {
            pattern.push(version(&mut c).await.is_ok());
        }
        pattern
    };
    let a = run().await;
    assert_eq!(a, run().await);
    let failures = a.iter().filter(|ok| !**ok).count();
    assert!((5..30).contains(&failures), "{failures} of 50");
}

#[tokio::test(start_paused = true)]
async fn fault_delay() {
    let (mock, mut c) =
        with_version_fault(Trigger::Always, Effect::Delay(Duration::from_secs(30))).await;
    let start = tokio::time::Instant::now();
    version(&mut c).await.unwrap();
    assert!(start.elapsed() >= Duration::from_secs(30));
    assert!(matches!(mock.calls()[0].fault, Some(Effect::Delay(_))));
    assert_eq!(mock.calls()[0].code, Some(Code::Ok));
}

#[tokio::test]
async fn fault_hang_until_cancelled() {
    let (mock, mut c) = with_version_fault(Trigger::FirstN(1), Effect::Hang).await;
    let mut req = tonic::Request::new(machine::VersionRequest::default());
    req.set_timeout(Duration::from_millis(200));
    let err = c.machine.version(req).await.unwrap_err();
    assert_eq!(err.code(), Code::Cancelled, "client deadline: {err:?}");
    // The server side sees the cancellation and records it.
    let mut seen = false;
    for _ in 0..100 {
        if mock.calls()[0].code == Some(Code::Cancelled) {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(seen, "{:?}", mock.calls());
    assert_eq!(mock.calls()[0].fault, Some(Effect::Hang));
    version(&mut c).await.unwrap();
}

#[tokio::test]
async fn fault_hang_ends_at_shutdown() {
    let (mock, mut c) = with_version_fault(Trigger::Always, Effect::Hang).await;
    let call = tokio::spawn(async move { version(&mut c).await });
    while mock.calls().is_empty() {
        tokio::task::yield_now().await;
    }
    mock.shutdown().await.unwrap();
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
}

#[rstest::rstest]
#[case::in_process(0)]
#[case::unix(1)]
#[case::tcp(2)]
#[tokio::test]
async fn fault_drop_connection(#[case] transport: u8) {
    let builder = MockRuntime::builder().fault(FaultRule::new(
        Method::MachineVersion,
        Trigger::Nth(2),
        Effect::DropConnection,
    ));
    let mock = match transport {
        0 => builder.start_in_process().await,
        1 => builder.start_unix_temp().await,
        _ => builder.start_tcp().await,
    }
    .unwrap();
    let mut c = Clients::new(&mock);
    version(&mut c).await.unwrap();
    let err = version(&mut c).await.unwrap_err();
    assert!(
        matches!(
            err.code(),
            Code::Unavailable | Code::Unknown | Code::Internal
        ),
        "transport error expected: {err:?}"
    );
    assert_eq!(mock.calls()[1].fault, Some(Effect::DropConnection));
    // The channel reconnects on a later call.
    let mut ok = false;
    for _ in 0..20 {
        if version(&mut c).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "no reconnect after the dropped connection");
}
