//! Level-triggered sync handlers (`SyncService`, Metacontroller's model): the parent and its
//! current children in, the parent's status and the desired children out.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use operon_proto::v1 as pb;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::convert::{self, duration};
use crate::error::HandlerError;
use crate::resource::Resource;

/// The current children of one declared type.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildGroup {
    /// e.g. `v1`, `apps/v1`.
    pub api_version: String,
    /// e.g. `ConfigMap`.
    pub kind: String,
    /// Every current child of this type (those with the parent as their controller owner),
    /// ordered by namespace and name.
    pub objects: Vec<Value>,
}

/// What a sync handler (and a finalizer) gets: the parent, typed, and its current children.
pub struct SyncCtx<P> {
    parent: Arc<P>,
    body: Arc<Value>,
    groups: Arc<Vec<ChildGroup>>,
    finalizing: bool,
    sync_id: Arc<str>,
    span: tracing::Span,
}

impl<P> Clone for SyncCtx<P> {
    fn clone(&self) -> Self {
        Self {
            parent: Arc::clone(&self.parent),
            body: Arc::clone(&self.body),
            groups: Arc::clone(&self.groups),
            finalizing: self.finalizing,
            sync_id: Arc::clone(&self.sync_id),
            span: self.span.clone(),
        }
    }
}

impl<P> std::fmt::Debug for SyncCtx<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncCtx")
            .field("sync_id", &self.sync_id)
            .field("name", &self.name())
            .field("finalizing", &self.finalizing)
            .finish_non_exhaustive()
    }
}

/// The parsed parts of a `SyncRequest`.
#[derive(Debug)]
pub(crate) struct SyncInput {
    pub(crate) body: Arc<Value>,
    pub(crate) groups: Arc<Vec<ChildGroup>>,
    pub(crate) finalizing: bool,
    pub(crate) sync_id: Arc<str>,
    pub(crate) span: tracing::Span,
}

impl SyncInput {
    /// Reads a `SyncRequest`.
    ///
    /// # Errors
    /// What is wrong: a parent or a child that is not a JSON object.
    pub(crate) fn read(request: &pb::SyncRequest, span: tracing::Span) -> Result<Self, String> {
        let groups = request
            .children
            .iter()
            .map(|group| {
                Ok(ChildGroup {
                    api_version: group.api_version.clone(),
                    kind: group.kind.clone(),
                    objects: group
                        .objects_json
                        .iter()
                        .map(|json| convert::object_json("a child's JSON", json))
                        .collect::<Result<_, String>>()?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self {
            body: Arc::new(convert::object_json("parent_json", &request.parent_json)?),
            groups: Arc::new(groups),
            finalizing: request.finalizing,
            sync_id: Arc::from(request.sync_id.as_str()),
            span,
        })
    }
}

impl<P: DeserializeOwned> SyncCtx<P> {
    pub(crate) fn read(input: &SyncInput) -> Result<Self, HandlerError> {
        let parent = P::deserialize(&*input.body).map_err(|error| {
            HandlerError::other(
                "serde_json::Error",
                format!(
                    "cannot read the parent as {}: {error}",
                    std::any::type_name::<P>()
                ),
            )
        })?;
        Ok(Self {
            parent: Arc::new(parent),
            body: Arc::clone(&input.body),
            groups: Arc::clone(&input.groups),
            finalizing: input.finalizing,
            sync_id: Arc::clone(&input.sync_id),
            span: input.span.clone(),
        })
    }
}

impl<P> SyncCtx<P> {
    /// The parent, typed.
    pub fn parent(&self) -> &P {
        &self.parent
    }

    /// The parent as JSON.
    pub fn parent_body(&self) -> &Value {
        &self.body
    }

    /// The parent's `metadata.name`.
    pub fn name(&self) -> Option<&str> {
        self.body["metadata"]["name"].as_str()
    }

    /// The parent's `metadata.namespace`.
    pub fn namespace(&self) -> Option<&str> {
        self.body["metadata"]["namespace"].as_str()
    }

    /// The parent's `metadata.uid`.
    pub fn uid(&self) -> Option<&str> {
        self.body["metadata"]["uid"].as_str()
    }

    /// The current children of `kind` (e.g. `"ConfigMap"`; empty when there are none).
    pub fn children(&self, kind: &str) -> &[Value] {
        self.groups
            .iter()
            .find(|group| group.kind == kind)
            .map_or(&[], |group| group.objects.as_slice())
    }

    /// The current children of `kind`, typed.
    ///
    /// # Errors
    /// A [`HandlerError::Other`] when a child cannot be read as `T`.
    pub fn children_as<T: DeserializeOwned>(&self, kind: &str) -> Result<Vec<T>, HandlerError> {
        self.children(kind)
            .iter()
            .map(|child| T::deserialize(child).map_err(HandlerError::from))
            .collect()
    }

    /// Every declared child type with its current children, in the order declared.
    pub fn child_groups(&self) -> &[ChildGroup] {
        &self.groups
    }

    /// True when the parent is being deleted and this is the finalizer's call.
    pub fn is_finalizing(&self) -> bool {
        self.finalizing
    }

    /// The sync registration's id.
    pub fn sync_id(&self) -> &str {
        &self.sync_id
    }

    /// The call's tracing span (a child of the core's span).
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }
}

/// What a sync handler answers: the parent's new status and the children it should have.
///
/// Every current child missing from the answer is deleted; the core adds the parent as the
/// children's controller owner and applies them (server-side apply), so write only the fields
/// you care about. The answer should be a pure function of the parent and its children, so that
/// a converged parent causes no writes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    status: Option<Value>,
    children: Vec<Value>,
    resync_after: Option<Duration>,
    problem: Option<String>,
}

impl Desired {
    /// No status change and no children.
    pub fn new() -> Self {
        Self::default()
    }

