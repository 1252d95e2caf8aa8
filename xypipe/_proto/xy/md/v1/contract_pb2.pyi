from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    PRIORITY_LOW: _ClassVar[Priority]
    PRIORITY_NORMAL: _ClassVar[Priority]
    PRIORITY_HIGH: _ClassVar[Priority]
PRIORITY_UNSPECIFIED: Priority
PRIORITY_LOW: Priority
PRIORITY_NORMAL: Priority
PRIORITY_HIGH: Priority

class Contract(_message.Message):
    __slots__ = ("venue", "symbol", "group", "name", "currency", "price_decimals", "tick_size", "lot_size", "priority", "version")
    VENUE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PRICE_DECIMALS_FIELD_NUMBER: _ClassVar[int]
    TICK_SIZE_FIELD_NUMBER: _ClassVar[int]
    LOT_SIZE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    venue: str
    symbol: str
    group: str
    name: str
    currency: str
    price_decimals: int
    tick_size: int
    lot_size: int
    priority: Priority
    version: int
    def __init__(self, venue: _Optional[str] = ..., symbol: _Optional[str] = ..., group: _Optional[str] = ..., name: _Optional[str] = ..., currency: _Optional[str] = ..., price_decimals: _Optional[int] = ..., tick_size: _Optional[int] = ..., lot_size: _Optional[int] = ..., priority: _Optional[_Union[Priority, str]] = ..., version: _Optional[int] = ...) -> None: ...
