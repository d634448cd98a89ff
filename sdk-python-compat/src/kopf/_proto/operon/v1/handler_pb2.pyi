import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HandlerKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HANDLER_KIND_UNSPECIFIED: _ClassVar[HandlerKind]
    HANDLER_KIND_CREATE: _ClassVar[HandlerKind]
    HANDLER_KIND_UPDATE: _ClassVar[HandlerKind]
    HANDLER_KIND_DELETE: _ClassVar[HandlerKind]
    HANDLER_KIND_RESUME: _ClassVar[HandlerKind]
    HANDLER_KIND_FIELD: _ClassVar[HandlerKind]
    HANDLER_KIND_EVENT: _ClassVar[HandlerKind]
    HANDLER_KIND_TIMER: _ClassVar[HandlerKind]
    HANDLER_KIND_DAEMON: _ClassVar[HandlerKind]
    HANDLER_KIND_SYNC: _ClassVar[HandlerKind]
    HANDLER_KIND_TASK: _ClassVar[HandlerKind]
    HANDLER_KIND_INDEX: _ClassVar[HandlerKind]
    HANDLER_KIND_VALIDATE: _ClassVar[HandlerKind]
    HANDLER_KIND_MUTATE: _ClassVar[HandlerKind]

class ErrorsMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERRORS_MODE_UNSPECIFIED: _ClassVar[ErrorsMode]
    ERRORS_MODE_TEMPORARY: _ClassVar[ErrorsMode]
    ERRORS_MODE_PERMANENT: _ClassVar[ErrorsMode]
    ERRORS_MODE_IGNORED: _ClassVar[ErrorsMode]

class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REASON_UNSPECIFIED: _ClassVar[Reason]
    REASON_CREATE: _ClassVar[Reason]
    REASON_UPDATE: _ClassVar[Reason]
    REASON_DELETE: _ClassVar[Reason]
    REASON_RESUME: _ClassVar[Reason]

class DaemonStopReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DAEMON_STOP_REASON_UNSPECIFIED: _ClassVar[DaemonStopReason]
    DAEMON_STOP_REASON_RESOURCE_DELETED: _ClassVar[DaemonStopReason]
    DAEMON_STOP_REASON_FILTERS_MISMATCH: _ClassVar[DaemonStopReason]
    DAEMON_STOP_REASON_OPERATOR_EXITING: _ClassVar[DaemonStopReason]

class UpdateStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UPDATE_STRATEGY_UNSPECIFIED: _ClassVar[UpdateStrategy]
    UPDATE_STRATEGY_ON_DELETE: _ClassVar[UpdateStrategy]
    UPDATE_STRATEGY_RECREATE: _ClassVar[UpdateStrategy]
    UPDATE_STRATEGY_IN_PLACE: _ClassVar[UpdateStrategy]
    UPDATE_STRATEGY_ROLLING_RECREATE: _ClassVar[UpdateStrategy]
    UPDATE_STRATEGY_ROLLING_IN_PLACE: _ClassVar[UpdateStrategy]

class ShutdownFailureStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SHUTDOWN_FAILURE_STRATEGY_UNSPECIFIED: _ClassVar[ShutdownFailureStrategy]
    SHUTDOWN_FAILURE_STRATEGY_GIVE_UP: _ClassVar[ShutdownFailureStrategy]
    SHUTDOWN_FAILURE_STRATEGY_DELETE: _ClassVar[ShutdownFailureStrategy]

class TaskMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_MODE_UNSPECIFIED: _ClassVar[TaskMode]
    TASK_MODE_PARALLEL: _ClassVar[TaskMode]
    TASK_MODE_SEQUENTIAL: _ClassVar[TaskMode]