    /// The parent's whole new status (needs the parent's status subresource; the core adds
    /// `observedGeneration`).
    pub fn status(mut self, status: impl Serialize) -> Self {
        match serde_json::to_value(status) {
            Ok(status) => self.status = Some(status),
            Err(error) => self.fail(format!("the status cannot be serialized: {error}")),
        }
        self
    }

    /// A desired child: `apiVersion`, `kind`, `metadata.name` and the fields you care about.
    pub fn child(mut self, child: impl Serialize) -> Self {
        match serde_json::to_value(child) {
            Ok(child @ Value::Object(_)) => self.children.push(child),
            Ok(other) => self.fail(format!("a child is not a JSON object: {other}")),
            Err(error) => self.fail(format!("a child cannot be serialized: {error}")),
        }
        self
    }

    /// Sync this parent again after `after` (default: the registration's resync period).
    pub fn resync_after(mut self, after: Duration) -> Self {
        self.resync_after = Some(after);
        self
    }

    fn fail(&mut self, problem: String) {
        self.problem.get_or_insert(problem);
    }

    pub(crate) fn to_proto(&self) -> pb::SyncResponse {
        if let Some(problem) = &self.problem {
            return error_response(problem.clone());
        }
        pb::SyncResponse {
            status_json: self
                .status
                .as_ref()
                .map(convert::to_json)
                .unwrap_or_default(),
            children_json: self.children.iter().map(convert::to_json).collect(),
            resync_after: self.resync_after.map(duration),
            error: String::new(),
        }
    }
}

/// The answer of a failed sync: the core changes nothing and retries with backoff.
pub(crate) fn error_response(error: String) -> pb::SyncResponse {
    pb::SyncResponse {
        error,
        ..pb::SyncResponse::default()
    }
}

/// What a finalizer answers while its parent is being deleted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Finalized {
    finalized: bool,
    status: Option<Value>,
    resync_after: Option<Duration>,
}

impl Finalized {
    /// Done: the parent's finalizer may be removed (its children then go with it).
    pub fn done() -> Self {
        Self {
            finalized: true,
            ..Self::default()
        }
    }

    /// Not yet: call again after `after` (the core's default, 5 s, when `None`).
    pub fn not_yet(after: Option<Duration>) -> Self {
        Self {
            finalized: false,
            status: None,
            resync_after: after,
        }
    }

