//! One Operon under test: the example handler service serving widgets, and a core serving one
//! namespace with it — plus waits that fail fast (with the core's log) when the core dies.

use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::api::{DynamicObject, ListParams};
use kube::{Api, Client};

use crate::kopf::{is_fully_handled, summary};
use crate::ledger::Entries;
use crate::plane;
use crate::process::{CoreProcess, HandlerProcess};
use crate::widgets::{RESOURCE_ARG, widgets};

/// How long [`Stack::start`] waits for the core's `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// A handler service and a core, for the widgets of one namespace.
pub struct Stack {
    /// The example handler service.
    pub handler: HandlerProcess,
    /// The core.
    pub core: CoreProcess,
    /// An admin client.
    pub client: Client,
    /// The namespace served.
    pub ns: String,
    /// The widgets of the namespace.
    pub api: Api<DynamicObject>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("handler", &self.handler)
            .field("core", &self.core)
            .field("ns", &self.ns)
            .finish_non_exhaustive()
    }
}

impl Stack {
    /// Starts the example handler service with `handlers` (each a `KIND:ID[…]` of its
    /// `--handler`) for widgets, then `operon run --handler <it> -n <ns> <core_args>`, and waits
    /// until the core is ready.
    ///
    /// # Panics
    /// When either process cannot be started or the core is not ready in time.
    pub async fn start(
        name: &str,
        client: &Client,
        ns: &str,
        handlers: &[&str],
        core_args: &[&str],
    ) -> Self {
        let mut handler_args = vec!["--resource", RESOURCE_ARG];
        for handler in handlers {
            handler_args.extend(["--handler", handler]);
        }
        let handler = HandlerProcess::start(name, &handler_args)
            .await
            .unwrap_or_else(|err| panic!("starting the handler service: {err:#}"));
        let mut args = vec![
            "--handler".to_owned(),
            handler.url(),
            "-n".to_owned(),
            ns.to_owned(),
        ];
        args.extend(core_args.iter().map(|a| (*a).to_owned()));
        let kubeconfig = plane().await.kubeconfig.clone();
        let mut core = CoreProcess::start(name, &args, &kubeconfig)
            .await
            .unwrap_or_else(|err| panic!("starting the core: {err:#}"));
        core.wait_ready(READY_TIMEOUT).await;
        Self {
            handler,
            core,
            client: client.clone(),
            ns: ns.to_owned(),
            api: widgets(client, ns),
        }
    }

    /// The ledger so far.
    pub fn ledger(&self) -> Entries {
        self.handler.ledger().entries()
    }

    /// Waits until the widget `name` exists and satisfies `done`; returns it.
    ///
    /// # Panics
    /// When the core exits, or `timeout` passes; with the object's last state and ledger lines.
    pub async fn wait_object(
        &mut self,
        name: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&DynamicObject) -> bool,
    ) -> DynamicObject {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.core.assert_running();
            let last = match self.api.get_opt(name).await {
                Ok(Some(object)) if done(&object) => return object,
                Ok(Some(object)) => summary(&object),
                Ok(None) => "not found".to_owned(),
                Err(err) => format!("error: {err}"),
            };
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {}/{name}: {what}\n\
                     last seen: {last}\nledger of {name}:\n{}",
                    self.ns,
                    self.ledger().object(name)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the widget `name` is fully handled: diff-base written, no progress record.
    ///
    /// # Panics
    /// As [`Stack::wait_object`].
    pub async fn wait_handled(&mut self, name: &str, timeout: Duration) -> DynamicObject {
        self.wait_object(
            name,
            "fully handled (diff-base present, no progress records)",
            timeout,
            is_fully_handled,
        )
        .await
    }

    /// Waits until the widget `name` no longer exists.
    ///
    /// # Panics
    /// When the core exits, or `timeout` passes.
    pub async fn wait_gone(&mut self, name: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.core.assert_running();
            match self.api.get_opt(name).await {
                Ok(None) => return,
                Ok(Some(object)) if tokio::time::Instant::now() >= deadline => panic!(
                    "timed out after {timeout:?} waiting for {}/{name} to be gone; it is: {}\n\
                     ledger:\n{}",
                    self.ns,
                    summary(&object),
                    self.ledger().object(name)
                ),
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The Kubernetes Events in the namespace about the object named `name`.
    ///
    /// # Panics
    /// When the events cannot be listed.
    pub async fn events_for(&self, name: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        events
            .list(&ListParams::default())
            .await
            .expect("listing events")
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .collect()
    }

    /// The status code of the core's `/healthz` (0 if it does not answer).
    pub async fn healthz(&self) -> u16 {
        self.core
            .get("/healthz")
            .await
            .map(|r| r.status)
            .unwrap_or(0)
    }
}

/// A one-line rendering of an Event for messages.
pub fn describe_event(event: &Event) -> String {
    format!(
        "{} {} {:?}",
        event.type_.as_deref().unwrap_or("-"),
        event.reason.as_deref().unwrap_or("-"),
        event.message.as_deref().unwrap_or("")
    )
}