HANDLER_KIND_UNSPECIFIED: HandlerKind
HANDLER_KIND_CREATE: HandlerKind
HANDLER_KIND_UPDATE: HandlerKind
HANDLER_KIND_DELETE: HandlerKind
HANDLER_KIND_RESUME: HandlerKind
HANDLER_KIND_FIELD: HandlerKind
HANDLER_KIND_EVENT: HandlerKind
HANDLER_KIND_TIMER: HandlerKind
HANDLER_KIND_DAEMON: HandlerKind
HANDLER_KIND_SYNC: HandlerKind
HANDLER_KIND_TASK: HandlerKind
HANDLER_KIND_INDEX: HandlerKind
HANDLER_KIND_VALIDATE: HandlerKind
HANDLER_KIND_MUTATE: HandlerKind
ERRORS_MODE_UNSPECIFIED: ErrorsMode
ERRORS_MODE_TEMPORARY: ErrorsMode
ERRORS_MODE_PERMANENT: ErrorsMode
ERRORS_MODE_IGNORED: ErrorsMode
REASON_UNSPECIFIED: Reason
REASON_CREATE: Reason
REASON_UPDATE: Reason
REASON_DELETE: Reason
REASON_RESUME: Reason
DAEMON_STOP_REASON_UNSPECIFIED: DaemonStopReason
DAEMON_STOP_REASON_RESOURCE_DELETED: DaemonStopReason
DAEMON_STOP_REASON_FILTERS_MISMATCH: DaemonStopReason
DAEMON_STOP_REASON_OPERATOR_EXITING: DaemonStopReason
UPDATE_STRATEGY_UNSPECIFIED: UpdateStrategy
UPDATE_STRATEGY_ON_DELETE: UpdateStrategy
UPDATE_STRATEGY_RECREATE: UpdateStrategy
UPDATE_STRATEGY_IN_PLACE: UpdateStrategy
UPDATE_STRATEGY_ROLLING_RECREATE: UpdateStrategy
UPDATE_STRATEGY_ROLLING_IN_PLACE: UpdateStrategy
SHUTDOWN_FAILURE_STRATEGY_UNSPECIFIED: ShutdownFailureStrategy
SHUTDOWN_FAILURE_STRATEGY_GIVE_UP: ShutdownFailureStrategy
SHUTDOWN_FAILURE_STRATEGY_DELETE: ShutdownFailureStrategy
TASK_MODE_UNSPECIFIED: TaskMode
TASK_MODE_PARALLEL: TaskMode
TASK_MODE_SEQUENTIAL: TaskMode

class MatchResponse(_message.Message):
    __slots__ = ("matched",)
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    matched: bool
    def __init__(self, matched: _Optional[bool] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ("core_version", "contract_revision")
    CORE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_REVISION_FIELD_NUMBER: _ClassVar[int]
    core_version: str
    contract_revision: int
    def __init__(self, core_version: _Optional[str] = ..., contract_revision: _Optional[int] = ...) -> None: ...

class Manifest(_message.Message):
    __slots__ = ("service_name", "contract_revision", "handlers", "syncs", "tasks")
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_REVISION_FIELD_NUMBER: _ClassVar[int]
    HANDLERS_FIELD_NUMBER: _ClassVar[int]
    SYNCS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    service_name: str
    contract_revision: int
    handlers: _containers.RepeatedCompositeFieldContainer[Handler]
    syncs: _containers.RepeatedCompositeFieldContainer[SyncRegistration]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskRegistration]
    def __init__(self, service_name: _Optional[str] = ..., contract_revision: _Optional[int] = ..., handlers: _Optional[_Iterable[_Union[Handler, _Mapping]]] = ..., syncs: _Optional[_Iterable[_Union[SyncRegistration, _Mapping]]] = ..., tasks: _Optional[_Iterable[_Union[TaskRegistration, _Mapping]]] = ...) -> None: ...

