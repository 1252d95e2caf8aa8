from xypipe._proto.xy.md.v1 import marketdata_pb2 as _marketdata_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CODE_UNSPECIFIED: _ClassVar[ErrorCode]
    ERROR_CODE_AUTH_REQUIRED: _ClassVar[ErrorCode]
    ERROR_CODE_AUTH_INVALID: _ClassVar[ErrorCode]
    ERROR_CODE_AUTH_EXPIRED: _ClassVar[ErrorCode]
    ERROR_CODE_ACL_DENIED: _ClassVar[ErrorCode]
    ERROR_CODE_BAD_FRAME: _ClassVar[ErrorCode]
    ERROR_CODE_FRAME_TOO_LARGE: _ClassVar[ErrorCode]
    ERROR_CODE_RATE_LIMITED: _ClassVar[ErrorCode]
    ERROR_CODE_UNKNOWN_GROUP: _ClassVar[ErrorCode]
    ERROR_CODE_SNAPSHOT_UNAVAILABLE: _ClassVar[ErrorCode]
    ERROR_CODE_SLOW_CONSUMER: _ClassVar[ErrorCode]
    ERROR_CODE_INTERNAL: _ClassVar[ErrorCode]
    ERROR_CODE_ORIGIN_DENIED: _ClassVar[ErrorCode]
    ERROR_CODE_PROTOCOL_VERSION: _ClassVar[ErrorCode]
    ERROR_CODE_HEARTBEAT_TIMEOUT: _ClassVar[ErrorCode]
ERROR_CODE_UNSPECIFIED: ErrorCode
ERROR_CODE_AUTH_REQUIRED: ErrorCode
ERROR_CODE_AUTH_INVALID: ErrorCode
ERROR_CODE_AUTH_EXPIRED: ErrorCode
ERROR_CODE_ACL_DENIED: ErrorCode
ERROR_CODE_BAD_FRAME: ErrorCode
ERROR_CODE_FRAME_TOO_LARGE: ErrorCode
ERROR_CODE_RATE_LIMITED: ErrorCode
ERROR_CODE_UNKNOWN_GROUP: ErrorCode
ERROR_CODE_SNAPSHOT_UNAVAILABLE: ErrorCode
ERROR_CODE_SLOW_CONSUMER: ErrorCode
ERROR_CODE_INTERNAL: ErrorCode
ERROR_CODE_ORIGIN_DENIED: ErrorCode
ERROR_CODE_PROTOCOL_VERSION: ErrorCode
ERROR_CODE_HEARTBEAT_TIMEOUT: ErrorCode

