/**
 * A protobuf int64/uint64 field as the generated code gives it (bigint), or as a JS number.
 * @typedef {bigint | number | null | undefined} Int64
 */
/**
 * One price level of a book side, with JS numbers.
 * @typedef {{ price: number, size: number, orders: number }} Level
 */
/**
 * A SymbolState as a plain object with JS numbers (plainState): what tabs receive.
 * @typedef {object} State
 * @property {string} venue
 * @property {string} symbol
 * @property {number} seq
 * @property {number} tsExchangeUs
 * @property {number} tsArrivalUs
 * @property {number} last
 * @property {number} lastSize
 * @property {Level[]} bids
 * @property {Level[]} asks
 * @property {number} vol
 * @property {number} oi
 * @property {number} flags
 * @property {number} priceDecimals
 * @property {number} windowHigh
 * @property {number} windowLow
 * @property {number} windowTrades
 * @property {number} windowVolume
 * @property {number} windowTicks
 * @property {number} totalTrades
 * @property {number} checksum
 * @property {boolean} trimmed
 */
/**
 * A SymbolState as it comes off the wire (the protobuf-es message, or a plain object with some
 * fields absent): what plainState accepts.
 * @typedef {object} WireState
 * @property {string} venue
 * @property {string} symbol
 * @property {Int64} [seq]
 * @property {Int64} [tsExchangeUs]
 * @property {Int64} [tsArrivalUs]
 * @property {Int64} [last]
 * @property {Int64} [lastSize]
 * @property {{ price?: Int64, size?: Int64, orders?: number }[]} [bids]
 * @property {{ price?: Int64, size?: Int64, orders?: number }[]} [asks]
 * @property {Int64} [vol]
 * @property {Int64} [oi]
 * @property {number} [flags]
 * @property {number} [priceDecimals]
 * @property {Int64} [windowHigh]
 * @property {Int64} [windowLow]
 * @property {number} [windowTrades]
 * @property {Int64} [windowVolume]
 * @property {number} [windowTicks]
 * @property {Int64} [totalTrades]
 * @property {number} [checksum]
 * @property {boolean} [trimmed]
 */
/**
 * A delta as SeqTracker judges it (the protobuf-es Delta, or a plain object).
 * @typedef {{ group: string, shard?: number, seq: Int64, firstSeq?: Int64, epoch: Int64 }} DeltaHead
 */
/**
 * A delta as plain object (mergeDeltas' input and output).
 * @typedef {object} PlainDelta
 * @property {string} group
 * @property {number} [shard]
 * @property {number} epoch
 * @property {number} seq
 * @property {number} [firstSeq]
 * @property {number} [windowMs]
 * @property {number} [level]
 * @property {number} [tsEmitUs]
 * @property {string[]} [removed] wire keys "venue.symbol"
 * @property {State[]} [symbols]
 */
/**
 * A snapshot as plain object (what the hub keeps and tabs receive).
 * @typedef {object} PlainSnapshot
 * @property {string} group
 * @property {number} [version]
 * @property {number} [epoch]
 * @property {State[]} symbols
 * @property {TopEntry[]} [top] the group's Top-K, best first
 * @property {string} [topBy]
 * @property {number} [tsEmitUs]
 * @property {boolean} [synthetic] true for a GroupBook view (no snapshot on the wire)
 */
/** @typedef {{ venue: string, symbol: string, value: number }} TopEntry */
/**
 * What a tab's subscription receives: every change of one group since the last batch.
 * @typedef {object} Batch
 * @property {string} group
 * @property {PlainSnapshot | null} snapshot set when the group was (re)built from a snapshot
 * @property {State[]} symbols the latest state of each symbol that changed
 * @property {string[]} removed symbolKeys ("venue:symbol") that left the group
 * @property {number} deltas how many deltas the batch folds
 * @property {number} minArrivalUs the oldest tick arrival time it stands for (0: unknown)
 * @property {Record<number, number>} seqs the last sequence per shard
 */
