//! Admission handlers over the SDK's gRPC edge, called the way the core calls them (`Invoke`
//! with `admission` set, as `operator/src/runtime/admission.rs` sends it): allowed, denied with
//! a message and a code, other errors, a mutation's patch, warnings, the review's fields,
//! callback filters, the attempt cache, and calls that make no sense.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use operon_handler::proto as pb;
use operon_handler::{
    Call, Ctx, HandlerError, HandlerOptions, HandlerResult, Operation, Operator, Running,
};
use pb::handler_service_client::HandlerServiceClient;
use serde_json::{Value, json};
use tonic::transport::Channel;

mod common;

async fn start(operator: Operator) -> (Running, HandlerServiceClient<Channel>) {
    let (running, channel) = common::start(operator).await;
    (running, HandlerServiceClient::new(channel))
}

fn widget(size: u32) -> Value {
    json!({
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": "ns"},
        "spec": {"size": size},
    })
}

/// An `Invoke` of admission handler `id` for a review of `operation` on `object` (replacing
/// `old`, if any), as the core makes it.
fn review(
    id: &str,
    operation: &str,
    object: Option<Value>,
    old: Option<Value>,
    extra: Value,
) -> pb::InvokeRequest {
    let mut request = json!({
        "uid": "r1",
        "kind": {"group": "example.com", "version": "v1", "kind": "Widget"},
        "resource": {"group": "example.com", "version": "v1", "resource": "widgets"},
        "operation": operation,
        "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
        "name": "w",
        "namespace": "ns",
        "dryRun": false,
        "object": object,
        "oldObject": old,
    });
    if let (Some(request), Value::Object(extra)) = (request.as_object_mut(), extra) {
        request.extend(extra);
    }
    let body = object.clone().or_else(|| old.clone()).unwrap();
    pb::InvokeRequest {
        handler_id: id.into(),
        body_json: body.to_string().into_bytes(),
        old_json: old.map(|o| o.to_string().into_bytes()).unwrap_or_default(),
        new_json: object
            .map(|o| o.to_string().into_bytes())
            .unwrap_or_default(),
        diff_json: b"[]".to_vec(),
        attempt_id: format!("admission:r1:{id}"),
        admission: Some(pb::AdmissionCall {
            request_json: request.to_string().into_bytes(),
            headers: [(
                "user-agent".to_owned(),
                "kube-apiserver-admission".to_owned(),
            )]
            .into(),
            sslpeer_json: Vec::new(),
        }),
        ..Default::default()
    }
}

fn create(id: &str, size: u32) -> pb::InvokeRequest {
    let mut request = review(id, "CREATE", Some(widget(size)), None, json!({}));
    // Each review has its own uid, so its own attempt id.
    request.attempt_id = format!("admission:size-{size}:{id}");
    request
}

fn result(response: &pb::InvokeResponse) -> &pb::outcome::Result {
    response
        .outcome
        .as_ref()
        .and_then(|o| o.result.as_ref())
        .expect("an outcome")
}

#[derive(serde::Deserialize)]
struct Widget {
    spec: Spec,
}

#[derive(serde::Deserialize)]
struct Spec {
    size: u32,
}

async fn check_size(ctx: Ctx<Widget>) -> HandlerResult {
    let admission = ctx.admission().expect("a review");
    ctx.warn(format!("checked for {}", admission.user_info().username));
    match ctx.object().spec.size {
        13 => Err("unlucky size")?,
        99 => Err(HandlerError::deny("never 99", 0)),
        size if size > 10 => Err(HandlerError::deny(format!("size {size} is over 10"), 422)),
        _ => Ok(Some(json!("ignored"))),
    }
}

#[tokio::test]
async fn validate_handlers_allow_and_deny_with_a_message_and_a_code() {
    let (running, mut client) =
        start(Operator::new("webhooks").on_validate("widgets.example.com", check_size)).await;
    let allowed = client
        .invoke(create("check_size", 3))
        .await
        .unwrap()
        .into_inner();
    assert!(
        matches!(result(&allowed), pb::outcome::Result::Success(_)),
        "{allowed:?}"
    );
    assert_eq!(allowed.admission_code, None);
    assert_eq!(allowed.warnings, ["checked for alice"]);
    assert!(allowed.patch_json.is_empty());

    let denied = client
        .invoke(create("check_size", 20))
        .await
        .unwrap()
        .into_inner();
    let pb::outcome::Result::PermanentError(error) = result(&denied) else {
        panic!("not denied: {denied:?}");
    };
    assert_eq!(error.message, "size 20 is over 10");
    assert_eq!(denied.admission_code, Some(422));
    assert_eq!(
        denied.warnings,
        ["checked for alice"],
        "warnings go with a denial too"
    );

    // Code 0 is Kopf's default, 500.
    let never = client
        .invoke(create("check_size", 99))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(never.admission_code, Some(500));

    // Any other error denies too, without a code of its own (the core answers 500).
    let other = client
        .invoke(create("check_size", 13))
        .await
        .unwrap()
        .into_inner();
    let pb::outcome::Result::ArbitraryError(error) = result(&other) else {
        panic!("not an arbitrary error: {other:?}");
    };
    assert_eq!(error.message, "unlucky size");
    assert_eq!(other.admission_code, None);
    running.stop().await.unwrap();
}

