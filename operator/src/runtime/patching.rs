//! Writing a cycle's changes: the merge patch (status through `/status` when the resource has
//! that subresource, written first so that a crash in between re-runs rather than loses a
//! result), then the finalizer's JSON patch against the freshest body.

use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams};
use serde_json::Value;

use crate::core::finalizer;
use crate::core::patch::{self as writing, MergePatch, Refusal};
use crate::runtime::context::{Context, ResourceCtx};
use crate::runtime::kit::{self, status_code as code_of};

pub(crate) use crate::core::patch::Written;

/// Adding or removing our finalizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FinalizerAction {
    /// Block deletion.
    Add,
    /// Allow deletion.
    Remove,
}

fn api(env: &Context, res: &ResourceCtx, body: &Value) -> Api<DynamicObject> {
    kit::api_of(&env.client, &res.served, body)
}

/// `Api::patch` (or `patch_status`) with the answer read as plain JSON. A write needs only the
/// answer's resourceVersion, finalizers and deletion mark, and the patched fields for the
/// inconsistency check: parsing it into a typed `DynamicObject` (its `managedFields` alone are
/// most of that work) to serialize it back into JSON cost more CPU than the rest of the write
/// (`tests/bench/README.md`, issue 21).
async fn patch_json<P: serde::Serialize + std::fmt::Debug>(
    env: &Context,
    api: &Api<DynamicObject>,
    status: bool,
    name: &str,
    params: &PatchParams,
    patch: &Patch<P>,
) -> Result<Value, kube::Error> {
    let request = kube::core::Request::new(api.resource_url());
    let (built, verb) = if status {
        (
            request.patch_subresource("status", name, params, patch),
            "patch_status",
        )
    } else {
        (request.patch(name, params, patch), "patch")
    };
    let mut req = built.map_err(kube::Error::BuildRequest)?;
    req.extensions_mut().insert(verb);
    crate::telemetry::api_write("patch", env.client.request::<Value>(req)).await
}

/// Writes the patch and the finalizer change; returns what to wait for ([`Written`]).
///
/// # Errors
/// The API server's refusal. A vanished object (404) and a lost finalizer race (409/422) are
/// not errors: the next cycle sees the fresh state.
pub(crate) async fn write(
    env: &Context,
    res: &ResourceCtx,
    body: &Value,
    patch: MergePatch,
    finalizer_action: Option<FinalizerAction>,
) -> Result<Written, kube::Error> {
    env.active.fence().await;
    let name = kit::meta(body, "name");
    let object = match body.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    };
    let api = api(env, res, body);
    let params = PatchParams::default();
    let whole = patch.into_value();
    let split = writing::split(&whole, res.served.has_status);
    let secret = crate::core::handling::holds_secrets(body);
    let shown = |value: &Value| {
        if secret {
            crate::core::handling::SECRET_NOT_LOGGED.to_owned()
        } else {
            value.to_string()
        }
    };
    let mut fresh: Option<Value> = None;
    if let Some(status) = split.status {
        tracing::debug!(target: "kopf.objects", object = %object, "Merge-patching the status with: {}", shown(&status));
        match ignore_gone(
            patch_json(env, &api, true, name, &params, &Patch::Merge(&status)).await,
            env,
            "patch",
        )? {
            Some(obj) => fresh = Some(obj),
            None => return Ok(Written::Nothing),
        }
    }
    if let Some(main) = split.main {
        tracing::debug!(target: "kopf.objects", object = %object, "Merge-patching the resource with: {}", shown(&main));
        match ignore_gone(
            patch_json(env, &api, false, name, &params, &Patch::Merge(&main)).await,
            env,
            "patch",
        )? {
            Some(obj) => fresh = Some(obj),
            None => return Ok(Written::Nothing),
        }
    }
    if let Some(result) = &fresh {
        let lost = writing::inconsistencies(&whole, result);
        if !lost.is_empty() {
            tracing::warn!(target: "kopf.objects", object = %object, "Merge-patching finished with inconsistencies: {}", shown(&crate::core::persistence::diff::to_value(&lost)));
        }
    }
    if let Some(action) = finalizer_action {
        let current = fresh.as_ref().unwrap_or(body);
        let ops = match action {
            FinalizerAction::Add => finalizer::block_deletion(current, &env.settings.finalizer),
            FinalizerAction::Remove => finalizer::allow_deletion(current, &env.settings.finalizer),
        };
        if let Some(ops) = ops {
            tracing::debug!(target: "kopf.objects", object = %object, "JSON-patching the resource with: {ops}");
            let ops: json_patch::Patch =
                serde_json::from_value(ops).map_err(kube::Error::SerdeError)?;
            let json = Patch::<()>::Json(ops);
            match patch_json(env, &api, false, name, &params, &json).await {
                Ok(obj) => {
                    env.metrics.api("patch", 200);
                    let deleting = obj
                        .pointer("/metadata/deletionTimestamp")
                        .is_some_and(|t| !t.is_null());
                    let remaining = obj
                        .pointer("/metadata/finalizers")
                        .and_then(Value::as_array)
                        .is_some_and(|f| !f.is_empty());
                    if writing::released(deleting, remaining) {
                        // The object is gone with this write; its resourceVersion never arrives.
                        return Ok(Written::Released);
                    }
                    fresh = Some(obj);
                }
                Err(err) if writing::finalizer_refused(code_of(&err)) == Refusal::LostRace => {
                    env.metrics.api("patch", code_of(&err));
                    tracing::debug!(object = name, error = %err, "The finalizer patch lost a race; the next cycle retries.");
                    return Ok(Written::Nothing);
                }
                Err(err) => {
                    env.metrics.api("patch", code_of(&err));
                    return Err(err);
                }
            }
        }
    }
    Ok(writing::written(fresh.and_then(|o| {
        o.pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_owned)
    })))
}

/// A write that got no answer the server meant — no response at all (unreachable, cut, timed
/// out), a server error (5xx) or too many requests (429) — is worth sending again as it is.
pub(crate) fn unanswered(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Service(_) | kube::Error::HyperError(_))
        || matches!(code_of(err), 429 | 500..=599)
}

fn ignore_gone(
    result: Result<Value, kube::Error>,
    env: &Context,
    verb: &'static str,
) -> Result<Option<Value>, kube::Error> {
    match result {
        Ok(obj) => {
            env.metrics.api(verb, 200);
            Ok(Some(obj))
        }
        Err(err) if writing::merge_refused(code_of(&err)) == Refusal::Gone => {
            env.metrics.api(verb, 404);
            Ok(None)
        }
        Err(err) => {
            env.metrics.api(verb, code_of(&err));
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            ..Default::default()
        }))
    }

    #[test]
    fn only_unanswered_writes_are_sent_again() {
        assert!(unanswered(&kube::Error::Service(
            "client error (Connect)".into()
        )));
        assert!(unanswered(&api(503)));
        assert!(unanswered(&api(429)));
        for refused in [400, 403, 404, 409, 422] {
            assert!(!unanswered(&api(refused)), "{refused} is an answer");
        }
    }
}
