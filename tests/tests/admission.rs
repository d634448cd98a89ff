//! Admission webhooks end to end with the Rust example handler service and `operon run`
//! directly (the scenario of `sdk-python-compat/tests/test_e2e_admission.py`, which runs Kopf's
//! example 17 through `kopf run`): the core serves the webhooks over HTTPS with a generated
//! certificate and manages the two webhook configurations; the API server calls it for every
//! write of a widget; an invalid widget is refused with the handler's message and code, a valid
//! one is admitted and mutated; the dead handler service is answered per `ignore_failures`; the
//! webhook's TLS is trusted under the registered `caBundle` and refused under another CA.
//!
//! The webhook configurations are cluster-wide: each test names its own and scopes its webhooks
//! to its own widgets with a label (objectSelector), so that other tests on the plane are not
//! intercepted; the configurations are deleted at the end.

use std::time::Duration;

use futures_util::FutureExt as _;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use operon_e2e::pki::Pki;
use operon_e2e::{Stack, WidgetExt, wait_for, widget, with_widget_ns};
use serde_json::json;

const LABEL: &str = "admission-e2e";
const MUTATE: &str = "admission-e2e-mutate";

async fn delete_configurations(client: &Client, name: &str) {
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let _ = validating.delete(name, &DeleteParams::default()).await;
    let _ = mutating.delete(name, &DeleteParams::default()).await;
}

async fn webhook_count(client: &Client, name: &str) -> (usize, usize) {
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let v = validating.get_opt(name).await.ok().flatten();
    let m = mutating.get_opt(name).await.ok().flatten();
    (
        v.and_then(|v| v.webhooks).map_or(0, |w| w.len()),
        m.and_then(|m| m.webhooks).map_or(0, |w| w.len()),
    )
}

