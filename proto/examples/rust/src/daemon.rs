//! Daemons (`--handler daemon:ID`), on the SDK, scripted by `spec.behaviour.<handler id>`.
//!
//! The script (all keys optional):
//! - `fail_temporarily: N` — while `retry < N`, exit at once with a temporary error (1 s delay);
//! - `tick: SECONDS` (default 0.5) — every tick, patch
//!   `status.<id> = {"ticks": n, "seen": <spec.value of the latest body>, "retry": r}`, which shows
//!   that the daemon sees the object live and that its patches are applied;
//! - `exit_after: N` — exit successfully after N ticks;
//! - `linger: SECONDS` — when asked to stop, keep running this long before exiting (to show that
//!   the core holds the finalizer until the daemon has exited).
//!
//! A graceful stop ends the daemon with success; a forced stop cancels it (the SDK drops it). The
//! ledger gets one line when the daemon starts (`started`) and one when it ends (`success`,
//! `temporary`, `stopped`, `cancelled`).

use std::time::Duration;

use operon_handler::{DaemonCtx, HandlerError};
use serde_json::{Value, json};

use crate::ledger::{Execution, Ledger, ObjectIdentity};

/// Runs one daemon until its script ends it or the core stops it.
pub async fn run(ctx: DaemonCtx<Value>, ledger: Ledger) -> Result<(), HandlerError> {
    let id = ctx.handler_id().to_owned();
    let body = ctx.body();
    let execution = Execution {
        handler: id.clone(),
        object: ObjectIdentity::from_body(&body),
        reason: "daemon",
        retry: ctx.retry(),
        attempt_id: ctx.attempt_id().to_owned(),
        ..Execution::default()
    };
    let script = body["spec"]["behaviour"][&id].clone();
    note(&ledger, &execution, "started");
    if u64::from(ctx.retry()) < script["fail_temporarily"].as_u64().unwrap_or(0) {
        note(&ledger, &execution, "temporary");
        return Err(HandlerError::temporary_after(
            "Simulated failure.",
            Duration::from_secs(1),
        ));
    }
    let seconds = |key: &str, default: f64, least: f64| {
        Duration::from_secs_f64(script[key].as_f64().unwrap_or(default).max(least))
    };
    let (tick, linger) = (seconds("tick", 0.5, 0.05), seconds("linger", 0.0, 0.0));
    let exit_after = script["exit_after"].as_u64();
    // Dropped by a forced stop before it is ended: the ledger then says `cancelled`.
    let pending = ledger.start(execution);
    let mut ticks = 0u64;
    // The first tick at once, then one per `tick` until a stop.
    loop {
        ticks += 1;
        let seen = ctx.body()["spec"]["value"].clone();
        ctx.patch(
            json!({"status": {id.clone(): {"ticks": ticks, "seen": seen, "retry": ctx.retry()}}}),
        );
        if exit_after.is_some_and(|n| ticks >= n) {
            return finish(pending, "success");
        }
        if ctx.stopped().sleep(tick).await {
            break;
        }
    }
    tokio::time::sleep(linger).await;
    finish(pending, "stopped")
}

fn note(ledger: &Ledger, execution: &Execution, outcome: &str) {
    if let Err(error) = ledger.record(execution, outcome) {
        eprintln!("cannot write the ledger: {error}");
    }
}

fn finish(pending: crate::ledger::Pending, outcome: &str) -> Result<(), HandlerError> {
    if let Err(error) = pending.finish(outcome) {
        eprintln!("cannot write the ledger: {error}");
    }
    Ok(())
}
