//! [`Operator`]: the registrations, Kopf-style, and the way to serve them.

use std::sync::Arc;
use std::time::Duration;

use operon_proto::v1 as pb;
use serde::de::DeserializeOwned;

use crate::call::Call;
use crate::ctx::Ctx;
use crate::daemon::{DaemonCtx, DaemonFn};
use crate::error::{HandlerError, HandlerResult};
use crate::options::HandlerOptions;
use crate::registry::{
    self, ChangeFn, HandlerReg, Kind, RegistrationError, Runner, SyncReg, TaskReg,
};
use crate::resource::Resource;
use crate::sync::{Desired, SyncCtx, SyncInput, SyncOptions};
use crate::task::{TaskCtx, TaskInput, TaskOptions};

/// An operator's handlers, registered Kopf-style, served over the `operon.v1` contract.
///
/// ```no_run
/// use std::time::Duration;
/// use operon_handler::{Ctx, HandlerResult, Operator};
/// use serde_json::Value;
///
/// async fn create_widget(ctx: Ctx<Value>) -> HandlerResult { Ok(None) }
/// async fn resize(ctx: Ctx<Value>) -> HandlerResult { Ok(None) }
/// async fn cleanup(ctx: Ctx<Value>) -> HandlerResult { Ok(None) }
/// async fn check(ctx: Ctx<Value>) -> HandlerResult { Ok(None) }
///
/// # async fn run() -> Result<(), operon_handler::Error> {
/// Operator::new("widgets-operator")
///     .on_create("widgets.example.com", create_widget)
///     .on_update_field("widgets.example.com", "spec.size", resize)
///     .on_delete("widgets.example.com", cleanup)
///     .timer("widgets.example.com", Duration::from_secs(60), check)
///     .serve_from_env()
///     .await
/// # }
/// ```
///
/// Registration never fails on the spot: problems (a closure without an id, an option that does
/// not apply to the kind, a duplicate id…) are collected and reported all together by
/// [`Operator::manifest`] and the `serve` methods.
pub struct Operator {
    pub(crate) name: String,
    pub(crate) handlers: Vec<HandlerReg>,
    pub(crate) syncs: Vec<SyncReg>,
    pub(crate) tasks: Vec<TaskReg>,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator")
            .field("name", &self.name)
            .field("handlers", &self.handlers.len())
            .field("syncs", &self.syncs.len())
            .field("tasks", &self.tasks.len())
            .finish()
    }
}

/// Erases a change/event/timer function over its object type.
fn change_fn<K, F, Fut>(f: F) -> ChangeFn
where
    K: DeserializeOwned + Send + Sync + 'static,
    F: Fn(Ctx<K>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    let f = Arc::new(f);
    Arc::new(move |head, effects, level, span| {
        let f = Arc::clone(&f);
        Box::pin(async move {
            let call = Call::<K>::read(head)?;
            f(Ctx::new(call, effects, level, span)).await
        })
    })
}

fn daemon_fn<K, F, Fut>(f: F) -> DaemonFn
where
    K: DeserializeOwned + Send + Sync + 'static,
    F: Fn(DaemonCtx<K>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    let f = Arc::new(f);
    Arc::new(move |call| {
        let f = Arc::clone(&f);
        Box::pin(async move { f(DaemonCtx::<K>::read(call)?).await })
    })
}

