//! Change handling's own tests: one cycle (or one changing cause) against a fake handler
//! service. The API server is unreachable (127.0.0.1:9): writes fail and are logged, so these
//! tests look at the calls, the cycle's patch (in `handle`) and the outputs.

use std::collections::VecDeque;
use std::sync::Mutex;

use kube::api::ApiResource;
use serde_json::json;

use super::*;
use crate::core::model::{Handler, HandlerKind, Options};
use crate::core::outcome::CallResult;
use crate::runtime::discovery::Served;
use crate::runtime::ports::{Answer, SubAnswer, SubResult};
use crate::runtime::ports::{Call, Error as DispatchError, HandlerPort as Dispatch};

/// A handler service that answers from a script and records what it was asked.
#[derive(Default)]
struct Fake {
    answers: Mutex<VecDeque<Answer>>,
    /// Handlers whose callback filters reject every object.
    rejecting: Vec<String>,
    calls: Mutex<Vec<Call>>,
    asked: Mutex<Vec<String>>,
}

#[tonic::async_trait]
impl Dispatch for Fake {
    fn name(&self) -> &str {
        "fake"
    }
    async fn describe(&self) -> Result<crate::runtime::ports::Manifest, DispatchError> {
        unimplemented!()
    }
    async fn invoke(&self, call: Call) -> Result<Answer, DispatchError> {
        self.calls.lock().unwrap().push(call);
        Ok(self
            .answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| answer(CallResult::Success(None))))
    }
    async fn matches(&self, call: Call) -> Result<bool, DispatchError> {
        self.asked.lock().unwrap().push(call.handler_id.clone());
        Ok(!self.rejecting.contains(&call.handler_id))
    }
}

fn answer(result: CallResult) -> Answer {
    Answer {
        result: Some(result),
        patch: None,
        subhandlers: Vec::new(),
        events: Vec::new(),
    }
}

impl Fake {
    fn called(&self) -> Vec<String> {
        let calls = self.calls.lock().unwrap();
        calls.iter().map(|c| c.handler_id.clone()).collect()
    }
}

fn context() -> Arc<Context> {
    Context::for_tests()
}

fn handler(id: &str, kind: HandlerKind) -> Handler {
    Handler {
        id: id.into(),
        kind,
        filters: Default::default(),
        has_callback_filters: false,
        options: Options::default(),
    }
}

fn resource(fake: &Arc<Fake>, handlers: Vec<Handler>) -> Arc<ResourceCtx> {
    let service = Arc::clone(fake) as Arc<dyn Dispatch>;
    Arc::new(ResourceCtx {
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
        handlers: handlers
            .into_iter()
            .map(|handler| Bound {
                handler,
                service: Arc::clone(&service),
            })
            .collect(),
        indexers: Vec::new(),
        extra_fields: Vec::new(),
    })
}

fn body() -> Value {
    json!({"apiVersion": "kopf.dev/v1", "kind": "KopfExample",
        "metadata": {"namespace": "ns", "name": "obj", "uid": "u1", "resourceVersion": "1"},
        "spec": {"field": 1}})
}

fn handling(ctx: &Arc<Context>) -> Handling {
    Handling {
        ctx: Arc::clone(ctx),
        timers: Timers::default(),
        daemons: Daemons::default(),
        indexing: Arc::new(Gate::new(0)),
    }
}

async fn cycle_of(ctx: &Arc<Context>, res: &Arc<ResourceCtx>, body: Value) -> Output {
    let input = Input {
        body: Arc::new(body),
        gone: false,
        events: Vec::new(),
        initial: false,
    };
    process(&handling(ctx), res, input).await
}

fn phase(ctx: &Context) -> Value {
    let objects = ctx.readmodel.objects();
    let [view] = objects.as_slice() else {
        panic!("one object in the read model: {objects:?}")
    };
    serde_json::to_value(&**view).unwrap()["phase"].clone()
}