/// The webhook server's TLS as the API server meets it: a client that trusts the `caBundle` the
/// core registered connects (and gets an HTTP answer); one that trusts another CA is refused in
/// the handshake (curl's exit code 60: the peer's certificate cannot be authenticated).
fn webhook_tls_trusts_only_its_ca(ns: &str, url: &str, ca_bundle: &[u8]) {
    let pki = Pki::new(&format!("{ns}-webhook"));
    let ours = std::path::PathBuf::from(pki.path("ca.crt"));
    std::fs::write(&ours, ca_bundle).expect("writing the caBundle");
    pki.ca("other");
    let other = std::path::PathBuf::from(pki.path("other.crt"));
    let curl = |ca: &std::path::Path| {
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "-o", "/dev/null", "--cacert"])
            .arg(ca)
            .arg(url)
            .output()
            .expect("curl")
    };
    let trusted = curl(&ours);
    assert!(
        trusted.status.success(),
        "a client trusting the registered caBundle must connect to {url}: {trusted:?}"
    );
    let refused = curl(&other);
    assert_eq!(
        refused.status.code(),
        Some(60),
        "a client trusting another CA must be refused in the TLS handshake: {refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_serves_validate_and_mutate_handlers_of_a_rust_service() {
    with_widget_ns("e2e-admission", |client, ns| async move {
        let name = format!("{ns}.admission.operon.dev");
        let scope = format!("label={LABEL}={ns}");
        let validate = format!("validate:check,operations=CREATE|UPDATE,{scope}");
        let mutate = format!("mutate:inject,label={MUTATE}={ns}");
        let lenient = format!("validate:lenient,ignore_failures=true,{scope}");
        let mut stack = Stack::start(
            "admission",
            &client,
            &ns,
            &[&validate, &mutate, &lenient],
            &[
                "--admission-listen",
                "127.0.0.1:0",
                "--admission-managed",
                &name,
            ],
        )
        .await;
        let result = std::panic::AssertUnwindSafe(async {
            wait_for(
                "the webhook configurations",
                Duration::from_secs(60),
                || async {
                    let counts = webhook_count(&client, &name).await;
                    Ok::<_, ()>((counts == (2, 1)).then_some(()))
                },
            )
            .await;
            let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
            let config = validating.get(&name).await.expect("the configuration");
            let hooks = config.webhooks.unwrap_or_default();
            let check = hooks
                .iter()
                .find(|w| w.name == format!("check.{name}"))
                .expect("the webhook of `check`");
            assert_eq!(check.failure_policy.as_deref(), Some("Fail"));
            let url = check.client_config.url.clone().unwrap_or_default();
            assert!(
                url.starts_with("https://127.0.0.1:") && url.ends_with("/check"),
                "{url}"
            );
            let ca_bundle = check.client_config.ca_bundle.clone().expect("a caBundle").0;
            webhook_tls_trusts_only_its_ca(&ns, &url, &ca_bundle);
            let rules = check.rules.clone().unwrap_or_default();
            assert_eq!(rules[0].operations.clone().unwrap(), ["CREATE", "UPDATE"]);
            let lenient = hooks
                .iter()
                .find(|w| w.name == format!("lenient.{name}"))
                .expect("the webhook of `lenient`");
            assert_eq!(lenient.failure_policy.as_deref(), Some("Ignore"));

            // An invalid widget is refused by the API server with the handler's message and code.
            let bad =
                widget("bad", json!({"field": "not-allowed"})).with_labels(&[(LABEL, ns.as_str())]);
            match stack.api.create(&PostParams::default(), &bad).await {
                Err(kube::Error::Api(e)) => {
                    assert_eq!(e.code, 422, "{e:?}");
                    // Each webhook is called on its own: the first denial is `check`'s or
                    // `lenient`'s (both refuse the value).
                    assert!(
                        e.message
                            .contains(": spec.field may not be \"not-allowed\"."),
                        "{e:?}"
                    );
                }
                other => panic!("an invalid widget was not refused: {other:?}"),
            }
            assert!(stack.api.get_opt("bad").await.unwrap().is_none());
            // The denying handler's Event is posted about the refused object.
            let events: Api<k8s_openapi::api::core::v1::Event> =
                Api::namespaced(client.clone(), &ns);
            let mut posted = false;
            for _ in 0..50 {
                let list = events.list(&Default::default()).await.unwrap();
                posted = list.items.iter().any(|e| {
                    e.reason.as_deref() == Some("AdmissionDenied")
                        && e.involved_object.name.as_deref() == Some("bad")
                });
                if posted {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert!(posted, "the admission handler's Event is posted");

            // A valid one is admitted and mutated (the stored object has the mutation).
            let good = widget("good", json!({"field": "value"}))
                .with_labels(&[(LABEL, ns.as_str()), (MUTATE, ns.as_str())]);
            let created = stack
                .api
                .create(&PostParams::default(), &good)
                .await
                .expect("a valid widget is admitted");
            assert_eq!(
                created.data["spec"],
                json!({"field": "value", "injected": 123})
            );
            let stored = stack.api.get("good").await.unwrap();
            assert_eq!(stored.data["spec"]["injected"], 123);

            // An update to an invalid value is refused too; the stored object is unchanged.
            let refused = stack
                .api
                .patch(
                    "good",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"field": "not-allowed"}})),
                )
                .await;
            assert!(
                matches!(refused, Err(kube::Error::Api(ref e)) if e.code == 422),
                "{refused:?}"
            );
            assert_eq!(
                stack.api.get("good").await.unwrap().data["spec"]["field"],
                "value"
            );

            // Widgets without the label are not sent to these webhooks at all.
            let other = widget("unlabelled", json!({"field": "not-allowed"}));
            stack
                .api
                .create(&PostParams::default(), &other)
                .await
                .expect("an unlabelled widget is not reviewed");

            // The handler service dies: `check` (failures not ignored) denies with a message that
            // says so; `lenient` (ignore_failures) admits. (No mutation label: `inject` is not
            // called.)
            stack.handler.kill();
            let orphan =
                widget("orphan", json!({"field": "value"})).with_labels(&[(LABEL, ns.as_str())]);
            match stack.api.create(&PostParams::default(), &orphan).await {
                Err(kube::Error::Api(e)) => assert!(
                    e.message.contains("The admission handler \"check\" failed"),
                    "{e:?}"
                ),
                other => panic!("a widget was admitted without its handler service: {other:?}"),
            }
            let log = stack.core.log_plain();
            let failed = |id: &str, ignored: bool| {
                log.lines().any(|l| {
                    l.contains("Admission handler failed.")
                        && l.contains(&format!("handler={id} "))
                        && l.contains(&format!("ignored={ignored}"))
                })
            };
            assert!(failed("check", false), "the core log says why:\n{log}");
            assert!(
                failed("lenient", true),
                "a failure of `lenient` is ignored:\n{log}"
            );
            stack.core.assert_running();

            // On a graceful stop the core leaves only persistent webhooks (none here).
            stack
                .core
                .terminate(Duration::from_secs(30))
                .await
                .expect("the core stops");
            assert_eq!(webhook_count(&client, &name).await, (0, 0));
            for name in ["good", "unlabelled"] {
                let _ = stack.api.delete(name, &DeleteParams::default()).await;
            }
        })
        .catch_unwind()
        .await;
        delete_configurations(&client, &name).await;
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    })
    .await;
}
