//! The daemons' runs against a fake handler service, on the paused clock.
use std::collections::VecDeque;

use kube::api::ApiResource;

use super::*;
use crate::core::model::{Handler, HandlerKind, Options};
use crate::runtime::discovery::Served;
use crate::runtime::ports::{Answer, DaemonOutput, DaemonOutputs, HandlerPort, Manifest};

/// What the fake service's daemon does in one call.
#[derive(Debug, Clone, Copy)]
enum Script {
    /// Exits at once with this outcome.
    Exit(fn() -> CallResult),
    /// Runs until a stop of this force (or never), then ends without an outcome.
    UntilStop(Option<bool>),
}

/// Per call of the fake: its retry, and what came down the call at what (paused) time.
type Calls = Arc<Mutex<Vec<(u32, Vec<(String, Instant)>)>>>;

#[derive(Default)]
struct Fake {
    scripts: Mutex<VecDeque<Script>>,
    calls: Calls,
}

#[tonic::async_trait]
impl HandlerPort for Fake {
    fn name(&self) -> &str {
        "fake"
    }
    async fn describe(&self) -> Result<Manifest, DispatchError> {
        unimplemented!()
    }
    async fn invoke(&self, _: Call) -> Result<Answer, DispatchError> {
        unimplemented!()
    }
    async fn daemon(
        &self,
        call: Call,
        mut inputs: mpsc::Receiver<DaemonInput>,
    ) -> Result<DaemonOutputs, DispatchError> {
        let script = self
            .scripts
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Script::UntilStop(None));
        let calls = Arc::clone(&self.calls);
        let index = {
            let mut calls = calls.lock().unwrap();
            calls.push((call.retry, Vec::new()));
            calls.len() - 1
        };
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(async move {
            match script {
                Script::Exit(result) => {
                    let _ = tx
                        .send(Ok(DaemonOutput {
                            patch: None,
                            events: Vec::new(),
                            exit: Some(Some(result())),
                        }))
                        .await;
                }
                Script::UntilStop(on) => {
                    while let Some(input) = inputs.recv().await {
                        let (text, force) = match input {
                            DaemonInput::Body(_) => ("body".to_owned(), None),
                            DaemonInput::Stop { reason, force } => {
                                (format!("stop {reason:?} force={force}"), Some(force))
                            }
                        };
                        calls.lock().unwrap()[index].1.push((text, Instant::now()));
                        if force.is_some() && force == on {
                            return; // ends the call without an outcome
                        }
                    }
                }
            }
            drop(tx);
        });
        Ok(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed())
    }
}

fn env() -> Arc<Context> {
    Context::for_tests()
}

fn bound(fake: &Arc<Fake>, options: Options) -> (Arc<ResourceCtx>, Bound) {
    let bound = Bound {
        handler: Handler {
            id: "d1".into(),
            kind: HandlerKind::Daemon,
            filters: Default::default(),
            has_callback_filters: false,
            options,
        },
        service: Arc::clone(fake) as Arc<dyn HandlerPort>,
    };
    let res = Arc::new(ResourceCtx {
        served: Served {
            resource: ApiResource {
                group: "kopf.dev".into(),
                version: "v1".into(),
                api_version: "kopf.dev/v1".into(),
                kind: "KopfExample".into(),
                plural: "kopfexamples".into(),
            },
            namespaced: true,
            has_status: false,
        },
        handlers: vec![bound.clone()],
        indexers: Vec::new(),
        extra_fields: Vec::new(),
    });
    (res, bound)
}

fn body() -> Arc<Value> {
    Arc::new(json!({"metadata": {"namespace": "ns", "name": "obj", "uid": "u1"}}))
}

/// Lets the spawned tasks run on the paused clock for `d`.
async fn pass(d: Duration) {
    tokio::time::sleep(d).await;
}

#[tokio::test(start_paused = true)]
async fn temporary_errors_restart_it_with_a_higher_retry_and_success_ends_it_for_good() {
    let fake = Arc::new(Fake::default());
    fake.scripts.lock().unwrap().extend([
        Script::Exit(|| CallResult::Temporary {
            message: "later".into(),
            delay: Some(Duration::from_secs(5)),
        }),
        Script::Exit(|| CallResult::Arbitrary {
            message: "boom".into(),
        }),
        Script::Exit(|| CallResult::Success(None)),
    ]);
    let (env, (res, bound)) = (env(), bound(&fake, Options::default()));
    let daemons = Daemons::default();
    let body = body();
    daemons.sync(&env, &res, &body, &[&bound]);
    pass(Duration::from_secs(4)).await;
    assert_eq!(fake.calls.lock().unwrap().len(), 1, "the delay is kept");
    pass(Duration::from_secs(2)).await;
    assert_eq!(fake.calls.lock().unwrap().len(), 2);
    pass(Duration::from_secs(61)).await; // the default backoff of an arbitrary error
    let retries: Vec<u32> = fake.calls.lock().unwrap().iter().map(|c| c.0).collect();
    assert_eq!(retries, vec![0, 1, 2]);
    assert_eq!(env.metrics.daemons_running(), 0);
    // Ended for good: another cycle does not start it again.
    daemons.sync(&env, &res, &body, &[&bound]);
    pass(Duration::from_secs(5)).await;
    assert_eq!(fake.calls.lock().unwrap().len(), 3);
    assert!(!daemons.stop_object(&res, &body));
}