    /// The parent's status meanwhile.
    pub fn status(mut self, status: Value) -> Self {
        self.status = Some(status);
        self
    }

    pub(crate) fn to_proto(&self) -> pb::FinalizeResponse {
        pb::FinalizeResponse {
            status_json: self
                .status
                .as_ref()
                .map(convert::to_json)
                .unwrap_or_default(),
            finalized: self.finalized,
            resync_after: self.resync_after.map(duration),
            error: String::new(),
        }
    }
}

/// How the core updates an existing child whose live state differs from the desired one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UpdateStrategy {
    /// Apply the desired state to the existing child at once (this SDK's default).
    #[default]
    InPlace,
    /// Never update an existing child; a missing one is created.
    OnDelete,
    /// Delete a differing child; it is created again on the next sync.
    Recreate,
    /// As [`UpdateStrategy::Recreate`], one child at a time.
    RollingRecreate,
    /// As [`UpdateStrategy::InPlace`], one child at a time, waiting for each to observe its
    /// change.
    RollingInPlace,
}

impl UpdateStrategy {
    /// Every strategy, in the order of the contract's enum.
    pub const ALL: [Self; 5] = [
        Self::OnDelete,
        Self::Recreate,
        Self::InPlace,
        Self::RollingRecreate,
        Self::RollingInPlace,
    ];

    /// The strategy's name: `OnDelete`, `Recreate`, `InPlace`, `RollingRecreate`,
    /// `RollingInPlace` (Metacontroller's spelling; what [`str::parse`] reads).
    pub fn name(self) -> &'static str {
        match self {
            Self::InPlace => "InPlace",
            Self::OnDelete => "OnDelete",
            Self::Recreate => "Recreate",
            Self::RollingRecreate => "RollingRecreate",
            Self::RollingInPlace => "RollingInPlace",
        }
    }

    fn to_proto(self) -> pb::UpdateStrategy {
        match self {
            Self::InPlace => pb::UpdateStrategy::InPlace,
            Self::OnDelete => pb::UpdateStrategy::OnDelete,
            Self::Recreate => pb::UpdateStrategy::Recreate,
            Self::RollingRecreate => pb::UpdateStrategy::RollingRecreate,
            Self::RollingInPlace => pb::UpdateStrategy::RollingInPlace,
        }
    }
}

impl std::fmt::Display for UpdateStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not an [`UpdateStrategy`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown update strategy {0:?} (OnDelete, Recreate, InPlace, RollingRecreate or RollingInPlace)"
)]
pub struct UnknownUpdateStrategy(pub String);

/// Reads a strategy's [name](UpdateStrategy::name), e.g. from a command-line flag or a
/// configuration file (with clap, `#[arg(long, default_value = "InPlace")] s: UpdateStrategy`).
impl std::str::FromStr for UpdateStrategy {
    type Err = UnknownUpdateStrategy;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| UnknownUpdateStrategy(name.to_owned()))
    }
}

/// What the core does when a shutdown hook's application does not confirm in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ShutdownFailure {
    /// Leave the children alone and mark the parent degraded (the default).
    #[default]
    GiveUp,
    /// Delete (or replace) the children anyway.
    Delete,
}

/// A shutdown hook (Krake's): before the core deletes or replaces a parent's children, it asks
/// the application to stop and waits for its confirmation. See "Shutdown hook" in
/// handler.proto for the protocol. A hook makes the core hold a finalizer on parents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownHook {
    hook: pb::ShutdownHook,
}

impl ShutdownHook {
    /// Call the Service `service` (`{name}`: the parent's name) in the parent's namespace at
    /// `http://SERVICE.NAMESPACE.svc:PORT/shutdown`.
    pub fn service(service: impl Into<String>, port: u16) -> Self {
        Self {
            hook: pb::ShutdownHook {
                service: service.into(),
                port: u32::from(port),
                ..pb::ShutdownHook::default()
            },
        }
    }

