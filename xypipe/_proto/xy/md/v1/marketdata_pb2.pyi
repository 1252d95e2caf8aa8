from xypipe._proto.xy.md.v1 import tick_pb2 as _tick_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SymbolState(_message.Message):
    __slots__ = ("venue", "symbol", "seq", "ts_exchange_us", "ts_arrival_us", "last", "last_size", "bids", "asks", "vol", "oi", "flags", "price_decimals", "window_high", "window_low", "window_trades", "window_volume", "window_ticks", "total_trades", "checksum", "trimmed")
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
    PRICE_DECIMALS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_HIGH_FIELD_NUMBER: _ClassVar[int]
    WINDOW_LOW_FIELD_NUMBER: _ClassVar[int]
    WINDOW_TRADES_FIELD_NUMBER: _ClassVar[int]
    WINDOW_VOLUME_FIELD_NUMBER: _ClassVar[int]
    WINDOW_TICKS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TRADES_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    TRIMMED_FIELD_NUMBER: _ClassVar[int]
    venue: str
    symbol: str
    seq: int
    ts_exchange_us: int
    ts_arrival_us: int
    last: int
    last_size: int
    bids: _containers.RepeatedCompositeFieldContainer[_tick_pb2.PriceLevel]
    asks: _containers.RepeatedCompositeFieldContainer[_tick_pb2.PriceLevel]
    vol: int
    oi: int
    flags: int
    price_decimals: int
    window_high: int
    window_low: int
    window_trades: int
    window_volume: int
    window_ticks: int
    total_trades: int
    checksum: int
    trimmed: bool
    def __init__(self, venue: _Optional[str] = ..., symbol: _Optional[str] = ..., seq: _Optional[int] = ..., ts_exchange_us: _Optional[int] = ..., ts_arrival_us: _Optional[int] = ..., last: _Optional[int] = ..., last_size: _Optional[int] = ..., bids: _Optional[_Iterable[_Union[_tick_pb2.PriceLevel, _Mapping]]] = ..., asks: _Optional[_Iterable[_Union[_tick_pb2.PriceLevel, _Mapping]]] = ..., vol: _Optional[int] = ..., oi: _Optional[int] = ..., flags: _Optional[int] = ..., price_decimals: _Optional[int] = ..., window_high: _Optional[int] = ..., window_low: _Optional[int] = ..., window_trades: _Optional[int] = ..., window_volume: _Optional[int] = ..., window_ticks: _Optional[int] = ..., total_trades: _Optional[int] = ..., checksum: _Optional[int] = ..., trimmed: _Optional[bool] = ...) -> None: ...

class Delta(_message.Message):
    __slots__ = ("group", "shard", "seq", "epoch", "ts_emit_us", "symbols", "level", "window_ms", "first_seq", "removed", "fence")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TS_EMIT_US_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    WINDOW_MS_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    FENCE_FIELD_NUMBER: _ClassVar[int]
    group: str
    shard: int
    seq: int
    epoch: int
    ts_emit_us: int
    symbols: _containers.RepeatedCompositeFieldContainer[SymbolState]
    level: int
    window_ms: int
    first_seq: int
    removed: _containers.RepeatedScalarFieldContainer[str]
    fence: int
    def __init__(self, group: _Optional[str] = ..., shard: _Optional[int] = ..., seq: _Optional[int] = ..., epoch: _Optional[int] = ..., ts_emit_us: _Optional[int] = ..., symbols: _Optional[_Iterable[_Union[SymbolState, _Mapping]]] = ..., level: _Optional[int] = ..., window_ms: _Optional[int] = ..., first_seq: _Optional[int] = ..., removed: _Optional[_Iterable[str]] = ..., fence: _Optional[int] = ...) -> None: ...

class TopEntry(_message.Message):
    __slots__ = ("venue", "symbol", "value")
    VENUE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    venue: str
    symbol: str
    value: int
    def __init__(self, venue: _Optional[str] = ..., symbol: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...

class Snapshot(_message.Message):
    __slots__ = ("group", "version", "epoch", "shard_seq", "shards", "ts_emit_us", "symbols", "top_by", "top", "source_stream_seq", "window_ms", "fence")
    class ShardSeqEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    GROUP_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SHARD_SEQ_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    TS_EMIT_US_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    TOP_BY_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    SOURCE_STREAM_SEQ_FIELD_NUMBER: _ClassVar[int]
    WINDOW_MS_FIELD_NUMBER: _ClassVar[int]
    FENCE_FIELD_NUMBER: _ClassVar[int]
    group: str
    version: int
    epoch: int
    shard_seq: _containers.ScalarMap[int, int]
    shards: int
    ts_emit_us: int
    symbols: _containers.RepeatedCompositeFieldContainer[SymbolState]
    top_by: str
    top: _containers.RepeatedCompositeFieldContainer[TopEntry]
    source_stream_seq: int
    window_ms: int
    fence: int
    def __init__(self, group: _Optional[str] = ..., version: _Optional[int] = ..., epoch: _Optional[int] = ..., shard_seq: _Optional[_Mapping[int, int]] = ..., shards: _Optional[int] = ..., ts_emit_us: _Optional[int] = ..., symbols: _Optional[_Iterable[_Union[SymbolState, _Mapping]]] = ..., top_by: _Optional[str] = ..., top: _Optional[_Iterable[_Union[TopEntry, _Mapping]]] = ..., source_stream_seq: _Optional[int] = ..., window_ms: _Optional[int] = ..., fence: _Optional[int] = ...) -> None: ...