class ResourceSelector(_message.Message):
    __slots__ = ("group", "version", "name", "everything", "category", "callable_id", "core_group")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    EVERYTHING_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    CALLABLE_ID_FIELD_NUMBER: _ClassVar[int]
    CORE_GROUP_FIELD_NUMBER: _ClassVar[int]
    group: str
    version: str
    name: str
    everything: bool
    category: str
    callable_id: str
    core_group: bool
    def __init__(self, group: _Optional[str] = ..., version: _Optional[str] = ..., name: _Optional[str] = ..., everything: _Optional[bool] = ..., category: _Optional[str] = ..., callable_id: _Optional[str] = ..., core_group: _Optional[bool] = ...) -> None: ...

class Handler(_message.Message):
    __slots__ = ("id", "kind", "resource", "filters", "options")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: HandlerKind
    resource: ResourceSelector
    filters: Filters
    options: Options
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[HandlerKind, str]] = ..., resource: _Optional[_Union[ResourceSelector, _Mapping]] = ..., filters: _Optional[_Union[Filters, _Mapping]] = ..., options: _Optional[_Union[Options, _Mapping]] = ...) -> None: ...

class ValueFilter(_message.Message):
    __slots__ = ("equals_json", "present", "absent")
    EQUALS_JSON_FIELD_NUMBER: _ClassVar[int]
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    ABSENT_FIELD_NUMBER: _ClassVar[int]
    equals_json: bytes
    present: bool
    absent: bool
    def __init__(self, equals_json: _Optional[bytes] = ..., present: _Optional[bool] = ..., absent: _Optional[bool] = ...) -> None: ...

class Filters(_message.Message):
    __slots__ = ("labels", "annotations", "field", "value", "old", "new", "has_callback_filters")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ValueFilter
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ValueFilter, _Mapping]] = ...) -> None: ...
    class AnnotationsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ValueFilter
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ValueFilter, _Mapping]] = ...) -> None: ...
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ANNOTATIONS_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    OLD_FIELD_NUMBER: _ClassVar[int]
    NEW_FIELD_NUMBER: _ClassVar[int]
    HAS_CALLBACK_FILTERS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.MessageMap[str, ValueFilter]
    annotations: _containers.MessageMap[str, ValueFilter]
    field: str
    value: ValueFilter
    old: ValueFilter
    new: ValueFilter
    has_callback_filters: bool
    def __init__(self, labels: _Optional[_Mapping[str, ValueFilter]] = ..., annotations: _Optional[_Mapping[str, ValueFilter]] = ..., field: _Optional[str] = ..., value: _Optional[_Union[ValueFilter, _Mapping]] = ..., old: _Optional[_Union[ValueFilter, _Mapping]] = ..., new: _Optional[_Union[ValueFilter, _Mapping]] = ..., has_callback_filters: _Optional[bool] = ...) -> None: ...

class Options(_message.Message):
    __slots__ = ("retries", "timeout", "backoff", "errors", "optional", "deleted", "interval", "idle", "initial_delay", "sharp", "cancellation_timeout", "call_timeout", "cancellation_backoff", "operations", "subresource", "persistent", "side_effects", "ignore_failures")
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    OPTIONAL_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    IDLE_FIELD_NUMBER: _ClassVar[int]
    INITIAL_DELAY_FIELD_NUMBER: _ClassVar[int]
    SHARP_FIELD_NUMBER: _ClassVar[int]
    CANCELLATION_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    CALL_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    CANCELLATION_BACKOFF_FIELD_NUMBER: _ClassVar[int]
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    SUBRESOURCE_FIELD_NUMBER: _ClassVar[int]
    PERSISTENT_FIELD_NUMBER: _ClassVar[int]
    SIDE_EFFECTS_FIELD_NUMBER: _ClassVar[int]
    IGNORE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    retries: int
    timeout: _duration_pb2.Duration
    backoff: _duration_pb2.Duration
    errors: ErrorsMode
    optional: bool
    deleted: bool
    interval: _duration_pb2.Duration
    idle: _duration_pb2.Duration
    initial_delay: _duration_pb2.Duration
    sharp: bool
    cancellation_timeout: _duration_pb2.Duration
    call_timeout: _duration_pb2.Duration
    cancellation_backoff: _duration_pb2.Duration
    operations: _containers.RepeatedScalarFieldContainer[str]
    subresource: str
    persistent: bool
    side_effects: bool
    ignore_failures: bool
    def __init__(self, retries: _Optional[int] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., backoff: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., errors: _Optional[_Union[ErrorsMode, str]] = ..., optional: _Optional[bool] = ..., deleted: _Optional[bool] = ..., interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., idle: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., initial_delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., sharp: _Optional[bool] = ..., cancellation_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., call_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., cancellation_backoff: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., operations: _Optional[_Iterable[str]] = ..., subresource: _Optional[str] = ..., persistent: _Optional[bool] = ..., side_effects: _Optional[bool] = ..., ignore_failures: _Optional[bool] = ...) -> None: ...

