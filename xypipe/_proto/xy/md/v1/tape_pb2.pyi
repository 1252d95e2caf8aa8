from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class TapeHeader(_message.Message):
    __slots__ = ("format", "version", "created_us", "source", "seed", "subjects", "records")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_US_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SUBJECTS_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    format: str
    version: int
    created_us: int
    source: str
    seed: int
    subjects: _containers.RepeatedScalarFieldContainer[str]
    records: int
    def __init__(self, format: _Optional[str] = ..., version: _Optional[int] = ..., created_us: _Optional[int] = ..., source: _Optional[str] = ..., seed: _Optional[int] = ..., subjects: _Optional[_Iterable[str]] = ..., records: _Optional[int] = ...) -> None: ...

class TapeRecord(_message.Message):
    __slots__ = ("dt_us", "subject", "data")
    DT_US_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dt_us: int
    subject: str
    data: bytes
    def __init__(self, dt_us: _Optional[int] = ..., subject: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...