/** @typedef {"apply" | "duplicate" | "gap" | "far_future" | "stale_epoch" | "future_epoch"} Verdict */
/** @typedef {"ok" | "mismatch" | "skipped"} ChecksumResult */
/**
 * What to say of a caught value: its message when it has one, else the value.
 * @param {unknown} err
 */
export function errorText(err: unknown): unknown;
/** A protobuf int64/uint64 field as a JS number, whether the generated code gave bigint or number. */
/**
 * @param {Int64} value
 * @returns {number}
 */
export function num(value: Int64): number;
/**
 * Judge a delta `{epoch, firstSeq, seq}` against its stream's baseline `[epoch, last]` (null
 * when there is none). The one rule both languages apply (proto/scenarios/sequence.json):
 *   "apply"        – no baseline yet, or same epoch and first = last + 1;
 *   "duplicate"    – same epoch, seq <= last;
 *   "gap"          – same epoch, last + 1 < first <= last + 1 + maxGap (or an overlap): resync;
 *   "far_future"   – same epoch, first beyond last + 1 + maxGap: rejected, re-anchor from a snapshot;
 *   "stale_epoch"  – an older epoch: rejected, nothing else happens;
 *   "future_epoch" – a newer epoch: held until a snapshot of it arrives.
 */
/**
 * @param {[number, number] | null | undefined} baseline
 * @param {number} epoch
 * @param {number} firstSeq
 * @param {number} seq
 * @returns {Verdict}
 */
export function judgeDelta(baseline: [number, number] | null | undefined, epoch: number, firstSeq: number, seq: number, maxGap?: number): Verdict;
/**
 * The gateway's resume rule for one stream `[epoch, firstHeld, last]` (null: unknown shard)
 * and the client's point `[epoch, seq]` (null: none for that stream); "bridged" or the reason
 * the group restarts from a snapshot.
 */
/**
 * @param {[number, number, number] | null | undefined} stream
 * @param {[number, number] | null | undefined} point
 */
export function judgeResume(stream: [number, number, number] | null | undefined, point: [number, number] | null | undefined): "unknown_shard" | "missing_shard" | "other_epoch" | "ahead" | "too_old" | "bridged";
/** A SymbolState (protobuf-es message) as a plain object with JS numbers; what tabs receive. */
/**
 * @param {WireState} s
 * @returns {State}
 */
export function plainState(s: WireState): State;
/** @param {{ venue: string, symbol: string }} s */
export function symbolKey(s: {
    venue: string;
    symbol: string;
}): string;
/** The symbolKey of a wire key "venue.symbol" (Delta.removed). */
/** @param {string} wireKey */
export function removedKey(wireKey: string): string;
/**
 * Merge a newer state of the same symbol over an older one without hiding a trade (the same
 * rule as the aggregator's and the gateway's merge, xypipe/_md/conflation.py merge_entries):
 * the current-state fields come from the newer entry, the window fields cover both windows
 * (high/low over the windows that traded, trades/volume/ticks summed) and the arrival time is
 * the oldest, so latency is measured from the first tick the merged entry stands for.
 */
/**
 * @param {State} older
 * @param {State} newer
 * @returns {State}
 */
export function mergeState(older: State, newer: State): State;
/**
 * Fold one delta's entries into `symbols` (Map symbolKey -> state) and `removed` (Set of
 * symbolKeys), the rule of xypipe/_md/conflation.py merge_deltas (proto/scenarios/merge.json):
 * removals first (an entry pending for a removed symbol goes, its removal stays), then each
 * entry merges over the one pending for its symbol (mergeState) and clears a removal of it (it
 * came back). With `isStale(prev, s)`, an entry it calls stale is skipped. Returns how many
 * entries merged over a pending one and how many were skipped as stale.
 */
/**
 * @param {Map<string, State>} symbols
 * @param {Set<string>} removed
 * @param {Iterable<string>} removedKeys
 * @param {Iterable<State>} states
 * @param {((prev: State, s: State) => boolean) | null} [isStale]
 */
