//! The scripted handlers on the SDK: change, field, event and timer handlers run what
//! `spec.behaviour.<handler id>` says (see [`crate::behaviour`]); admission handlers check and
//! mutate `spec.field`/`spec.injected`. Every run is a ledger line.

use operon_handler::{Call, Ctx, EventType, HandlerError, HandlerResult, Reason, SubhandlerState};
use serde_json::Value;

use crate::behaviour::{self, Behaviour, Verdict};
use crate::ledger::{Execution, Ledger, ObjectIdentity};

/// The error type of [`Verdict::Arbitrary`] (Kopf's exception class).
const ARBITRARY: &str = behaviour::ARBITRARY_ERROR_TYPE;

/// The ledger's view of a call: which handler, object, cause and attempt.
pub fn execution<K>(call: &Call<K>) -> Execution {
    Execution {
        handler: call.handler_id().to_owned(),
        object: ObjectIdentity::from_body(call.body()),
        reason: call.reason().map_or("unspecified", Reason::as_str),
        retry: call.retry(),
        event_type: call.watch_event().unwrap_or_default().to_owned(),
        attempt_id: call.attempt_id().to_owned(),
    }
}

/// A change, field, event or timer handler: its behaviour, then (if it succeeded) its
/// sub-handlers, each run by the SDK only while it is due.
pub async fn scripted(ctx: Ctx<Value>, ledger: Ledger) -> HandlerResult {
    let pending = ledger.start(execution(&ctx));
    let behaviour = match behaviour::behaviour_for(ctx.body(), ctx.handler_id()) {
        Ok(behaviour) => behaviour,
        // A script error is the handler's failure, visible on the object.
        Err(message) => {
            finish(pending, "permanent")?;
            return Err(HandlerError::permanent(message));
        }
    };
    let verdict = run(&ctx, &behaviour).await;
    let mut unfinished = false;
    if matches!(verdict, Verdict::Success(_)) {
        for (name, sub) in &behaviour.subhandlers {
            let ledger = ledger.clone();
            let state = ctx
                .subhandler(name, |sub_ctx| async move {
                    let pending = ledger.start(execution(&sub_ctx));
                    let verdict = run(&sub_ctx, sub).await;
                    finish(pending, verdict.ledger_name())?;
                    answer(verdict)
                })
                .await;
            unfinished |= state == SubhandlerState::Pending;
        }
    }
    // The SDK answers "sub-handlers pending" while any is unfinished; the ledger says so too.
    let outcome = if unfinished {
        "subhandlers_pending"
    } else {
        verdict.ledger_name()
    };
    finish(pending, outcome)?;
    answer(verdict)
}

/// One handler's (or sub-handler's) own body: sleep, then the verdict for its retry, with its
/// patch and Event when it ran.
async fn run(ctx: &Ctx<Value>, behaviour: &Behaviour) -> Verdict {
    if let Some(sleep) = behaviour.sleep {
        tokio::time::sleep(sleep).await;
    }
    let verdict = behaviour.verdict(ctx.retry());
    if verdict != Verdict::NoOutcome {
        if let Some(patch) = &behaviour.patch {
            ctx.patch(patch.clone());
        }
        if let Some(event) = &behaviour.event {
            let type_ = match event.event_type.as_str() {
                "Warning" => EventType::Warning,
                "Error" => EventType::Error,
                _ => EventType::Normal,
            };
            ctx.event(type_, &event.reason, &event.message);
        }
    }
    verdict
}

/// The verdict as the handler's answer. The contract breaches (`break_contract`,
/// `invalid_patch`) are answered by [`crate::faults`] before the SDK sees the call; here they
/// can only come from a sub-handler, where the SDK cannot break the contract.
fn answer(verdict: Verdict) -> HandlerResult {
    match verdict {
        Verdict::Success(result) => Ok(result),
        Verdict::Temporary { message, delay } => Err(HandlerError::temporary_after(message, delay)),
        Verdict::Permanent { message } => Err(HandlerError::permanent(message)),
        Verdict::Arbitrary { message, .. } => Err(HandlerError::Other {
            error_type: ARBITRARY.to_owned(),
            error: message.into(),
        }),
        Verdict::NoOutcome => Err(HandlerError::permanent(
            "break_contract works for handlers, not sub-handlers (the SDK keeps the contract)",
        )),
    }
}

/// Ends a ledger entry; a ledger that cannot be written fails the call (retried).
fn finish(pending: crate::ledger::Pending, outcome: &str) -> Result<(), HandlerError> {
    pending
        .finish(outcome)
        .map_err(|error| HandlerError::Other {
            error_type: "LedgerError".to_owned(),
            error: format!("cannot write the ledger: {error}").into(),
        })
}

/// An admission handler (`validate:ID` / `mutate:ID`): a validate handler denies an object whose
/// `spec.field` is `"not-allowed"` (code 422, with a Warning Event `AdmissionDenied`); a mutate
/// handler sets `spec.injected` to 123. Both add a warning naming themselves. A pure function of
/// the object.
pub async fn admit(ctx: Ctx<Value>, mutate: bool) -> HandlerResult {
    let id = ctx.handler_id().to_owned();
    ctx.warn(format!("{id}: checked by the Rust example."));
    let field = ctx.body().pointer("/spec/field").and_then(Value::as_str);
    if !mutate && field == Some("not-allowed") {
        ctx.event(
            EventType::Warning,
            "AdmissionDenied",
            &format!("{id}: refused spec.field \"not-allowed\"."),
        );
        return Err(HandlerError::deny(
            format!("{id}: spec.field may not be \"not-allowed\"."),
            422,
        ));
    }
    if mutate {
        ctx.patch(serde_json::json!({"spec": {"injected": 123}}));
    }
    Ok(None)
}