/// Runs the changing cause `reason` of `body` through [`handle`]: the cycle's patch and outcome.
async fn handle_of(
    ctx: &Arc<Context>,
    res: &Arc<ResourceCtx>,
    body: &Value,
    reason: Reason,
) -> (Result<Handled, LoadError>, Value) {
    let essence = Essence::load(&ctx.settings.diffbase, &ctx.settings.progress, body, &[]).unwrap();
    let observed = Observed::of(body, &ctx.settings.finalizer, &essence, false);
    let view = observed.view(body, &essence);
    let log = Log { object: "ns/obj" };
    let cycle = CycleCtx {
        env: ctx,
        res,
        log: &log,
        body,
        now: Timestamp::now(),
        reason,
        essence: &essence,
    };
    let changing: Vec<&Bound> = res.handlers.iter().collect();
    let (mut predicted, mut patch) = (Arc::new(body.clone()), MergePatch::new());
    let handled = handle(&cycle, &changing, &view, &mut predicted, &mut patch).await;
    (handled, patch.into_value())
}

fn record(patch: &Value, id: &str) -> Value {
    let key = format!("kopf.zalando.org/{id}");
    let text = patch["metadata"]["annotations"][key.as_str()]
        .as_str()
        .unwrap_or_else(|| panic!("no record of {id} in {patch}"));
    serde_json::from_str(text).unwrap()
}

#[tokio::test]
async fn a_new_object_runs_its_creation_handlers_once_each_and_is_fully_handled() {
    let fake = Arc::new(Fake::default());
    fake.answers
        .lock()
        .unwrap()
        .push_back(answer(CallResult::Success(Some(json!({"made": 1})))));
    let ctx = context();
    let res = resource(
        &fake,
        vec![
            handler("create_fn", HandlerKind::Create),
            handler("update_fn", HandlerKind::Update),
            handler("other", HandlerKind::Create),
        ],
    );
    let out = cycle_of(&ctx, &res, body()).await;
    assert_eq!(fake.called(), ["create_fn", "other"]);
    assert!(out.fully_handled && out.delay.is_none());
    assert_eq!(phase(&ctx), "handled");
    let calls = fake.calls.lock().unwrap();
    assert_eq!(calls[0].reason, Some(Reason::Create));
    assert_eq!(calls[0].attempt_id.len(), 32);
    assert_eq!(calls[0].deadline, Duration::from_secs(60));
}

#[tokio::test]
async fn the_finalizer_comes_first_no_handler_runs_in_that_cycle() {
    let fake = Arc::new(Fake::default());
    let ctx = context();
    let res = resource(
        &fake,
        vec![
            handler("create_fn", HandlerKind::Create),
            handler("delete_fn", HandlerKind::Delete),
        ],
    );
    let out = cycle_of(&ctx, &res, body()).await;
    assert!(fake.called().is_empty());
    assert!(!out.fully_handled && out.delay.is_none());
    assert_eq!(phase(&ctx), "in-progress");
}

#[tokio::test]
async fn a_delete_handler_its_callback_filter_rejects_holds_no_finalizer() {
    let fake = Arc::new(Fake {
        rejecting: vec!["delete_fn".into()],
        ..Fake::default()
    });
    let ctx = context();
    let mut delete = handler("delete_fn", HandlerKind::Delete);
    delete.has_callback_filters = true;
    let res = resource(
        &fake,
        vec![handler("create_fn", HandlerKind::Create), delete],
    );
    let out = cycle_of(&ctx, &res, body()).await;
    assert_eq!(*fake.asked.lock().unwrap(), ["delete_fn"]);
    assert_eq!(
        fake.called(),
        ["create_fn"],
        "handled at once, no finalizer first"
    );
    assert!(out.fully_handled);
}

#[tokio::test]
async fn an_object_with_an_unreadable_diffbase_is_refused_and_shown_failed() {
    let fake = Arc::new(Fake::default());
    let ctx = context();
    let res = resource(&fake, vec![handler("create_fn", HandlerKind::Create)]);
    let mut body = body();
    body["metadata"]["annotations"] =
        json!({"kopf.zalando.org/last-handled-configuration": "{oops"});
    let out = cycle_of(&ctx, &res, body).await;
    assert!(fake.called().is_empty());
    assert!(out.fully_handled, "left alone: no retry of its own");
    assert_eq!(phase(&ctx), "failed");
}

