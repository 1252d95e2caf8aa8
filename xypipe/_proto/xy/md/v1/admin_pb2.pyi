from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class FeatureFlag(_message.Message):
    __slots__ = ("name", "value_json", "updated_by", "updated_at_us")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    UPDATED_BY_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_US_FIELD_NUMBER: _ClassVar[int]
    name: str
    value_json: str
    updated_by: str
    updated_at_us: int
    def __init__(self, name: _Optional[str] = ..., value_json: _Optional[str] = ..., updated_by: _Optional[str] = ..., updated_at_us: _Optional[int] = ...) -> None: ...

class HealthReport(_message.Message):
    __slots__ = ("service", "instance", "live", "ready", "checks", "ts_us")
    class ChecksEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    TS_US_FIELD_NUMBER: _ClassVar[int]
    service: str
    instance: str
    live: bool
    ready: bool
    checks: _containers.ScalarMap[str, str]
    ts_us: int
    def __init__(self, service: _Optional[str] = ..., instance: _Optional[str] = ..., live: _Optional[bool] = ..., ready: _Optional[bool] = ..., checks: _Optional[_Mapping[str, str]] = ..., ts_us: _Optional[int] = ...) -> None: ...
