"""
Kopf's public API, served to the Operon core: ``import kopf`` as with Kopf itself.

Everything an operator imports from ``kopf`` is re-exported here from where it lives in this
package; ``__all__`` lists Kopf 1.45.2's public names (and a few of Operon's own).
"""
from typing import Any as _Any

from kopf import on
from kopf._cogs.conventions import StorageKeyFormingConvention
from kopf._cogs.credentials import (
    ConnectionInfo, LoginError, login_via_async_client, login_via_client, login_via_pykube,
    login_with_kubeconfig, login_with_service_account,
)
from kopf._cogs.refs import EVERYTHING, Resource
from kopf._cogs.settings import OperatorSettings, ProgressRecord
from kopf._cogs.storages import (
    AnnotationsDiffBaseStorage, AnnotationsProgressStorage, DiffBaseStorage, MultiDiffBaseStorage,
    MultiProgressStorage, ProgressStorage, SmartProgressStorage, StatusDiffBaseStorage,
    StatusProgressStorage,
)
from kopf._cogs.views import (
    Annotations, Body, BodyEssence, Diff, DiffItem, DiffOperation, FieldPath, FieldSpec, HandlerId,
    Labels, Memo, Meta, ObjectReference, OwnerReference, Patch, PatchFn, RawBody, RawEvent,
    RawEventType, Spec, Status,
)
from kopf._core import model as lifecycles
from kopf._core.calls import execute
from kopf._core.logs import LocalObjectLogger, LogFormat, ObjectLogger, configure
from kopf._core.model import (
    ABSENT, PRESENT, AdmissionError, AsyncDaemonStopperChecker, DaemonStopped, DaemonStoppingReason,
    ErrorsMode, HandlerFatalError, HandlerRetriesError, HandlerRetryError, HandlerTimeoutError, Headers,
    Index, Operation, PermanentError, Reason, SSLPeer, Store, SyncDaemonStopperChecker, TemporaryError,
    UserInfo, WebhookClientConfig, WebhookClientConfigService, WebhookFn, WebhookServerProtocol,
    all_, any_, get_default_lifecycle, none_, not_, set_default_lifecycle,
)
from kopf._core.posting import event, exception, info, warn
from kopf._core.reactor.running import operator, run, run_tasks, spawn_tasks
from kopf._core.registry import OperatorRegistry, get_default_registry, set_default_registry
from kopf._kits.hierarchies import (
    adjust_namespace, adopt, append_owner_reference, build_object_reference, build_owner_reference,
    harmonize_naming, label, remove_owner_reference,
)
from kopf._kits.webhooks import (
    WebhookAutoServer, WebhookAutoTunnel, WebhookDockerDesktopServer, WebhookK3dServer,
    WebhookMinikubeServer, WebhookNgrokTunnel, WebhookServer,
)

subhandler = on.subhandler
register = on.register
daemon = on.daemon
timer = on.timer
index = on.index

Logger = _Any  # Kopf's `kopf.Logger` is a typing alias of a logger or adapter.
AiohttpSession = _Any  # Kopf's API session type; Operon's core owns the API connection.

__version__ = '0.1.0'

# Kopf's public names (its `__all__`), and then Operon's.
__all__ = sorted("""
    on lifecycles subhandler register execute daemon timer index configure LogFormat login_via_pykube
    login_via_client login_via_async_client login_with_kubeconfig login_with_service_account LoginError
    ConnectionInfo AiohttpSession event info warn exception spawn_tasks run_tasks operator run adopt
    label not_ all_ any_ none_ get_default_lifecycle set_default_lifecycle build_object_reference
    build_owner_reference append_owner_reference remove_owner_reference ErrorsMode AdmissionError
    WebhookClientConfigService WebhookClientConfig Operation UserInfo Headers SSLPeer WebhookFn
    WebhookServerProtocol WebhookServer WebhookK3dServer WebhookMinikubeServer WebhookDockerDesktopServer
    WebhookNgrokTunnel WebhookAutoServer WebhookAutoTunnel PermanentError TemporaryError
    HandlerTimeoutError HandlerRetriesError OperatorRegistry get_default_registry set_default_registry
    PRESENT ABSENT OperatorSettings DiffBaseStorage AnnotationsDiffBaseStorage StatusDiffBaseStorage
    MultiDiffBaseStorage ProgressRecord ProgressStorage AnnotationsProgressStorage StatusProgressStorage
    MultiProgressStorage SmartProgressStorage RawEventType RawEvent RawBody Status Spec Meta Body
    BodyEssence Labels Annotations ObjectReference OwnerReference Memo Index Store Logger ObjectLogger
    LocalObjectLogger FieldSpec FieldPath Diff DiffItem DiffOperation HandlerId Reason Patch PatchFn
    DaemonStopped DaemonStoppingReason SyncDaemonStopperChecker AsyncDaemonStopperChecker Resource
    EVERYTHING HandlerRetryError HandlerFatalError StorageKeyFormingConvention
""".split())