#[tokio::test]
async fn handling_stores_records_and_results_and_waits_for_the_earliest_retry() {
    let fake = Arc::new(Fake::default());
    fake.answers.lock().unwrap().extend([
        answer(CallResult::Success(Some(json!({"made": 1})))),
        answer(CallResult::Temporary {
            message: "Not ready yet.".into(),
            delay: Some(Duration::from_secs(30)),
        }),
    ]);
    let ctx = context();
    let res = resource(
        &fake,
        vec![
            handler("a", HandlerKind::Create),
            handler("b", HandlerKind::Create),
        ],
    );
    let (handled, patch) = handle_of(&ctx, &res, &body(), Reason::Create).await;
    let handled = handled.unwrap();
    assert!(!handled.done);
    let delay = handled.delay.expect("b retries");
    // 30 seconds after b's call ended, counted from the cycle's start.
    assert!(delay >= Duration::from_secs(30) && delay < Duration::from_secs(31));
    assert_eq!(patch["status"], json!({"a": {"made": 1}}));
    assert_eq!(record(&patch, "a")["success"], true);
    let b = record(&patch, "b");
    assert_eq!(
        (b["retries"].clone(), b["message"].clone()),
        (json!(1), json!("Not ready yet."))
    );
    let states: Vec<&str> = handled.views.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(states, ["a", "b"]);
}

#[tokio::test]
async fn a_patch_that_changes_the_identity_is_refused_as_an_error_of_the_handler() {
    let fake = Arc::new(Fake::default());
    fake.answers.lock().unwrap().push_back(Answer {
        patch: Some(json!({"metadata": {"name": "renamed"}, "spec": {"x": 1}})),
        ..answer(CallResult::Success(None))
    });
    let ctx = context();
    let res = resource(&fake, vec![handler("a", HandlerKind::Create)]);
    let (handled, patch) = handle_of(&ctx, &res, &body(), Reason::Create).await;
    assert!(!handled.unwrap().done);
    assert!(
        patch.get("spec").is_none(),
        "nothing of the patch is applied: {patch}"
    );
    assert_eq!(
        record(&patch, "a")["message"],
        "The handler's patch is refused: it changes metadata.name"
    );
}

#[tokio::test]
async fn sub_handlers_are_recorded_under_their_parent_and_strangers_ignored() {
    let fake = Arc::new(Fake::default());
    let sub = |id: &str, result| SubAnswer {
        id: id.into(),
        result,
        options: Options::default(),
    };
    fake.answers.lock().unwrap().push_back(Answer {
        subhandlers: vec![
            sub("a/one", SubResult::Ran(CallResult::Success(Some(json!(1))))),
            sub("b/two", SubResult::Ran(CallResult::Success(None))),
        ],
        ..answer(CallResult::SubhandlersPending { delay: None })
    });
    let ctx = context();
    let res = resource(&fake, vec![handler("a", HandlerKind::Create)]);
    let (handled, patch) = handle_of(&ctx, &res, &body(), Reason::Create).await;
    let handled = handled.unwrap();
    assert!(!handled.done);
    assert_eq!(record(&patch, "a")["subrefs"], json!(["a/one"]));
    assert_eq!(record(&patch, "a.one")["success"], true);
    assert!(
        patch["metadata"]["annotations"]
            .get("kopf.zalando.org/b.two")
            .is_none()
    );
    assert_eq!(patch["status"], json!({"a/one": 1}));
    let ids: Vec<&str> = handled.views.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(ids, ["a", "a/one"]);
}

#[tokio::test]
async fn an_unreadable_progress_record_is_an_error_of_the_load() {
    let fake = Arc::new(Fake::default());
    let ctx = context();
    let res = resource(&fake, vec![handler("a", HandlerKind::Create)]);
    let mut body = body();
    body["metadata"]["annotations"] = json!({"kopf.zalando.org/a": "{oops"});
    let (handled, _) = handle_of(&ctx, &res, &body, Reason::Create).await;
    let Err(err) = handled else { panic!("refused") };
    assert!(matches!(err, LoadError::Progress { ref id, .. } if id == "a"));
    assert!(fake.called().is_empty());
}