export function foldEntries(symbols: Map<string, State>, removed: Set<string>, removedKeys: Iterable<string>, states: Iterable<State>, isStale?: ((prev: State, s: State) => boolean) | null): {
    merged: number;
    stale: number;
};
/**
 * Consecutive deltas of one (group, shard) stream as one delta: what one longer window would
 * have produced. The same function as xypipe/_md/conflation.py merge_deltas, checked against it
 * by the shared vectors (proto/scenarios/merge.json). Deltas and the result are plain objects:
 * {group, shard, epoch, seq, firstSeq, windowMs, level, tsEmitUs, removed: ["venue.symbol"],
 * symbols: [plainState]}. Throws for no delta, mixed streams or epochs, or a sequence gap
 * (merging must never hide a gap).
 */
/**
 * @param {PlainDelta[]} deltas
 * @returns {PlainDelta & { shard: number, firstSeq: number, symbols: State[], removed: string[] }}
 */
export function mergeDeltas(deltas: PlainDelta[]): PlainDelta & {
    shard: number;
    firstSeq: number;
    symbols: State[];
    removed: string[];
};
/** CRC-32 (IEEE 802.3, as zlib.crc32) of a byte array. */
/** @param {ArrayLike<number>} bytes */
export function crc32(bytes: ArrayLike<number>): number;
/**
 * The canonical text SymbolState.checksum covers (docs/protocol.md, "Canonical checksum";
 * xypipe/_md/book.py canonical_string):
 *   venue:symbol:seq:last:last_size:vol:oi:flags:total_trades[:bid_px:bid_sz][:ask_px:ask_sz]...
 * the book interleaved level by level (best first), a missing level on one side skipped, every
 * number a base-10 integer (prices are fixed-point).
 */
/** @param {State} s */
export function canonicalState(s: State): string;
/**
 * "ok", "mismatch", or "skipped" for a trimmed entry (degradation level 2: its checksum covers
 * the full book, which it does not carry). docs/protocol.md: ok = trimmed || crc32 === checksum.
 */
/**
 * @param {State} s
 * @returns {ChecksumResult}
 */
export function verifyChecksum(s: State): ChecksumResult;
/**
 * The state to hold for a trimmed entry (best level only): the entry with the deeper levels of
 * the state held before it (docs/protocol.md, "Deltas"). Any other entry is held as it came.
 */
/**
 * @param {State | null | undefined} held
 * @param {State} entry
 * @returns {State}
 */
export function keepDepth(held: State | null | undefined, entry: State): State;
/** Nearest-rank percentiles of a list of numbers: percentiles([..], [50, 95, 99]). */
/**
 * @param {ArrayLike<number> & Iterable<number>} values
 * @param {number[]} ps
 */
export function percentiles(values: ArrayLike<number> & Iterable<number>, ps: number[]): Record<string, number | null>;
/**
 * Exponential backoff with "equal jitter": the n-th retry waits between half and all of
 * min(cap, base * factor^n), so retries spread out without ever collapsing to zero.
 * The first retry after a connection that was up is immediate (`firstImmediate`): a dropped
 * socket usually reconnects at once, and the ≤ 3 s recovery target leaves no room to wait.
 */
export class Backoff {
    /** @param {{ baseMs?: number, capMs?: number, factor?: number, firstImmediate?: boolean, random?: () => number }} [options] */
    constructor({ baseMs, capMs, factor, firstImmediate, random }?: {
        baseMs?: number;
        capMs?: number;
        factor?: number;
        firstImmediate?: boolean;
        random?: () => number;
    });
    baseMs: number;
    capMs: number;
    factor: number;
    firstImmediate: boolean;
    random: () => number;
    /**
     * Delay before retry number `attempt` (0 = the first retry).
     * @param {number} attempt
     * @returns {number}
     */
    delay(attempt: number): number;
}
/**
 * When to (re)connect, and how many connection attempts may be in flight at once.
 *
 * The caller asks `due(now)`; when it says so it calls `begin(now)` (which refuses beyond
 * `maxConcurrent`), then reports `opened(id, now)` or `failed(id, now)`. Attempts that neither
 * opened nor failed within `attemptTimeoutMs` come back from `expired(now)` so the caller can
 * abandon them. A connection counts as stable (resetting the backoff) after `stableMs`.
 */
