//! The spans of the SDK's calls, which continue the core's trace in Jaeger: their names. In a
//! test binary of its own, because it installs a tracing subscriber: spans created by other
//! tests' threads at the same time would race with its callsite interest.

use std::sync::Arc;

use operon_handler::proto as pb;
use operon_handler::{
    Ctx, Desired, Finalized, HandlerError, HandlerResult, Operator, ServeConfig, SyncCtx,
    SyncOptions,
};
use pb::handler_service_client::HandlerServiceClient;
use serde_json::{Value, json};
use tonic::transport::Channel;

async fn noop(_: Ctx<Value>) -> HandlerResult {
    Ok(None)
}

async fn check(_: Ctx<Value>) -> HandlerResult {
    Err(HandlerError::deny("no", 403))
}

async fn sync_site(_: SyncCtx<Value>) -> Result<Desired, HandlerError> {
    Ok(Desired::new().status(json!({})))
}

async fn release(_: SyncCtx<Value>) -> Result<Finalized, HandlerError> {
    Ok(Finalized::done())
}

/// Records the span name (`otel.name`) of every span created while it is the default
/// subscriber.
#[derive(Clone, Default)]
struct SpanNames(Arc<std::sync::Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SpanNames {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct Name(Option<String>);
        impl tracing::field::Visit for Name {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if field.name() == "otel.name" {
                    self.0 = Some(value.to_owned());
                }
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "otel.name" {
                    self.0 = Some(format!("{value:?}").trim_matches('"').to_owned());
                }
            }
        }
        let mut name = Name(None);
        attrs.record(&mut name);
        if let Some(name) = name.0 {
            self.0.lock().unwrap().push(name);
        }
    }
}

/// The spans that continue the core's trace (exported to Jaeger) say which call and which
/// handler: `handler <id>` (change and admission handlers alike), `sync <id>`, `finalize <id>`.
#[tokio::test]
async fn calls_are_spans_named_after_the_call_and_the_id() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let names = SpanNames::default();
    // This test's runtime has one thread: the service's calls run on it, under this subscriber.
    let _default =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(names.clone()));
    let operator = Operator::new("svc")
        .on_create("widgets.example.com", noop)
        .on_validate("widgets.example.com", check)
        .sync_with(
            "sites.example.com",
            SyncOptions::new().id("sites").finalizer(release),
            sync_site,
        );
    // `start` installs no subscriber of its own.
    let local = ServeConfig::default().listen("127.0.0.1:0".parse().unwrap());
    let running = operator.start(local).await.expect("the service starts");
    let url = format!("http://{}", running.addr());
    let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
    HandlerServiceClient::new(channel.clone())
        .invoke(pb::InvokeRequest {
            handler_id: "noop".into(),
            reason: pb::Reason::Create as i32,
            body_json: br#"{"metadata": {"name": "w", "namespace": "ns"}}"#.to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    let denied = HandlerServiceClient::new(channel.clone())
        .invoke(pb::InvokeRequest {
            handler_id: "check".into(),
            body_json: br#"{"metadata": {"name": "w", "namespace": "ns"}}"#.to_vec(),
            attempt_id: "admission:r1:check".into(),
            admission: Some(pb::AdmissionCall {
                request_json: br#"{"uid": "r1", "operation": "CREATE"}"#.to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(denied.admission_code, Some(403));
    let mut syncs = pb::sync_service_client::SyncServiceClient::new(channel);
    let parent = pb::SyncRequest {
        sync_id: "sites".into(),
        parent_json: br#"{"metadata": {"name": "p"}}"#.to_vec(),
        ..Default::default()
    };
    syncs.sync(parent.clone()).await.unwrap();
    syncs
        .finalize(pb::SyncRequest {
            finalizing: true,
            ..parent
        })
        .await
        .unwrap();
    running.stop().await.unwrap();
    assert_eq!(
        *names.0.lock().unwrap(),
        [
            "handler noop",
            "handler check",
            "sync sites",
            "finalize sites"
        ]
    );
}