    /// Call this URL; `{namespace}`, `{name}` and `{uid}` are replaced by the parent's.
    pub fn url(template: impl Into<String>) -> Self {
        Self {
            hook: pb::ShutdownHook {
                url_template: template.into(),
                ..pb::ShutdownHook::default()
            },
        }
    }

    /// How long one attempt waits for the confirmation (default: 30 s).
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.hook.grace_period = Some(duration(grace));
        self
    }

    /// Attempts after the first.
    pub fn retries(mut self, retries: u32) -> Self {
        self.hook.retries = retries;
        self
    }

    /// What to do when the application never confirms.
    pub fn on_failure(mut self, failure: ShutdownFailure) -> Self {
        self.hook.failure_strategy = match failure {
            ShutdownFailure::GiveUp => pb::ShutdownFailureStrategy::GiveUp,
            ShutdownFailure::Delete => pb::ShutdownFailureStrategy::Delete,
        } as i32;
        self
    }
}

/// An erased sync function.
pub(crate) type SyncFn =
    Arc<dyn Fn(&SyncInput) -> BoxFuture<'static, Result<Desired, HandlerError>> + Send + Sync>;

/// An erased finalizer.
pub(crate) type FinalizeFn =
    Arc<dyn Fn(&SyncInput) -> BoxFuture<'static, Result<Finalized, HandlerError>> + Send + Sync>;

/// The options of a sync registration ([`crate::Operator::sync_with`]).
///
/// ```
/// # use std::time::Duration;
/// use operon_handler::{Finalized, HandlerError, SyncCtx, SyncOptions, UpdateStrategy};
/// use serde_json::Value;
///
/// async fn release(ctx: SyncCtx<Value>) -> Result<Finalized, HandlerError> {
///     Ok(Finalized::done())
/// }
///
/// let options = SyncOptions::new()
///     .owns("v1/configmaps")
///     .owns_with("deployments.v1.apps", UpdateStrategy::RollingInPlace)
///     .resync(Duration::from_secs(300))
///     .finalizer(release);
/// ```
#[derive(Clone, Default)]
pub struct SyncOptions {
    pub(crate) id: Option<String>,
    pub(crate) children: Vec<(Resource, UpdateStrategy)>,
    pub(crate) resync: Option<Duration>,
    pub(crate) call_timeout: Option<Duration>,
    pub(crate) shutdown_hook: Option<ShutdownHook>,
    pub(crate) finalizer: Option<FinalizeFn>,
}

impl std::fmt::Debug for SyncOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncOptions")
            .field("id", &self.id)
            .field("children", &self.children)
            .field("resync", &self.resync)
            .field("call_timeout", &self.call_timeout)
            .field("shutdown_hook", &self.shutdown_hook)
            .field("finalizer", &self.finalizer.is_some())
            .finish()
    }
}

impl SyncOptions {
    /// No children, no resync, no finalizer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The registration's id (names the parent's finalizer `<prefix>/sync-<id>` and the
    /// metrics). Default: the sync function's name.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// A child type, updated [`UpdateStrategy::InPlace`]. The core watches these children
    /// (those with the parent as their controller owner) and applies the desired ones.
    pub fn owns(self, resource: impl Into<Resource>) -> Self {
        self.owns_with(resource, UpdateStrategy::default())
    }

    /// A child type with its update strategy.
    pub fn owns_with(mut self, resource: impl Into<Resource>, strategy: UpdateStrategy) -> Self {
        self.children.push((resource.into(), strategy));
        self
    }

    /// Sync every parent at least this often (default: only on changes).
    pub fn resync(mut self, period: Duration) -> Self {
        self.resync = Some(period);
        self
    }