export class Reconnector {
    /** @param {{ backoff?: Backoff, maxConcurrent?: number, attemptTimeoutMs?: number, stableMs?: number }} [options] */
    constructor({ backoff, maxConcurrent, attemptTimeoutMs, stableMs }?: {
        backoff?: Backoff;
        maxConcurrent?: number;
        attemptTimeoutMs?: number;
        stableMs?: number;
    });
    backoff: Backoff;
    maxConcurrent: number;
    attemptTimeoutMs: number;
    stableMs: number;
    failures: number;
    nextAt: number;
    /** @type {Map<number, number>} */
    inFlight: Map<number, number>;
    /** @type {number | null} */
    openedAt: number | null;
    reconnects: number;
    everOpened: boolean;
    /** @type {number | null} */
    hintMs: number | null;
    _ids: number;
    /** May an attempt start now? (connected == false and not at the concurrency cap) */
    /** @param {number} now */
    due(now: number): boolean;
    /** Milliseconds until `due` may turn true (0 when it is already). */
    /** @param {number} now */
    waitMs(now: number): number;
    /**
     * @param {number} now
     * @returns {number | null} the attempt's id, null at the concurrency cap
     */
    begin(now: number): number | null;
    /**
     * @param {number | null} id
     * @param {number} now
     */
    opened(id: number | null, now: number): void;
    /**
     * An attempt failed (`id`) or the open connection closed (`id` null); returns the delay
     * before the next attempt. Failures only reset once a connection stayed up `stableMs`, so a
     * flapping gateway keeps pushing the delay up instead of being hammered.
     */
    /**
     * @param {number | null} id
     * @param {number} now
     * @returns {number}
     */
    failed(id: number | null, now: number): number;
    /**
     * The open connection ended by a planned move (the gateway's GoAway, or its draining close
     * 4100): not a failure. The next attempt may start at once; should it fail, the one after it
     * waits `retryMs` (the gateway's hint).
     * @param {number} now
     * @param {number} retryMs
     */
    moved(now: number, retryMs: number): void;
    /** Attempts that have been in flight longer than attemptTimeoutMs (the caller abandons them). */
    /** @param {number} now */
    expired(now: number): number[];
}
/** Which tabs want which keys (groups). A key stays wanted while any tab holds it. */
export class RefCount {
    /** @type {Map<string, Set<string>>} */
    byKey: Map<string, Set<string>>;
    /** @type {Map<string, Set<string>>} */
    byTab: Map<string, Set<string>>;
    /** Returns true when `key` went from unwanted to wanted (subscribe upstream). */
    /**
     * @param {string} tab
     * @param {string} key
     */
    add(tab: string, key: string): boolean;
    /** Returns true when `key` is no longer wanted by anyone (unsubscribe upstream). */
    /**
     * @param {string} tab
     * @param {string} key
     */
    remove(tab: string, key: string): boolean;
    /** Forget a tab; returns the keys nobody wants any more. */
    /** @param {string} tab */
    removeTab(tab: string): string[];
    /** @param {string} key */
    holders(key: string): Set<string>;
    /** @param {string} tab */
    keysOf(tab: string): Set<string>;
    keys(): string[];
    get tabs(): number;
}
/**
 * How far a delta may jump past its stream's last sequence and still be believed as a gap
 * (the same bound as xypipe/_md/seqrules.py DEFAULT_MAX_GAP; docs/protocol.md "Sequence rules").
 */
export const MAX_GAP: 256;
/** Verdicts that are never believed: counted, the baseline stays where it was. */
/** @type {ReadonlySet<string>} */
export const REJECTED: ReadonlySet<string>;
/**
 * Per-(group, shard) epoch and sequence. Classifies each delta with `judgeDelta`:
 *   "apply"        – next in sequence (or the first seen for the stream), apply it;
 *   "duplicate"    – already applied, drop it;
 *   "gap"          – deltas were missed: ask for a snapshot, hold this one;
 *   "far_future"   – implausible jump: drop it (never the baseline) and ask for a snapshot;
 *   "stale_epoch"  – from an aggregator incarnation already replaced: drop it, nothing else;
 *   "future_epoch" – a new aggregator incarnation: ask for a snapshot, hold this one;
 *   "held"         – a snapshot is already on its way for this group: hold the delta until it lands.
 * Held deltas are replayed by `applySnapshot`, which returns those newer than the snapshot.
 */