impl Operator {
    /// An operator without handlers; `name` is the service's name in the core's logs and the
    /// dashboard (and the default `service.name` of its traces).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            handlers: Vec::new(),
            syncs: Vec::new(),
            tasks: Vec::new(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn register<K, F, Fut>(
        mut self,
        kind: Kind,
        resource: Resource,
        field: Option<String>,
        interval: Option<Duration>,
        mut options: HandlerOptions,
        f: F,
    ) -> Self
    where
        K: DeserializeOwned + Send + Sync + 'static,
        F: Fn(Ctx<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        if let Some(field) = field {
            options.filters.field = Some(field);
        }
        self.handlers.push(HandlerReg {
            id: options.id.clone().or_else(registry::default_id::<F>),
            kind,
            resource,
            interval,
            options,
            runner: Runner::Call(change_fn(f)),
        });
        self
    }

    /// A create handler: called when an object is created (Kopf's `@kopf.on.create`).
    pub fn on_create<K, F, Fut>(self, resource: impl Into<Resource>, handler: F) -> Self
    where
        K: DeserializeOwned + Send + Sync + 'static,
        F: Fn(Ctx<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.on_create_with(resource, HandlerOptions::default(), handler)
    }

    /// [`Operator::on_create`] with options.
    pub fn on_create_with<K, F, Fut>(
        self,
        resource: impl Into<Resource>,
        options: HandlerOptions,
        handler: F,
    ) -> Self
    where
        K: DeserializeOwned + Send + Sync + 'static,
        F: Fn(Ctx<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.register(Kind::Create, resource.into(), None, None, options, handler)
    }

    /// An update handler: called when an object's essence (spec, labels, annotations…; not its
    /// status) changed since it was last handled (Kopf's `@kopf.on.update`).
    pub fn on_update<K, F, Fut>(self, resource: impl Into<Resource>, handler: F) -> Self
    where
        K: DeserializeOwned + Send + Sync + 'static,
        F: Fn(Ctx<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.on_update_with(resource, HandlerOptions::default(), handler)
    }

    /// [`Operator::on_update`] with options.
    pub fn on_update_with<K, F, Fut>(
        self,
        resource: impl Into<Resource>,
        options: HandlerOptions,
        handler: F,
    ) -> Self
    where
        K: DeserializeOwned + Send + Sync + 'static,
        F: Fn(Ctx<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.register(Kind::Update, resource.into(), None, None, options, handler)
    }

    /// An update handler of one field (Kopf's `@kopf.on.update(field=...)`): called on updates
    /// that changed the value at `field` (a dotted path, e.g. `spec.size`); [`Call::old`],
    /// [`Call::new`] and [`Call::diff`] are the field's. Its id is `<name>/<field>`.
    pub fn on_update_field<K, F, Fut>(
        self,
        resource: impl Into<Resource>,
        field: &str,
        handler: F,
    ) -> Self
    where
        K: DeserializeOwned + Send + Sync + 'static,
        F: Fn(Ctx<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.on_update_field_with(resource, field, HandlerOptions::default(), handler)
    }

    /// [`Operator::on_update_field`] with options.
    pub fn on_update_field_with<K, F, Fut>(
        self,
        resource: impl Into<Resource>,
        field: &str,
        options: HandlerOptions,
        handler: F,
    ) -> Self
    where
        K: DeserializeOwned + Send + Sync + 'static,
        F: Fn(Ctx<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.register(
            Kind::Update,
            resource.into(),
            Some(field.to_owned()),
            None,
            options,
            handler,
        )
    }

    /// A field handler (Kopf's `@kopf.on.field`): called in any create, update, delete or
    /// resume cycle in which the value at `field` changed — including its first appearance
    /// when the object is created. [`Call::old`], [`Call::new`] and [`Call::diff`] are the
    /// field's. Its id is `<name>/<field>`.
    pub fn on_field<K, F, Fut>(self, resource: impl Into<Resource>, field: &str, handler: F) -> Self
    where
        K: DeserializeOwned + Send + Sync + 'static,
        F: Fn(Ctx<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.on_field_with(resource, field, HandlerOptions::default(), handler)
    }

    /// [`Operator::on_field`] with options.
    pub fn on_field_with<K, F, Fut>(
        self,
        resource: impl Into<Resource>,
        field: &str,
        options: HandlerOptions,
        handler: F,
    ) -> Self
    where
        K: DeserializeOwned + Send + Sync + 'static,
        F: Fn(Ctx<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.register(
            Kind::Field,
            resource.into(),
            Some(field.to_owned()),
            None,
            options,
            handler,
        )
    }

    /// A delete handler (Kopf's `@kopf.on.delete`): called when an object is being deleted. The
    /// core holds a finalizer on matching objects until it succeeded (unless
    /// [`HandlerOptions::optional`]).
    pub fn on_delete<K, F, Fut>(self, resource: impl Into<Resource>, handler: F) -> Self
    where
        K: DeserializeOwned + Send + Sync + 'static,
        F: Fn(Ctx<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.on_delete_with(resource, HandlerOptions::default(), handler)
    }

    /// [`Operator::on_delete`] with options.
    pub fn on_delete_with<K, F, Fut>(
        self,
        resource: impl Into<Resource>,
        options: HandlerOptions,
        handler: F,
    ) -> Self
    where
        K: DeserializeOwned + Send + Sync + 'static,
        F: Fn(Ctx<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.register(Kind::Delete, resource.into(), None, None, options, handler)
    }

    /// A resume handler (Kopf's `@kopf.on.resume`): called for every existing object when the
    /// core starts (skipped for objects being deleted unless [`HandlerOptions::deleted`]).
    pub fn on_resume<K, F, Fut>(self, resource: impl Into<Resource>, handler: F) -> Self
    where
        K: DeserializeOwned + Send + Sync + 'static,
        F: Fn(Ctx<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.on_resume_with(resource, HandlerOptions::default(), handler)
    }

    /// [`Operator::on_resume`] with options.
    pub fn on_resume_with<K, F, Fut>(
        self,
        resource: impl Into<Resource>,
        options: HandlerOptions,
        handler: F,
    ) -> Self
    where
        K: DeserializeOwned + Send + Sync + 'static,
        F: Fn(Ctx<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.register(Kind::Resume, resource.into(), None, None, options, handler)
    }

    /// An event handler (Kopf's `@kopf.on.event`): called for every raw watch event
    /// ([`Call::watch_event`]); no progress is stored and errors are logged and ignored, so it
    /// takes no retries, timeout, backoff or errors options.
    pub fn on_event<K, F, Fut>(self, resource: impl Into<Resource>, handler: F) -> Self
    where
        K: DeserializeOwned + Send + Sync + 'static,
        F: Fn(Ctx<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.on_event_with(resource, HandlerOptions::default(), handler)
    }

    /// [`Operator::on_event`] with options.
    pub fn on_event_with<K, F, Fut>(
        self,
        resource: impl Into<Resource>,
        options: HandlerOptions,
        handler: F,
    ) -> Self
    where
        K: DeserializeOwned + Send + Sync + 'static,
        F: Fn(Ctx<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.register(Kind::Event, resource.into(), None, None, options, handler)
    }

    /// A timer (Kopf's `@kopf.timer`): called every `interval` for every matching object, never
    /// overlapping itself; see [`HandlerOptions::idle`], [`HandlerOptions::initial_delay`] and
    /// [`HandlerOptions::sharp`]. The core holds a finalizer on matching objects.
    pub fn timer<K, F, Fut>(
        self,
        resource: impl Into<Resource>,
        interval: Duration,
        handler: F,
    ) -> Self
    where
        K: DeserializeOwned + Send + Sync + 'static,
        F: Fn(Ctx<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.timer_with(resource, interval, HandlerOptions::default(), handler)
    }

    /// [`Operator::timer`] with options.
    pub fn timer_with<K, F, Fut>(
        self,
        resource: impl Into<Resource>,
        interval: Duration,
        options: HandlerOptions,
        handler: F,
    ) -> Self
    where
        K: DeserializeOwned + Send + Sync + 'static,
        F: Fn(Ctx<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.register(
            Kind::Timer,
            resource.into(),
            None,
            Some(interval),
            options,
            handler,
        )
    }

    /// A validating admission webhook (Kopf's `@kopf.on.validate`): the core serves the webhook
    /// (`operon run --admission-listen`) and calls the handler for every review of `resource`
    /// that it is selected for — by its operations, subresource and filters (see
    /// [`HandlerOptions::operations`], [`HandlerOptions::subresource`]). [`Call::admission`]
    /// (`ctx.admission()`) is the review; [`Ctx::warn`] adds warnings for the requesting user.
    ///
    /// ```
    /// use operon_handler::{Ctx, HandlerError, HandlerOptions, HandlerResult, Operation, Operator};
    /// use serde_json::{json, Value};
    ///
    /// async fn check_size(ctx: Ctx<Value>) -> HandlerResult {
    ///     let size = ctx.body()["spec"]["size"].as_u64().unwrap_or(0);
    ///     if size > 10 {
    ///         return Err(HandlerError::deny(format!("size {size} is over 10"), 422));
    ///     }
    ///     if let Some(review) = ctx.admission() {
    ///         let user = &review.user_info().username;
    ///         ctx.warn(format!("{} checked for {user}", review.operation()));
    ///     }
    ///     Ok(None) // admitted
    /// }
    ///
    /// async fn default_size(ctx: Ctx<Value>) -> HandlerResult {
    ///     if ctx.body()["spec"]["size"].is_null() {
    ///         ctx.patch(json!({"spec": {"size": 1}})); // applied to the object under review
    ///     }
    ///     Ok(None)
    /// }
    ///
    /// let manifest = Operator::new("widgets-operator")
    ///     .on_validate("widgets.example.com", check_size)
    ///     .on_mutate_with(
    ///         "widgets.example.com",
    ///         HandlerOptions::new().operations([Operation::Create, Operation::Update]),
    ///         default_size,
    ///     )
    ///     .manifest()
    ///     .unwrap();
    /// assert_eq!(manifest.handlers.len(), 2);
    /// ```
    ///
    /// # Guarantees
    /// `Ok(_)` admits the request (the value is ignored). Nothing is stored on the object and
    /// nothing is retried: it takes no retries, timeout, backoff or errors options. Its patches
    /// are ignored (use [`Operator::on_mutate`]); its Events are posted.
    ///
    /// # Errors
    /// Any error denies the request: [`HandlerError::deny`] with its message and HTTP status
    /// code (preferred when several handlers deny), any other with its message and code 500.
    pub fn on_validate<K, F, Fut>(self, resource: impl Into<Resource>, handler: F) -> Self
    where
        K: DeserializeOwned + Send + Sync + 'static,
        F: Fn(Ctx<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.on_validate_with(resource, HandlerOptions::default(), handler)
    }

    /// [`Operator::on_validate`] with options.
    pub fn on_validate_with<K, F, Fut>(
        self,
        resource: impl Into<Resource>,
        options: HandlerOptions,
        handler: F,
    ) -> Self
    where
        K: DeserializeOwned + Send + Sync + 'static,
        F: Fn(Ctx<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.register(
            Kind::Validate,
            resource.into(),
            None,
            None,
            options,
            handler,
        )
    }

    /// A mutating admission webhook (Kopf's `@kopf.on.mutate`): as [`Operator::on_validate`],
    /// and the merge patch the handler makes with [`Ctx::patch`] is applied to the object under
    /// review (the core answers the API server with it as a JSONPatch). It is called for
    /// `DELETE` only when that is its only operation (as in Kopf).
    ///
    /// # Errors
    /// As [`Operator::on_validate`]: any error denies the request (and its patch is not
    /// applied).
    pub fn on_mutate<K, F, Fut>(self, resource: impl Into<Resource>, handler: F) -> Self
    where
        K: DeserializeOwned + Send + Sync + 'static,
        F: Fn(Ctx<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.on_mutate_with(resource, HandlerOptions::default(), handler)
    }

    /// [`Operator::on_mutate`] with options.
    pub fn on_mutate_with<K, F, Fut>(
        self,
        resource: impl Into<Resource>,
        options: HandlerOptions,
        handler: F,
    ) -> Self
    where
        K: DeserializeOwned + Send + Sync + 'static,
        F: Fn(Ctx<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.register(Kind::Mutate, resource.into(), None, None, options, handler)
    }

    /// A daemon (Kopf's `@kopf.daemon`): one long-running function per matching object, served
    /// over the contract's `Daemon` call, for as long as the object exists and matches. See
    /// [`DaemonCtx`] for the live object and the stop flag.
    ///
    /// # Guarantees
    /// `Ok(())` ends the daemon for good while the core runs (as in Kopf); an error restarts it
    /// per the errors mode, retries and backoff. The core holds a finalizer on matching objects
    /// until their daemons have exited.
    pub fn daemon<K, F, Fut>(self, resource: impl Into<Resource>, handler: F) -> Self
    where
        K: DeserializeOwned + Send + Sync + 'static,
        F: Fn(DaemonCtx<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.daemon_with(resource, HandlerOptions::default(), handler)
    }

    /// [`Operator::daemon`] with options.
    pub fn daemon_with<K, F, Fut>(
        mut self,
        resource: impl Into<Resource>,
        options: HandlerOptions,
        handler: F,
    ) -> Self
    where
        K: DeserializeOwned + Send + Sync + 'static,
        F: Fn(DaemonCtx<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.handlers.push(HandlerReg {
            id: options.id.clone().or_else(registry::default_id::<F>),
            kind: Kind::Daemon,
            resource: resource.into(),
            interval: None,
            options,
            runner: Runner::Daemon(daemon_fn(handler)),
        });
        self
    }

    /// A level-triggered sync handler without children: called with the parent whenever it
    /// changes, answers its status. Declare children with [`Operator::sync_with`].
    pub fn sync<P, F, Fut>(self, parent: impl Into<Resource>, handler: F) -> Self
    where
        P: DeserializeOwned + Send + Sync + 'static,
        F: Fn(SyncCtx<P>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Desired, HandlerError>> + Send + 'static,
    {
        self.sync_with(parent, SyncOptions::default(), handler)
    }

    /// A level-triggered sync handler (Metacontroller's `sync`, served over `SyncService`):
    /// called with the parent and its current children (of the types declared with
    /// [`SyncOptions::owns`]) whenever either changes; answers the parent's status and the
    /// desired children ([`Desired`]). The core applies them and deletes the rest.
    ///
    /// # Errors
    /// Any error the handler returns is the sync's failure: the core changes nothing and calls
    /// again with backoff (the error's delay, if any, is not used).
    pub fn sync_with<P, F, Fut>(
        mut self,
        parent: impl Into<Resource>,
        options: SyncOptions,
        handler: F,
    ) -> Self
    where
        P: DeserializeOwned + Send + Sync + 'static,
        F: Fn(SyncCtx<P>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Desired, HandlerError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.syncs.push(SyncReg {
            id: options.id.clone().or_else(registry::default_id::<F>),
            parent: parent.into(),
            options,
            sync: Arc::new(move |input: &SyncInput| {
                let ctx = SyncCtx::<P>::read(input);
                let handler = Arc::clone(&handler);
                Box::pin(async move { handler(ctx?).await })
            }),
        });
        self
    }

    /// A task type (served over `TaskService`): tasks are objects of `task` that name their
    /// parent (an object of `parent`, same namespace) at `parent_field` (a dotted path, e.g.
    /// `spec.cluster`); per parent they run one at a time, in order. The function reports its
    /// steps with [`TaskCtx::step`] and answers the task's final message; an error fails the
    /// task with the error's message. Deleting a running task cancels it: its future is
    /// dropped.
    pub fn task<T, P, F, Fut>(
        self,
        task: impl Into<Resource>,
        parent: impl Into<Resource>,
        parent_field: &str,
        handler: F,
    ) -> Self
    where
        T: DeserializeOwned + Send + Sync + 'static,
        P: DeserializeOwned + Send + Sync + 'static,
        F: Fn(TaskCtx<T, P>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, HandlerError>> + Send + 'static,
    {
        self.task_with(task, parent, parent_field, TaskOptions::default(), handler)
    }

    /// [`Operator::task`] with options.
    pub fn task_with<T, P, F, Fut>(
        mut self,
        task: impl Into<Resource>,
        parent: impl Into<Resource>,
        parent_field: &str,
        options: TaskOptions,
        handler: F,
    ) -> Self
    where
        T: DeserializeOwned + Send + Sync + 'static,
        P: DeserializeOwned + Send + Sync + 'static,
        F: Fn(TaskCtx<T, P>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, HandlerError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.tasks.push(TaskReg {
            id: options.id.clone().or_else(registry::default_id::<F>),
            task: task.into(),
            parent: parent.into(),
            parent_field: parent_field.to_owned(),
            options,
            run: Arc::new(move |input: Arc<TaskInput>| {
                let handler = Arc::clone(&handler);
                Box::pin(async move { handler(TaskCtx::<T, P>::read(input)?).await })
            }),
        });
        self
    }

    /// The manifest the service answers `Describe` with, built from the registrations.
    ///
    /// # Errors
    /// Every registration problem, in registration order.
    pub fn manifest(&self) -> Result<pb::Manifest, Vec<RegistrationError>> {
        self.registry().map(|registry| registry.manifest)
    }

    pub(crate) fn registry(&self) -> Result<registry::Registry, Vec<RegistrationError>> {
        registry::build(
            &self.name,
            self.handlers.clone(),
            self.syncs.clone(),
            self.tasks.clone(),
        )
    }
}

#[cfg(test)]
mod tests;