class GroupRef(_message.Message):
    __slots__ = ("group", "shards")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    group: str
    shards: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, group: _Optional[str] = ..., shards: _Optional[_Iterable[int]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("token", "protocol_version", "client", "session_id")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    token: str
    protocol_version: int
    client: str
    session_id: str
    def __init__(self, token: _Optional[str] = ..., protocol_version: _Optional[int] = ..., client: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class Subscribe(_message.Message):
    __slots__ = ("groups",)
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[GroupRef]
    def __init__(self, groups: _Optional[_Iterable[_Union[GroupRef, _Mapping]]] = ...) -> None: ...

class Unsubscribe(_message.Message):
    __slots__ = ("groups",)
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[GroupRef]
    def __init__(self, groups: _Optional[_Iterable[_Union[GroupRef, _Mapping]]] = ...) -> None: ...

class ResumePoint(_message.Message):
    __slots__ = ("group", "shard", "epoch", "seq")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    group: str
    shard: int
    epoch: int
    seq: int
    def __init__(self, group: _Optional[str] = ..., shard: _Optional[int] = ..., epoch: _Optional[int] = ..., seq: _Optional[int] = ...) -> None: ...

class Resume(_message.Message):
    __slots__ = ("points",)
    POINTS_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[ResumePoint]
    def __init__(self, points: _Optional[_Iterable[_Union[ResumePoint, _Mapping]]] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ("ts_us", "nonce")
    TS_US_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    ts_us: int
    nonce: int
    def __init__(self, ts_us: _Optional[int] = ..., nonce: _Optional[int] = ...) -> None: ...

class RefreshToken(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ("group",)
    GROUP_FIELD_NUMBER: _ClassVar[int]
    group: str
    def __init__(self, group: _Optional[str] = ...) -> None: ...

class ClientMetrics(_message.Message):
    __slots__ = ("render_latency_ms", "tabs", "fps", "dropped_batches", "reconnects", "checksum_mismatches")
    RENDER_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    TABS_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_BATCHES_FIELD_NUMBER: _ClassVar[int]
    RECONNECTS_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_MISMATCHES_FIELD_NUMBER: _ClassVar[int]
    render_latency_ms: _containers.RepeatedScalarFieldContainer[float]
    tabs: int
    fps: float
    dropped_batches: int
    reconnects: int
    checksum_mismatches: int
    def __init__(self, render_latency_ms: _Optional[_Iterable[float]] = ..., tabs: _Optional[int] = ..., fps: _Optional[float] = ..., dropped_batches: _Optional[int] = ..., reconnects: _Optional[int] = ..., checksum_mismatches: _Optional[int] = ...) -> None: ...

class ClientFrame(_message.Message):
    __slots__ = ("id", "hello", "subscribe", "unsubscribe", "resume", "ping", "refresh", "snapshot_request", "metrics")
    ID_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    REFRESH_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_REQUEST_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    id: int
    hello: Hello
    subscribe: Subscribe
    unsubscribe: Unsubscribe
    resume: Resume
    ping: Ping
    refresh: RefreshToken
    snapshot_request: SnapshotRequest
    metrics: ClientMetrics
    def __init__(self, id: _Optional[int] = ..., hello: _Optional[_Union[Hello, _Mapping]] = ..., subscribe: _Optional[_Union[Subscribe, _Mapping]] = ..., unsubscribe: _Optional[_Union[Unsubscribe, _Mapping]] = ..., resume: _Optional[_Union[Resume, _Mapping]] = ..., ping: _Optional[_Union[Ping, _Mapping]] = ..., refresh: _Optional[_Union[RefreshToken, _Mapping]] = ..., snapshot_request: _Optional[_Union[SnapshotRequest, _Mapping]] = ..., metrics: _Optional[_Union[ClientMetrics, _Mapping]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("session_id", "protocol_version", "server_time_us", "heartbeat_ms", "token_expires_us", "principal", "allowed")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_US_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_MS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_EXPIRES_US_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    protocol_version: int
    server_time_us: int
    heartbeat_ms: int
    token_expires_us: int
    principal: str
    allowed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, session_id: _Optional[str] = ..., protocol_version: _Optional[int] = ..., server_time_us: _Optional[int] = ..., heartbeat_ms: _Optional[int] = ..., token_expires_us: _Optional[int] = ..., principal: _Optional[str] = ..., allowed: _Optional[_Iterable[str]] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "ref_id", "group", "fatal")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REF_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    FATAL_FIELD_NUMBER: _ClassVar[int]
    code: ErrorCode
    message: str
    ref_id: int
    group: str
    fatal: bool
    def __init__(self, code: _Optional[_Union[ErrorCode, str]] = ..., message: _Optional[str] = ..., ref_id: _Optional[int] = ..., group: _Optional[str] = ..., fatal: _Optional[bool] = ...) -> None: ...

class DegradeChange(_message.Message):
    __slots__ = ("level", "reason", "recovery", "paused_groups")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_FIELD_NUMBER: _ClassVar[int]
    PAUSED_GROUPS_FIELD_NUMBER: _ClassVar[int]
    level: int
    reason: str
    recovery: str
    paused_groups: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, level: _Optional[int] = ..., reason: _Optional[str] = ..., recovery: _Optional[str] = ..., paused_groups: _Optional[_Iterable[str]] = ...) -> None: ...

class Pong(_message.Message):
    __slots__ = ("ts_us", "nonce", "server_time_us")
    TS_US_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_US_FIELD_NUMBER: _ClassVar[int]
    ts_us: int
    nonce: int
    server_time_us: int
    def __init__(self, ts_us: _Optional[int] = ..., nonce: _Optional[int] = ..., server_time_us: _Optional[int] = ...) -> None: ...

class Subscribed(_message.Message):
    __slots__ = ("groups",)
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[GroupRef]
    def __init__(self, groups: _Optional[_Iterable[_Union[GroupRef, _Mapping]]] = ...) -> None: ...

class GoAway(_message.Message):
    __slots__ = ("retry_ms", "reason", "close_in_ms")
    RETRY_MS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CLOSE_IN_MS_FIELD_NUMBER: _ClassVar[int]
    retry_ms: int
    reason: str
    close_in_ms: int
    def __init__(self, retry_ms: _Optional[int] = ..., reason: _Optional[str] = ..., close_in_ms: _Optional[int] = ...) -> None: ...

class ServerFrame(_message.Message):
    __slots__ = ("welcome", "deltas", "snapshots", "error", "degrade", "pong", "subscribed", "ts_send_us", "go_away")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    DELTAS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DEGRADE_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    TS_SEND_US_FIELD_NUMBER: _ClassVar[int]
    GO_AWAY_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    deltas: _containers.RepeatedCompositeFieldContainer[_marketdata_pb2.Delta]
    snapshots: _containers.RepeatedCompositeFieldContainer[_marketdata_pb2.Snapshot]
    error: Error
    degrade: DegradeChange
    pong: Pong
    subscribed: Subscribed
    ts_send_us: int
    go_away: GoAway
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., deltas: _Optional[_Iterable[_Union[_marketdata_pb2.Delta, _Mapping]]] = ..., snapshots: _Optional[_Iterable[_Union[_marketdata_pb2.Snapshot, _Mapping]]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., degrade: _Optional[_Union[DegradeChange, _Mapping]] = ..., pong: _Optional[_Union[Pong, _Mapping]] = ..., subscribed: _Optional[_Union[Subscribed, _Mapping]] = ..., ts_send_us: _Optional[int] = ..., go_away: _Optional[_Union[GoAway, _Mapping]] = ...) -> None: ...