class Record(_message.Message):
    __slots__ = ("id", "started", "retries", "success", "failure", "message", "delayed")
    ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DELAYED_FIELD_NUMBER: _ClassVar[int]
    id: str
    started: _timestamp_pb2.Timestamp
    retries: int
    success: bool
    failure: bool
    message: str
    delayed: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., started: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., retries: _Optional[int] = ..., success: _Optional[bool] = ..., failure: _Optional[bool] = ..., message: _Optional[str] = ..., delayed: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ResolvedResource(_message.Message):
    __slots__ = ("group", "version", "plural", "kind", "namespaced")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PLURAL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAMESPACED_FIELD_NUMBER: _ClassVar[int]
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    def __init__(self, group: _Optional[str] = ..., version: _Optional[str] = ..., plural: _Optional[str] = ..., kind: _Optional[str] = ..., namespaced: _Optional[bool] = ...) -> None: ...

class InvokeRequest(_message.Message):
    __slots__ = ("handler_id", "reason", "body_json", "old_json", "new_json", "diff_json", "retry", "started", "subhandlers", "event_type", "resource", "attempt_id", "admission")
    HANDLER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    BODY_JSON_FIELD_NUMBER: _ClassVar[int]
    OLD_JSON_FIELD_NUMBER: _ClassVar[int]
    NEW_JSON_FIELD_NUMBER: _ClassVar[int]
    DIFF_JSON_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    SUBHANDLERS_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    ADMISSION_FIELD_NUMBER: _ClassVar[int]
    handler_id: str
    reason: Reason
    body_json: bytes
    old_json: bytes
    new_json: bytes
    diff_json: bytes
    retry: int
    started: _timestamp_pb2.Timestamp
    subhandlers: _containers.RepeatedCompositeFieldContainer[Record]
    event_type: str
    resource: ResolvedResource
    attempt_id: str
    admission: AdmissionCall
    def __init__(self, handler_id: _Optional[str] = ..., reason: _Optional[_Union[Reason, str]] = ..., body_json: _Optional[bytes] = ..., old_json: _Optional[bytes] = ..., new_json: _Optional[bytes] = ..., diff_json: _Optional[bytes] = ..., retry: _Optional[int] = ..., started: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., subhandlers: _Optional[_Iterable[_Union[Record, _Mapping]]] = ..., event_type: _Optional[str] = ..., resource: _Optional[_Union[ResolvedResource, _Mapping]] = ..., attempt_id: _Optional[str] = ..., admission: _Optional[_Union[AdmissionCall, _Mapping]] = ...) -> None: ...