    /// The deadline of one call (default: the core's).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = Some(timeout);
        self
    }

    /// A shutdown hook for the parents' applications.
    pub fn shutdown_hook(mut self, hook: ShutdownHook) -> Self {
        self.shutdown_hook = Some(hook);
        self
    }

    /// Hold a finalizer on parents and call `f` (instead of the sync function) while one is
    /// being deleted, until it answers [`Finalized::done`].
    pub fn finalizer<P, F, Fut>(mut self, f: F) -> Self
    where
        P: DeserializeOwned + Send + Sync + 'static,
        F: Fn(SyncCtx<P>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Finalized, HandlerError>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.finalizer = Some(Arc::new(move |input: &SyncInput| {
            let ctx = SyncCtx::<P>::read(input);
            let f = Arc::clone(&f);
            Box::pin(async move { f(ctx?).await })
        }));
        self
    }

    pub(crate) fn to_proto(&self, id: &str, parent: &Resource) -> pb::SyncRegistration {
        pb::SyncRegistration {
            id: id.to_owned(),
            parent: Some(parent.to_proto()),
            children: self
                .children
                .iter()
                .map(|(resource, strategy)| pb::ChildType {
                    resource: Some(resource.to_proto()),
                    update_strategy: strategy.to_proto() as i32,
                })
                .collect(),
            resync_period: self.resync.map(duration),
            finalize: self.finalizer.is_some() || self.shutdown_hook.is_some(),
            call_timeout: self.call_timeout.map(duration),
            shutdown_hook: self.shutdown_hook.as_ref().map(|h| h.hook.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn desired_answers() {
        let answer = Desired::new()
            .status(json!({"pages": 1}))
            .child(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}))
            .resync_after(Duration::from_secs(30))
            .to_proto();
        assert_eq!(answer.status_json, br#"{"pages":1}"#);
        assert_eq!(answer.children_json.len(), 1);
        assert_eq!(answer.resync_after.unwrap().seconds, 30);
        assert!(answer.error.is_empty());
        let broken = Desired::new().child(json!([1])).to_proto();
        assert!(broken.error.contains("not a JSON object"));
        assert!(broken.children_json.is_empty());
        assert!(Desired::new().to_proto().status_json.is_empty());
    }

    #[test]
    fn registrations() {
        let options = SyncOptions::new()
            .owns("v1/configmaps")
            .owns_with("services", UpdateStrategy::OnDelete)
            .resync(Duration::from_secs(60));
        let proto = options.to_proto("sites", &Resource::parse("sites.example.com"));
        assert_eq!(proto.children.len(), 2);
        assert_eq!(
            proto.children[0].update_strategy,
            pb::UpdateStrategy::InPlace as i32
        );
        assert_eq!(
            proto.children[1].resource.as_ref().unwrap().name,
            "services"
        );
        assert!(!proto.finalize);
        let hooked = SyncOptions::new()
            .shutdown_hook(ShutdownHook::url("http://x/{name}").retries(2))
            .to_proto("s", &Resource::parse("sites.example.com"));
        assert!(hooked.finalize);
        assert_eq!(hooked.shutdown_hook.unwrap().retries, 2);
    }

    #[test]
    fn update_strategies_by_name() {
        for strategy in UpdateStrategy::ALL {
            assert_eq!(strategy.to_string().parse(), Ok(strategy));
        }
        assert_eq!("RollingInPlace".parse(), Ok(UpdateStrategy::RollingInPlace));
        let unknown = "inplace".parse::<UpdateStrategy>().unwrap_err();
        assert_eq!(unknown, UnknownUpdateStrategy("inplace".into()));
        assert!(unknown.to_string().contains("InPlace"), "{unknown}");
    }

    #[test]
    fn reading_requests() {
        let request = pb::SyncRequest {
            sync_id: "s".into(),
            parent_json: br#"{"metadata": {"name": "p"}}"#.to_vec(),
            children: vec![pb::ChildGroup {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                objects_json: vec![br#"{"metadata": {"name": "c"}}"#.to_vec()],
            }],
            finalizing: false,
        };
        let input = SyncInput::read(&request, tracing::Span::none()).unwrap();
        let ctx = SyncCtx::<Value>::read(&input).unwrap();
        assert_eq!(ctx.name(), Some("p"));
        assert_eq!(ctx.children("ConfigMap").len(), 1);
        assert!(ctx.children("Service").is_empty());
        let bad = pb::SyncRequest {
            parent_json: b"[]".to_vec(),
            ..request
        };
        assert!(SyncInput::read(&bad, tracing::Span::none()).is_err());
    }
}