async fn default_size(ctx: Ctx<Value>) -> HandlerResult {
    let admission = ctx.admission().expect("a review");
    ctx.warn(format!(
        "{} subresource={:?} dry_run={} user={} agent={:?} old={} new={}",
        admission.operation(),
        admission.subresource(),
        admission.dry_run(),
        admission.user_info().username,
        admission.headers().get("user-agent"),
        ctx.old().is_some(),
        ctx.new().is_some(),
    ));
    if ctx.body()["spec"]["size"].is_null() {
        ctx.patch(json!({"spec": {"size": 1}}));
        ctx.patch(json!({"metadata": {"labels": {"defaulted": "yes"}}}));
    }
    Ok(None)
}

#[tokio::test]
async fn mutate_handlers_answer_their_patch_and_see_the_review() {
    let operator = Operator::new("webhooks").on_mutate_with(
        "widgets.example.com",
        HandlerOptions::new()
            .operations([Operation::Create, Operation::Update])
            .subresource("*"),
        default_size,
    );
    let (running, mut client) = start(operator).await;
    let mut unsized_widget = widget(0);
    unsized_widget["spec"] = json!({});
    let update = review(
        "default_size",
        "UPDATE",
        Some(unsized_widget),
        Some(widget(2)),
        json!({"subResource": "status", "dryRun": true}),
    );
    let mutated = client.invoke(update).await.unwrap().into_inner();
    assert!(
        matches!(result(&mutated), pb::outcome::Result::Success(_)),
        "{mutated:?}"
    );
    let patch: Value = serde_json::from_slice(&mutated.patch_json).unwrap();
    assert_eq!(
        patch,
        json!({"spec": {"size": 1}, "metadata": {"labels": {"defaulted": "yes"}}})
    );
    assert_eq!(
        mutated.warnings,
        [
            "UPDATE subresource=Some(\"status\") dry_run=true user=alice \
             agent=Some(\"kube-apiserver-admission\") old=true new=true"
        ]
    );
    // On DELETE the object under review is the old one; there is no new one.
    let delete = pb::InvokeRequest {
        attempt_id: "admission:r2:default_size".into(),
        ..review(
            "default_size",
            "DELETE",
            None,
            Some(widget(2)),
            json!({"uid": "r2"}),
        )
    };
    let deleted = client.invoke(delete).await.unwrap().into_inner();
    assert!(deleted.patch_json.is_empty());
    assert!(
        deleted.warnings[0].starts_with("DELETE subresource=None dry_run=false"),
        "{deleted:?}"
    );
    assert!(deleted.warnings[0].ends_with("old=true new=false"));
    running.stop().await.unwrap();
}

#[tokio::test]
async fn admission_calls_use_the_attempt_cache_and_callback_filters() {
    let runs = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&runs);
    let operator = Operator::new("webhooks")
        .on_validate_with(
            "widgets.example.com",
            HandlerOptions::new()
                .id("count")
                .when(|call: &Call<Widget>| call.object().spec.size < 50),
            move |ctx: Ctx<Value>| {
                let runs = Arc::clone(&counted);
                async move {
                    let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                    ctx.warn(format!("run {n}"));
                    Ok(None)
                }
            },
        )
        .on_create("widgets.example.com", check_size);
    let (running, mut client) = start(operator).await;
    // The core sends the same attempt id for the same review and handler: one run.
    let first = client
        .invoke(create("count", 1))
        .await
        .unwrap()
        .into_inner();
    let again = client
        .invoke(create("count", 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again);
    assert_eq!(first.warnings, ["run 1"]);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let other = client
        .invoke(create("count", 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(other.warnings, ["run 2"]);

    // A `when` that says no: not matched, the handler does not run.
    let skipped = client
        .invoke(create("count", 60))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        result(&skipped),
        pb::outcome::Result::NotMatched(_)
    ));
    assert!(skipped.warnings.is_empty());
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    // Calls that make no sense are transport errors that say why.
    let without_review = client
        .invoke(pb::InvokeRequest {
            admission: None,
            ..create("count", 3)
        })
        .await
        .unwrap_err();
    assert_eq!(without_review.code(), tonic::Code::InvalidArgument);
    assert!(
        without_review
            .message()
            .contains("is a validate handler: it is called with an admission review"),
        "{without_review:?}"
    );
    let to_a_create_handler = client.invoke(create("check_size", 3)).await.unwrap_err();
    assert_eq!(to_a_create_handler.code(), tonic::Code::InvalidArgument);
    assert!(
        to_a_create_handler
            .message()
            .contains("not an admission (validate/mutate) handler"),
        "{to_a_create_handler:?}"
    );
    let unknown_operation = client
        .invoke(review("count", "PATCH", Some(widget(1)), None, json!({})))
        .await
        .unwrap_err();
    assert_eq!(unknown_operation.code(), tonic::Code::InvalidArgument);
    assert!(
        unknown_operation
            .message()
            .contains("unknown operation \"PATCH\"")
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    running.stop().await.unwrap();
}
