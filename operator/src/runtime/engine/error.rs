//! The failures that stop the core.

/// A failure that stops the core.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// No Kubernetes configuration was found or it is unusable.
    #[error("cannot connect to Kubernetes")]
    Kube(#[source] kube::Error),
    /// The Kubernetes configuration could not be loaded.
    #[error("cannot load the Kubernetes configuration")]
    KubeConfig(#[source] kube::config::InferConfigError),
    /// A handler address is invalid.
    #[error(transparent)]
    Dispatch(#[from] crate::runtime::ports::Error),
    /// What the services declare cannot be served: an invalid manifest, or a handler id, sync
    /// id or task resource of two services.
    #[error(transparent)]
    Registry(#[from] crate::core::registry::RegistryError),
    /// Namespace patterns with sync or task registrations, which watch namespaces by name.
    #[error(
        "namespace patterns ({0}) are served for handlers only: sync and task registrations need namespaces by name (or -A)"
    )]
    NamespacePatterns(String),
    /// The credentials from the handler services' login handlers are unusable.
    #[error(transparent)]
    Login(#[from] crate::runtime::login::Error),
    /// A `--namespace-regex` does not compile.
    #[error(transparent)]
    NamespaceRegex(#[from] crate::core::namespaces::BadRegex),
    /// The annotation prefix is invalid.
    #[error("invalid --prefix: {0}")]
    Prefix(String),
    /// Sharding cannot serve what the services declare.
    #[error("{0}")]
    Sharding(String),
    /// The HTTP listener failed.
    #[error(transparent)]
    Http(#[from] crate::http::Error),
    /// The admission webhooks cannot be served.
    #[error(transparent)]
    Admission(#[from] crate::runtime::admission::Error),
}