/**
 * @template {DeltaHead} [D=DeltaHead]
 */
export class SeqTracker<D extends DeltaHead = DeltaHead> {
    /**
     * @param {string} group
     * @param {number} shard
     */
    static key(group: string, shard: number): string;
    /** @param {{ maxHeld?: number, maxGap?: number }} [options] */
    constructor({ maxHeld, maxGap }?: {
        maxHeld?: number;
        maxGap?: number;
    });
    /** @type {Map<string, { group: string, shard: number, epoch: number, seq: number }>} */
    streams: Map<string, {
        group: string;
        shard: number;
        epoch: number;
        seq: number;
    }>;
    /** @type {Map<string, { since: number, held: D[] }>} */
    resyncing: Map<string, {
        since: number;
        held: D[];
    }>;
    maxHeld: number;
    maxGap: number;
    /**
     * @param {D} delta
     * @returns {Verdict | "held"}
     */
    check(delta: D): Verdict | "held";
    /** Start holding the group's deltas until its snapshot arrives (returns false if already). */
    /**
     * @param {string} group
     * @param {number} now
     * @param {D | null} [delta]
     */
    beginResync(group: string, now: number, delta?: D | null): boolean;
    /** @param {string} group */
    isResyncing(group: string): boolean;
    /** Groups whose snapshot has not arrived within `timeoutMs` (ask again). */
    /**
     * @param {number} now
     * @param {number} timeoutMs
     */
    overdue(now: number, timeoutMs: number): string[];
    /**
     * @param {{ since: number, held: D[] }} pending
     * @param {D} delta
     */
    _hold(pending: {
        since: number;
        held: D[];
    }, delta: D): void;
    /**
     * A snapshot of `group` arrived: its epoch and per-shard sequences become the baseline.
     * Returns the held deltas that follow it, in order, already accounted for (apply them).
     */
    /**
     * @param {{ group: string, epoch?: Int64, shardSeq?: Record<number, Int64> }} snapshot
     * @returns {D[]}
     */
    applySnapshot(snapshot: {
        group: string;
        epoch?: Int64;
        shardSeq?: Record<number, Int64>;
    }): D[];
    /** @param {string} group */
    forgetGroup(group: string): void;
    /**
     * What to ask for after a reconnect (proto/scenarios/resume.json): `points` to resume the
     * groups this client holds live from, and the groups to `subscribe` afresh (no point held,
     * or waiting for a snapshot). The same rule as xypipe/_md/seqrules.py's SeqTracker.
     */
    /** @param {string[]} groups */
    reconnectPlan(groups: string[]): {
        points: {
            group: string;
            shard: number;
            epoch: number;
            seq: number;
        }[];
        subscribe: string[];
    };
    /** Where we stand in every stream of `groups`, for a Resume frame after reconnecting. */
    /** @param {Iterable<string>} groups */
    resumePoints(groups: Iterable<string>): {
        group: string;
        shard: number;
        epoch: number;
        seq: number;
    }[];
}
/**
 * The batch being built for each group from one gateway frame. Deltas fold into one entry per
 * symbol (foldEntries; an entry older than the one pending is dropped as stale); a snapshot
 * replaces whatever was pending for its group. `drain()` returns one batch per group with
 * something new, and starts over.
 */
