from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TickFlag(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TICK_FLAG_UNSPECIFIED: _ClassVar[TickFlag]
    TICK_FLAG_TRADE: _ClassVar[TickFlag]
    TICK_FLAG_HALTED: _ClassVar[TickFlag]
    TICK_FLAG_AUCTION: _ClassVar[TickFlag]
    TICK_FLAG_STALE: _ClassVar[TickFlag]
TICK_FLAG_UNSPECIFIED: TickFlag
TICK_FLAG_TRADE: TickFlag
TICK_FLAG_HALTED: TickFlag
TICK_FLAG_AUCTION: TickFlag
TICK_FLAG_STALE: TickFlag

class PriceLevel(_message.Message):
    __slots__ = ("price", "size", "orders")
    PRICE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    price: int
    size: int
    orders: int
    def __init__(self, price: _Optional[int] = ..., size: _Optional[int] = ..., orders: _Optional[int] = ...) -> None: ...

class Tick(_message.Message):
    __slots__ = ("venue", "symbol", "seq", "ts_exchange_us", "ts_arrival_us", "last", "last_size", "bids", "asks", "vol", "oi", "flags", "source", "price_decimals")
    VENUE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TS_EXCHANGE_US_FIELD_NUMBER: _ClassVar[int]
    TS_ARRIVAL_US_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    LAST_SIZE_FIELD_NUMBER: _ClassVar[int]
    BIDS_FIELD_NUMBER: _ClassVar[int]
    ASKS_FIELD_NUMBER: _ClassVar[int]
    VOL_FIELD_NUMBER: _ClassVar[int]
    OI_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PRICE_DECIMALS_FIELD_NUMBER: _ClassVar[int]
    venue: str
    symbol: str
    seq: int
    ts_exchange_us: int
    ts_arrival_us: int
    last: int
    last_size: int
    bids: _containers.RepeatedCompositeFieldContainer[PriceLevel]
    asks: _containers.RepeatedCompositeFieldContainer[PriceLevel]
    vol: int
    oi: int
    flags: int
    source: str
    price_decimals: int
    def __init__(self, venue: _Optional[str] = ..., symbol: _Optional[str] = ..., seq: _Optional[int] = ..., ts_exchange_us: _Optional[int] = ..., ts_arrival_us: _Optional[int] = ..., last: _Optional[int] = ..., last_size: _Optional[int] = ..., bids: _Optional[_Iterable[_Union[PriceLevel, _Mapping]]] = ..., asks: _Optional[_Iterable[_Union[PriceLevel, _Mapping]]] = ..., vol: _Optional[int] = ..., oi: _Optional[int] = ..., flags: _Optional[int] = ..., source: _Optional[str] = ..., price_decimals: _Optional[int] = ...) -> None: ...