#[tokio::test(start_paused = true)]
async fn stopping_sets_the_flag_then_cancels_after_the_backoff_and_holds_until_the_exit() {
    let fake = Arc::new(Fake::default());
    fake.scripts
        .lock()
        .unwrap()
        .push_back(Script::UntilStop(Some(true)));
    let options = Options {
        cancellation_backoff: Some(Duration::from_secs(2)),
        cancellation_timeout: Some(Duration::from_secs(10)),
        ..Options::default()
    };
    let (env, (res, bound)) = (env(), bound(&fake, options));
    let daemons = Daemons::default();
    let body = body();
    daemons.sync(&env, &res, &body, &[&bound]);
    pass(Duration::from_secs(1)).await;
    assert_eq!(env.metrics.daemons_running(), 1);
    let fresh = Arc::new(
        json!({"metadata": {"namespace": "ns", "name": "obj", "uid": "u1"}, "spec": {"x": 1}}),
    );
    daemons.sync(&env, &res, &fresh, &[&bound]);
    pass(Duration::from_millis(10)).await;
    assert!(daemons.stop_object(&res, &body), "it is still exiting");
    pass(Duration::from_secs(1)).await;
    assert!(
        daemons.stop_object(&res, &body),
        "the flag alone does not stop it"
    );
    pass(Duration::from_secs(2)).await;
    assert!(
        !daemons.stop_object(&res, &body),
        "cancelled, it has exited"
    );
    let calls = fake.calls.lock().unwrap().clone();
    let seen: Vec<&str> = calls[0].1.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        seen,
        [
            "body",
            "stop ResourceDeleted force=false",
            "stop ResourceDeleted force=true"
        ]
    );
    let (graceful, forced) = (calls[0].1[1].1, calls[0].1[2].1);
    assert_eq!(forced - graceful, Duration::from_secs(2));
    // Deleted, it is not started again.
    assert_eq!(calls.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn without_a_cancellation_timeout_it_is_never_cancelled_and_the_deletion_waits() {
    let fake = Arc::new(Fake::default());
    fake.scripts
        .lock()
        .unwrap()
        .push_back(Script::UntilStop(Some(true)));
    let options = Options {
        cancellation_backoff: Some(Duration::from_secs(1)),
        ..Options::default()
    };
    let (env, (res, bound)) = (env(), bound(&fake, options));
    let daemons = Daemons::default();
    let body = body();
    daemons.sync(&env, &res, &body, &[&bound]);
    pass(Duration::from_secs(1)).await;
    assert!(daemons.stop_object(&res, &body));
    pass(Duration::from_secs(600)).await;
    assert!(daemons.stop_object(&res, &body), "still waited for");
    let calls = fake.calls.lock().unwrap().clone();
    let seen: Vec<&str> = calls[0].1.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(seen, ["stop ResourceDeleted force=false"]);
}

#[tokio::test(start_paused = true)]
async fn a_daemon_that_ignores_every_stop_is_abandoned_after_the_cancellation_timeout() {
    let fake = Arc::new(Fake::default());
    let options = Options {
        cancellation_timeout: Some(Duration::from_secs(3)),
        ..Options::default()
    };
    let (env, (res, bound)) = (env(), bound(&fake, options));
    let daemons = Daemons::default();
    let body = body();
    daemons.sync(&env, &res, &body, &[&bound]);
    pass(Duration::from_secs(1)).await;
    assert!(daemons.stop_object(&res, &body));
    pass(Duration::from_secs(2)).await;
    assert!(daemons.stop_object(&res, &body));
    pass(Duration::from_secs(2)).await;
    assert!(!daemons.stop_object(&res, &body), "abandoned");
    let calls = fake.calls.lock().unwrap().clone();
    let seen: Vec<&str> = calls[0].1.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        seen,
        [
            "stop ResourceDeleted force=false",
            "stop ResourceDeleted force=true"
        ],
        "no backoff: cancelled at once"
    );
}

#[tokio::test(start_paused = true)]
async fn filters_that_stop_matching_stop_it_and_matching_again_starts_it_again() {
    let fake = Arc::new(Fake::default());
    fake.scripts.lock().unwrap().extend([
        Script::UntilStop(Some(false)),
        Script::UntilStop(Some(false)),
    ]);
    let (env, (res, bound)) = (env(), bound(&fake, Options::default()));
    let daemons = Daemons::default();
    let body = body();
    daemons.sync(&env, &res, &body, &[&bound]);
    pass(Duration::from_secs(1)).await;
    daemons.sync(&env, &res, &body, &[]);
    pass(Duration::from_secs(1)).await;
    daemons.sync(&env, &res, &body, &[&bound]);
    pass(Duration::from_secs(1)).await;
    let calls = fake.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].1[0].0, "stop FiltersMismatch force=false");
    daemons.stop_all(Duration::from_secs(5)).await;
    assert_eq!(env.metrics.daemons_running(), 0);
    let calls = fake.calls.lock().unwrap().clone();
    assert_eq!(calls[1].1[0].0, "stop OperatorExiting force=false");
}