export class BatchMerger {
    /** @type {Map<string, { snapshot: PlainSnapshot | null, symbols: Map<string, State>, removed: Set<string>, deltas: number, minArrivalUs: number, seqs: Record<number, number> }>} */
    pending: Map<string, {
        snapshot: PlainSnapshot | null;
        symbols: Map<string, State>;
        removed: Set<string>;
        deltas: number;
        minArrivalUs: number;
        seqs: Record<number, number>;
    }>;
    merged: number;
    stale: number;
    /** @param {string} group */
    _entry(group: string): {
        snapshot: PlainSnapshot | null;
        symbols: Map<string, State>;
        removed: Set<string>;
        deltas: number;
        minArrivalUs: number;
        seqs: Record<number, number>;
    };
    /**
     * `states` are plain states (plainState) of one delta; `removed` the symbolKeys it says left
     * the group (Delta.removed, applied first: a symbol in both came back).
     */
    /**
     * @param {string} group
     * @param {number} shard
     * @param {number} seq
     * @param {State[]} states
     * @param {string[]} [removed]
     */
    addDelta(group: string, shard: number, seq: number, states: State[], removed?: string[]): void;
    /** `snapshot` = {group, version, epoch, symbols: [plain], top, topBy, tsEmitUs}. */
    /**
     * @param {string} group
     * @param {PlainSnapshot} snapshot
     */
    addSnapshot(group: string, snapshot: PlainSnapshot): void;
    get size(): number;
    /** @returns {Batch[]} */
    drain(): Batch[];
}
/**
 * The live state of one group, kept by the hub so a tab that subscribes to a group another
 * tab already has gets the current view at once instead of waiting for the next snapshot.
 */
export class GroupBook {
    /** @param {string} group */
    constructor(group: string);
    group: string;
    /** @type {Map<string, State>} */
    symbols: Map<string, State>;
    /** @type {TopEntry[]} */
    top: TopEntry[];
    topBy: string;
    version: number;
    epoch: number;
    /** @param {PlainSnapshot} snap */
    applySnapshot(snap: PlainSnapshot): void;
    /** Drop symbols that left the group (symbolKeys). */
    /** @param {Iterable<string>} keys */
    remove(keys: Iterable<string>): void;
    /** @param {Iterable<State>} states */
    applyStates(states: Iterable<State>): void;
    /**
     * Apply one delta's entries (plain states) after dropping the symbols it says left the group
     * (wire keys "venue.symbol"): a trimmed entry keeps the deeper levels held (keepDepth), every
     * other entry's checksum is verified (proto/scenarios/checksum.json, "apply"). Returns the
     * states as held now, the removed symbolKeys and one verifyChecksum result per entry.
     */
    /**
     * @param {Iterable<string>} removedWire
     * @param {State[]} entries
     */
    applyDelta(removedWire: Iterable<string>, entries: State[]): {
        states: State[];
        removed: string[];
        checks: ChecksumResult[];
    };
    /**
     * The whole group as a snapshot-shaped object (what a late-joining tab is sent).
     * @returns {PlainSnapshot & { version: number, epoch: number, top: TopEntry[], topBy: string }}
     */
    view(): PlainSnapshot & {
        version: number;
        epoch: number;
        top: TopEntry[];
        topBy: string;
    };
}
/**
 * A bounded sample of values between two reports: keeps at most `cap` of them by reservoir
 * sampling (Algorithm R), so a report is representative however many were added.
 */
export class Reservoir {
    constructor(cap?: number, random?: () => number);
    cap: number;
    random: () => number;
    /** @type {number[]} */
    values: number[];
    seen: number;
    /** @param {number} v */
    add(v: number): void;
    drain(): number[];
}
/**
 * Maps the local wall clock to the gateway's (microseconds). Each Pong gives one estimate
 * server - (sent + received) / 2; the one with the shortest round trip wins, since its error
 * is bounded by half that round trip.
 */
export class ClockOffset {
    offsetUs: number;
    bestRttUs: number;
    samples: number;
    /**
     * @param {number} sentUs
     * @param {number} receivedUs
     * @param {number} serverUs
     */
    observe(sentUs: number, receivedUs: number, serverUs: number): void;
    /** Before any Pong: one-way estimate from a server timestamp received now. */
    /**
     * @param {number} receivedUs
     * @param {number} serverUs
     */
    seed(receivedUs: number, serverUs: number): void;
}
/**
 * A protobuf int64/uint64 field as the generated code gives it (bigint), or as a JS number.
 */