class Outcome(_message.Message):
    __slots__ = ("success", "temporary_error", "permanent_error", "arbitrary_error", "not_matched", "subhandlers_pending")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    TEMPORARY_ERROR_FIELD_NUMBER: _ClassVar[int]
    PERMANENT_ERROR_FIELD_NUMBER: _ClassVar[int]
    ARBITRARY_ERROR_FIELD_NUMBER: _ClassVar[int]
    NOT_MATCHED_FIELD_NUMBER: _ClassVar[int]
    SUBHANDLERS_PENDING_FIELD_NUMBER: _ClassVar[int]
    success: Success
    temporary_error: TemporaryError
    permanent_error: PermanentError
    arbitrary_error: ArbitraryError
    not_matched: NotMatched
    subhandlers_pending: SubhandlersPending
    def __init__(self, success: _Optional[_Union[Success, _Mapping]] = ..., temporary_error: _Optional[_Union[TemporaryError, _Mapping]] = ..., permanent_error: _Optional[_Union[PermanentError, _Mapping]] = ..., arbitrary_error: _Optional[_Union[ArbitraryError, _Mapping]] = ..., not_matched: _Optional[_Union[NotMatched, _Mapping]] = ..., subhandlers_pending: _Optional[_Union[SubhandlersPending, _Mapping]] = ...) -> None: ...

class Success(_message.Message):
    __slots__ = ("result_json",)
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    result_json: bytes
    def __init__(self, result_json: _Optional[bytes] = ...) -> None: ...

