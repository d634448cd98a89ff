//! The task controller's writes: a task's status (Waiting, Running, steps, its end), its
//! finalizer, its deletion after the retention, the Events about it, and its read-model row.

use std::sync::Arc;

use jiff::Timestamp;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};

use super::snapshot::Seen;
use super::view::publish;
use super::{Reg, text};
use crate::core::finalizer;
use crate::core::tasks::{self as decide, Ending, Outcome, Shown, StepRecord};
use crate::runtime::context::Context;
use crate::runtime::kit::{api_for, status_code, typed};

/// Writes about tasks.
pub(super) struct Writes {
    /// The client, metrics and read model.
    pub(super) env: Arc<Context>,
    /// The core's task finalizer.
    pub(super) finalizer: String,
}

impl Writes {
    fn count<T>(&self, verb: &'static str, result: &Result<T, kube::Error>) {
        let code = match result {
            Ok(_) => 200,
            Err(err) => status_code(err),
        };
        self.env.metrics.api(verb, code);
    }

    /// Merges `patch` into a task's status.
    pub(super) async fn patch_status(
        &self,
        reg: &Reg,
        ns: &str,
        name: &str,
        patch: &Value,
    ) -> Result<(), kube::Error> {
        self.env.active.fence().await;
        let api = api_for(&self.env.client, &reg.task, Some(ns));
        let result = api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await;
        self.count("patch", &result);
        result.map(|_| ())
    }

    /// Writes phase Waiting, guarded by the resourceVersion seen (a concurrent start wins).
    pub(super) async fn mark_waiting(&self, reg: &Reg, t: &Seen) -> Result<(), kube::Error> {
        let mut patch = decide::waiting_patch(&t.body);
        patch["metadata"] = json!({"resourceVersion": text(&t.body, "/metadata/resourceVersion")});
        self.patch_status(reg, &t.namespace, &t.name, &patch).await
    }

    /// Adds the finalizer, guarded by the resourceVersion seen; the task as it is then (`None`:
    /// the finalizer is there already).
    pub(super) async fn add_finalizer(
        &self,
        reg: &Reg,
        body: &Value,
    ) -> Result<Option<DynamicObject>, kube::Error> {
        self.env.active.fence().await;
        let Some(ops) = finalizer::block_deletion(body, &self.finalizer) else {
            return Ok(None);
        };
        let patch: json_patch::Patch =
            serde_json::from_value(ops).map_err(kube::Error::SerdeError)?;
        let api = api_for(
            &self.env.client,
            &reg.task,
            Some(text(body, "/metadata/namespace")),
        );
        let result = api
            .patch(
                text(body, "/metadata/name"),
                &PatchParams::default(),
                &Patch::<()>::Json(patch),
            )
            .await;
        self.count("patch", &result);
        result.map(Some)
    }

    /// Removes our finalizer (reading the object fresh; a few tries on conflicts).
    pub(super) async fn remove_finalizer(
        &self,
        reg: &Reg,
        ns: &str,
        name: &str,
    ) -> Result<(), kube::Error> {
        let api = api_for(&self.env.client, &reg.task, Some(ns));
        let mut tries = 0;
        self.env.active.fence().await;
        loop {
            tries += 1;
            let Some(obj) = api.get_opt(name).await? else {
                return Ok(());
            };
            let Some(index) = obj
                .metadata
                .finalizers
                .iter()
                .flatten()
                .position(|f| *f == self.finalizer)
            else {
                return Ok(());
            };
            let ops = json!([
                {"op": "test", "path": format!("/metadata/finalizers/{index}"), "value": self.finalizer},
                {"op": "remove", "path": format!("/metadata/finalizers/{index}")},
            ]);
            let patch: json_patch::Patch =
                serde_json::from_value(ops).map_err(kube::Error::SerdeError)?;
            let result = api
                .patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
                .await;
            self.count("patch", &result);
            match result {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
                Err(kube::Error::Api(s)) if (s.code == 409 || s.code == 422) && tries < 5 => {}
                Err(err) => return Err(err),
            }
        }
    }

    /// Deletes a finished task whose retention has passed.
    pub(super) async fn expire(&self, reg: &Reg, t: &Seen) {
        self.env.active.fence().await;
        let api = api_for(&self.env.client, &reg.task, Some(&t.namespace));
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(t.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let result = api.delete(&t.name, &params).await;
        self.count("delete", &result);
        match result {
            Ok(_) => {
                tracing::info!(namespace = %t.namespace, task = %t.name, "Deleted a finished task after its retention.");
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(err) => {
                tracing::warn!(namespace = %t.namespace, task = %t.name, error = %err, "Cannot delete a finished task.");
            }
        }
    }

    /// Reads a task's parent, as the handler gets it.
    pub(super) async fn parent_of(&self, reg: &Reg, body: &Value) -> Option<Value> {
        let name = decide::parent_name(body, &reg.spec.parent_field).ok()?;
        let ns = text(body, "/metadata/namespace");
        api_for(&self.env.client, &reg.parent, Some(ns))
            .get_opt(&name)
            .await
            .ok()
            .flatten()
            .map(|p| typed(&p, &reg.parent.resource))
    }

    async fn event(&self, about: &Value, type_: &str, reason: &str, message: &str) {
        let to = crate::runtime::events::Poster {
            client: &self.env.client,
            metrics: &self.env.metrics,
            readmodel: &self.env.readmodel,
        };
        crate::runtime::events::post_to(&to, about, type_, reason, message).await;
    }

    /// Ends a task: the final status, the Events, the log line, the read model, and the
    /// finalizer released. `parent` is the parent's body when known (for the Events).
    pub(super) async fn end(
        &self,
        r: &Reg,
        body: &Value,
        started: Option<Timestamp>,
        ending: &Ending,
        steps: &[StepRecord],
        parent: Option<&Value>,
    ) {
        let ns = text(body, "/metadata/namespace");
        let name = text(body, "/metadata/name");
        let now = Timestamp::now();
        let patch = decide::finish_patch(ending, started, now, steps);
        if let Err(err) = self.patch_status(r, ns, name, &patch).await {
            tracing::warn!(namespace = ns, task = name, error = %err, "Cannot record the task's end.");
        }
        let ran = started.map(|s| now.duration_since(s));
        self.env.metrics.task_ended(&r.spec.id, ending.phase, ran);
        match ending.outcome() {
            Outcome::Succeeded => {
                tracing::info!(namespace = ns, task = name, message = %ending.message, "Task succeeded.");
            }
            Outcome::Cancelled => {
                tracing::info!(
                    namespace = ns,
                    task = name,
                    steps = steps.len(),
                    "Task cancelled."
                );
            }
            Outcome::Failed => {
                tracing::error!(namespace = ns, task = name, message = %ending.message, "Task failed.");
            }
        }
        let event = decide::end_event(ending, &r.task.resource.kind, name, steps.len());
        let parent = match parent {
            Some(p) if event.on_parent => Some(p.clone()),
            None if event.on_parent => self.parent_of(r, body).await,
            _ => None,
        };
        self.event(
            parent.as_ref().unwrap_or(body),
            event.type_,
            event.reason,
            &event.message,
        )
        .await;
        let shown = Shown {
            namespace: ns,
            name,
            uid: text(body, "/metadata/uid"),
            started,
        };
        publish(
            &self.env.readmodel,
            r,
            &shown,
            Some(ending.phase),
            Some(&ending.message),
            steps,
        );
        if let Err(err) = self.remove_finalizer(r, ns, name).await {
            tracing::warn!(namespace = ns, task = name, error = %err, "Cannot release the task's finalizer; the next pass retries.");
        }
    }
}