export type Int64 = bigint | number | null | undefined;
/**
 * One price level of a book side, with JS numbers.
 */
export type Level = {
    price: number;
    size: number;
    orders: number;
};
/**
 * A SymbolState as a plain object with JS numbers (plainState): what tabs receive.
 */
export type State = {
    venue: string;
    symbol: string;
    seq: number;
    tsExchangeUs: number;
    tsArrivalUs: number;
    last: number;
    lastSize: number;
    bids: Level[];
    asks: Level[];
    vol: number;
    oi: number;
    flags: number;
    priceDecimals: number;
    windowHigh: number;
    windowLow: number;
    windowTrades: number;
    windowVolume: number;
    windowTicks: number;
    totalTrades: number;
    checksum: number;
    trimmed: boolean;
};
/**
 * A SymbolState as it comes off the wire (the protobuf-es message, or a plain object with some
 * fields absent): what plainState accepts.
 */
export type WireState = {
    venue: string;
    symbol: string;
    seq?: Int64;
    tsExchangeUs?: Int64;
    tsArrivalUs?: Int64;
    last?: Int64;
    lastSize?: Int64;
    bids?: {
        price?: Int64;
        size?: Int64;
        orders?: number;
    }[] | undefined;
    asks?: {
        price?: Int64;
        size?: Int64;
        orders?: number;
    }[] | undefined;
    vol?: Int64;
    oi?: Int64;
    flags?: number | undefined;
    priceDecimals?: number | undefined;
    windowHigh?: Int64;
    windowLow?: Int64;
    windowTrades?: number | undefined;
    windowVolume?: Int64;
    windowTicks?: number | undefined;
    totalTrades?: Int64;
    checksum?: number | undefined;
    trimmed?: boolean | undefined;
};
/**
 * A delta as SeqTracker judges it (the protobuf-es Delta, or a plain object).
 */
export type DeltaHead = {
    group: string;
    shard?: number;
    seq: Int64;
    firstSeq?: Int64;
    epoch: Int64;
};
/**
 * A delta as plain object (mergeDeltas' input and output).
 */
export type PlainDelta = {
    group: string;
    shard?: number | undefined;
    epoch: number;
    seq: number;
    firstSeq?: number | undefined;
    windowMs?: number | undefined;
    level?: number | undefined;
    tsEmitUs?: number | undefined;
    /**
     * wire keys "venue.symbol"
     */
    removed?: string[] | undefined;
    symbols?: State[] | undefined;
};
/**
 * A snapshot as plain object (what the hub keeps and tabs receive).
 */
export type PlainSnapshot = {
    group: string;
    version?: number | undefined;
    epoch?: number | undefined;
    symbols: State[];
    /**
     * the group's Top-K, best first
     */
    top?: TopEntry[] | undefined;
    topBy?: string | undefined;
    tsEmitUs?: number | undefined;
    /**
     * true for a GroupBook view (no snapshot on the wire)
     */
    synthetic?: boolean | undefined;
};
export type TopEntry = {
    venue: string;
    symbol: string;
    value: number;
};
/**
 * What a tab's subscription receives: every change of one group since the last batch.
 */
export type Batch = {
    group: string;
    /**
     * set when the group was (re)built from a snapshot
     */
    snapshot: PlainSnapshot | null;
    /**
     * the latest state of each symbol that changed
     */
    symbols: State[];
    /**
     * symbolKeys ("venue:symbol") that left the group
     */
    removed: string[];
    /**
     * how many deltas the batch folds
     */
    deltas: number;
    /**
     * the oldest tick arrival time it stands for (0: unknown)
     */
    minArrivalUs: number;
    /**
     * the last sequence per shard
     */
    seqs: Record<number, number>;
};
export type Verdict = "apply" | "duplicate" | "gap" | "far_future" | "stale_epoch" | "future_epoch";
export type ChecksumResult = "ok" | "mismatch" | "skipped";