class TemporaryError(_message.Message):
    __slots__ = ("message", "delay")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DELAY_FIELD_NUMBER: _ClassVar[int]
    message: str
    delay: _duration_pb2.Duration
    def __init__(self, message: _Optional[str] = ..., delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class PermanentError(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: str
    def __init__(self, message: _Optional[str] = ...) -> None: ...

class ArbitraryError(_message.Message):
    __slots__ = ("message", "error_type")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    message: str
    error_type: str
    def __init__(self, message: _Optional[str] = ..., error_type: _Optional[str] = ...) -> None: ...

class NotMatched(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SubhandlersPending(_message.Message):
    __slots__ = ("delay",)
    DELAY_FIELD_NUMBER: _ClassVar[int]
    delay: _duration_pb2.Duration
    def __init__(self, delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class SubhandlerOutcome(_message.Message):
    __slots__ = ("id", "outcome", "options")
    ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    id: str
    outcome: Outcome
    options: Options
    def __init__(self, id: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, _Mapping]] = ..., options: _Optional[_Union[Options, _Mapping]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("type", "reason", "message", "involved_object_json")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    INVOLVED_OBJECT_JSON_FIELD_NUMBER: _ClassVar[int]
    type: str
    reason: str
    message: str
    involved_object_json: bytes
    def __init__(self, type: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., involved_object_json: _Optional[bytes] = ...) -> None: ...

class InvokeResponse(_message.Message):
    __slots__ = ("outcome", "patch_json", "subhandlers", "events", "warnings", "admission_code")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    PATCH_JSON_FIELD_NUMBER: _ClassVar[int]
    SUBHANDLERS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    ADMISSION_CODE_FIELD_NUMBER: _ClassVar[int]
    outcome: Outcome
    patch_json: bytes
    subhandlers: _containers.RepeatedCompositeFieldContainer[SubhandlerOutcome]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    admission_code: int
    def __init__(self, outcome: _Optional[_Union[Outcome, _Mapping]] = ..., patch_json: _Optional[bytes] = ..., subhandlers: _Optional[_Iterable[_Union[SubhandlerOutcome, _Mapping]]] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., warnings: _Optional[_Iterable[str]] = ..., admission_code: _Optional[int] = ...) -> None: ...

class DaemonRequest(_message.Message):
    __slots__ = ("start", "body_json", "stop")
    START_FIELD_NUMBER: _ClassVar[int]
    BODY_JSON_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    start: DaemonStart
    body_json: bytes
    stop: DaemonStop
    def __init__(self, start: _Optional[_Union[DaemonStart, _Mapping]] = ..., body_json: _Optional[bytes] = ..., stop: _Optional[_Union[DaemonStop, _Mapping]] = ...) -> None: ...

class DaemonStart(_message.Message):
    __slots__ = ("handler_id", "body_json", "resource", "retry", "started", "attempt_id")
    HANDLER_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_JSON_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    handler_id: str
    body_json: bytes
    resource: ResolvedResource
    retry: int
    started: _timestamp_pb2.Timestamp
    attempt_id: str
    def __init__(self, handler_id: _Optional[str] = ..., body_json: _Optional[bytes] = ..., resource: _Optional[_Union[ResolvedResource, _Mapping]] = ..., retry: _Optional[int] = ..., started: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempt_id: _Optional[str] = ...) -> None: ...

class DaemonStop(_message.Message):
    __slots__ = ("reason", "force")
    REASON_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    reason: DaemonStopReason
    force: bool
    def __init__(self, reason: _Optional[_Union[DaemonStopReason, str]] = ..., force: _Optional[bool] = ...) -> None: ...

class DaemonResponse(_message.Message):
    __slots__ = ("patch_json", "events", "exit")
    PATCH_JSON_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    EXIT_FIELD_NUMBER: _ClassVar[int]
    patch_json: bytes
    events: _containers.RepeatedCompositeFieldContainer[Event]
    exit: Outcome
    def __init__(self, patch_json: _Optional[bytes] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., exit: _Optional[_Union[Outcome, _Mapping]] = ...) -> None: ...

class ChildType(_message.Message):
    __slots__ = ("resource", "update_strategy")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    resource: ResourceSelector
    update_strategy: UpdateStrategy
    def __init__(self, resource: _Optional[_Union[ResourceSelector, _Mapping]] = ..., update_strategy: _Optional[_Union[UpdateStrategy, str]] = ...) -> None: ...

class SyncRegistration(_message.Message):
    __slots__ = ("id", "parent", "children", "resync_period", "finalize", "call_timeout", "shutdown_hook")
    ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    RESYNC_PERIOD_FIELD_NUMBER: _ClassVar[int]
    FINALIZE_FIELD_NUMBER: _ClassVar[int]
    CALL_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    SHUTDOWN_HOOK_FIELD_NUMBER: _ClassVar[int]
    id: str
    parent: ResourceSelector
    children: _containers.RepeatedCompositeFieldContainer[ChildType]
    resync_period: _duration_pb2.Duration
    finalize: bool
    call_timeout: _duration_pb2.Duration
    shutdown_hook: ShutdownHook
    def __init__(self, id: _Optional[str] = ..., parent: _Optional[_Union[ResourceSelector, _Mapping]] = ..., children: _Optional[_Iterable[_Union[ChildType, _Mapping]]] = ..., resync_period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., finalize: _Optional[bool] = ..., call_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., shutdown_hook: _Optional[_Union[ShutdownHook, _Mapping]] = ...) -> None: ...

class ShutdownHook(_message.Message):
    __slots__ = ("service", "port", "url_template", "grace_period", "retries", "failure_strategy")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    URL_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    GRACE_PERIOD_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    FAILURE_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    service: str
    port: int
    url_template: str
    grace_period: _duration_pb2.Duration
    retries: int
    failure_strategy: ShutdownFailureStrategy
    def __init__(self, service: _Optional[str] = ..., port: _Optional[int] = ..., url_template: _Optional[str] = ..., grace_period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., retries: _Optional[int] = ..., failure_strategy: _Optional[_Union[ShutdownFailureStrategy, str]] = ...) -> None: ...

class TaskRegistration(_message.Message):
    __slots__ = ("id", "task", "parent", "parent_field", "mode", "priority", "retention", "timeout")
    ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    RETENTION_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    id: str
    task: ResourceSelector
    parent: ResourceSelector
    parent_field: str
    mode: TaskMode
    priority: int
    retention: _duration_pb2.Duration
    timeout: _duration_pb2.Duration
    def __init__(self, id: _Optional[str] = ..., task: _Optional[_Union[ResourceSelector, _Mapping]] = ..., parent: _Optional[_Union[ResourceSelector, _Mapping]] = ..., parent_field: _Optional[str] = ..., mode: _Optional[_Union[TaskMode, str]] = ..., priority: _Optional[int] = ..., retention: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class AdmissionCall(_message.Message):
    __slots__ = ("request_json", "headers", "sslpeer_json")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_JSON_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    SSLPEER_JSON_FIELD_NUMBER: _ClassVar[int]
    request_json: bytes
    headers: _containers.ScalarMap[str, str]
    sslpeer_json: bytes
    def __init__(self, request_json: _Optional[bytes] = ..., headers: _Optional[_Mapping[str, str]] = ..., sslpeer_json: _Optional[bytes] = ...) -> None: ...

class DiscoveredResource(_message.Message):
    __slots__ = ("group", "version", "plural", "kind", "singular", "short_names", "categories", "subresources", "namespaced", "preferred", "verbs")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PLURAL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SINGULAR_FIELD_NUMBER: _ClassVar[int]
    SHORT_NAMES_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    SUBRESOURCES_FIELD_NUMBER: _ClassVar[int]
    NAMESPACED_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_FIELD_NUMBER: _ClassVar[int]
    VERBS_FIELD_NUMBER: _ClassVar[int]
    group: str
    version: str
    plural: str
    kind: str
    singular: str
    short_names: _containers.RepeatedScalarFieldContainer[str]
    categories: _containers.RepeatedScalarFieldContainer[str]
    subresources: _containers.RepeatedScalarFieldContainer[str]
    namespaced: bool
    preferred: bool
    verbs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, group: _Optional[str] = ..., version: _Optional[str] = ..., plural: _Optional[str] = ..., kind: _Optional[str] = ..., singular: _Optional[str] = ..., short_names: _Optional[_Iterable[str]] = ..., categories: _Optional[_Iterable[str]] = ..., subresources: _Optional[_Iterable[str]] = ..., namespaced: _Optional[bool] = ..., preferred: _Optional[bool] = ..., verbs: _Optional[_Iterable[str]] = ...) -> None: ...

class SelectResourcesRequest(_message.Message):
    __slots__ = ("resources",)
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    resources: _containers.RepeatedCompositeFieldContainer[DiscoveredResource]
    def __init__(self, resources: _Optional[_Iterable[_Union[DiscoveredResource, _Mapping]]] = ...) -> None: ...

class CallableSelection(_message.Message):
    __slots__ = ("callable_id", "accepted")
    CALLABLE_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    callable_id: str
    accepted: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, callable_id: _Optional[str] = ..., accepted: _Optional[_Iterable[int]] = ...) -> None: ...

class SelectResourcesResponse(_message.Message):
    __slots__ = ("selections",)
    SELECTIONS_FIELD_NUMBER: _ClassVar[int]
    selections: _containers.RepeatedCompositeFieldContainer[CallableSelection]
    def __init__(self, selections: _Optional[_Iterable[_Union[CallableSelection, _Mapping]]] = ...) -> None: ...

class OutboxRequest(_message.Message):
    __slots__ = ("core_version",)
    CORE_VERSION_FIELD_NUMBER: _ClassVar[int]
    core_version: str
    def __init__(self, core_version: _Optional[str] = ...) -> None: ...

class LoginRequest(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class LoginResponse(_message.Message):
    __slots__ = ("kubeconfig_json", "expiration")
    KUBECONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    EXPIRATION_FIELD_NUMBER: _ClassVar[int]
    kubeconfig_json: bytes
    expiration: _timestamp_pb2.Timestamp
    def __init__(self, kubeconfig_json: _Optional[bytes] = ..., expiration: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class OutboxEvent(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: Event
    def __init__(self, event: _Optional[_Union[Event, _Mapping]] = ...) -> None: ...
