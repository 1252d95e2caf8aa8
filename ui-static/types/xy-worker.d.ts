/** What the hub needs from its surroundings; tests and the leader tab pass the same shape. */
/** @returns {HubEnv} */
export function browserEnv(): HubEnv;
/** @typedef {import("./gen/xy_contracts.js").ServerFrame} ServerFrame */
/** @typedef {import("./gen/xy_contracts.js").ClientFrame} ClientFrame */
/** @typedef {import("./gen/xy_contracts.js").Snapshot} Snapshot */
/** @typedef {import("./gen/xy_contracts.js").Delta} Delta */
/** @typedef {import("./gen/xy_contracts.js").Welcome} Welcome */
/** @typedef {import("./gen/xy_contracts.js").DegradeChange} DegradeChange */
/** @typedef {import("./gen/xy_contracts.js").Error} ErrorFrame */
/** @typedef {import("./xy-core.js").PlainSnapshot} PlainSnapshot */
/** @typedef {import("./xy-outlet.js").HubBatch} HubBatch */
/** @typedef {import("./xy-outlet.js").TierBatch} TierBatch */
/** @typedef {import("./xy-outlet.js").Delivery} Delivery */
/** @typedef {import("./xy-outlet.js").DrawPlan} DrawPlan */
/**
 * The hub's settings (DEFAULTS, overridden by the config the first tab's hello carries).
 * @typedef {object} HubConfig
 * @property {string} wsUrl the gateway's ws:// or wss:// URL
 * @property {string} token a fixed token, or ""
 * @property {string} tokenUrl an endpoint answering {"token": "..."} (fetched for every connection)
 * @property {number} batchMs
 * @property {number} ackTimeoutMs
 * @property {number} maxInFlight
 * @property {number} heartbeatMs
 * @property {number} deadAfterBeats
 * @property {number} metricsMs
 * @property {number} statusMs
 * @property {number} backoffBaseMs
 * @property {number} backoffCapMs
 * @property {number} maxConcurrentConnects
 * @property {number} connectTimeoutMs
 * @property {number} stableMs
 * @property {number} snapshotTimeoutMs
 * @property {string} client
 */
/** @typedef {Partial<HubConfig> & { wsUrl: string }} Config what an app passes: wsUrl and any other setting */
/**
 * Tab -> hub messages.
 * @typedef {{ t: "hello", tab: string, config: Config, acks?: boolean, visible?: boolean }
 *   | { t: "sub", group: string, everyMs?: number }
 *   | { t: "unsub", group: string, everyMs?: number }
 *   | { t: "ack" }
 *   | { t: "vis", visible: boolean }
 *   | { t: "render", lat?: number[], fps?: number, frameP95?: number }
 *   | { t: "bye" }
 *   | { t: "resync", group: string }} TabMessage
 */
/** @typedef {{ code: string, message: string, group?: string, fatal?: boolean }} HubError */
/** @typedef {{ level: number, reason: string, recovery: string, paused: string[] }} Degrade */
/** @typedef {{ frames: number, bytes: number, deltas: number, snapshots: number, duplicates: number, gaps: number, epochChanges: number, rejected: number, snapshotRequests: number, checksumMismatches: number, checksumsVerified: number, batches: number, droppedBatches: number, badFrames: number, errors: number, connects: number, deliveries: number, coalesced: number, ackTimeouts: number, moves: number }} Counters */
/**
 * The hub's state, as every tab is sent it (about once a second and on every change).
 * @typedef {object} Status
 * @property {string} mode "shared-worker" | "leader"
 * @property {"idle" | "connecting" | "open" | "waiting" | "stopped"} state
 * @property {string} wsUrl
 * @property {string} sessionId
 * @property {string} principal
 * @property {number} reconnects
 * @property {number} failures
 * @property {number} tabs
 * @property {string[]} groups
 * @property {string[]} subscribed
 * @property {Degrade} degrade
 * @property {number} heartbeatMs
 * @property {number | null} rttMs
 * @property {number} offsetUs
 * @property {number | null} lastRecoveryMs
 * @property {number} pendingLatencySamples
 * @property {Counters} counters
 * @property {HubError | null} lastError
 */
/**
 * A batch as a tab receives it, with the clock offset to the gateway and when the hub posted it.
 * @typedef {TierBatch & { t: "batch", offsetUs: number, flushedUs: number }} DeliveredBatch
 */
/**
 * Hub -> tab messages.
 * @typedef {({ t: "status" } & Status)
 *   | { t: "batches", list: DeliveredBatch[] }
 *   | { t: "pace", fps: number }
 *   | ({ t: "degrade" } & Degrade)
 *   | { t: "error", code: string | number, message: string, group?: string, fatal?: boolean }} HubMessage
 */
/** Where the hub posts a tab's messages (a MessagePort, a BroadcastChannel, the tab itself). */
/** @typedef {{ post: (msg: HubMessage) => void }} Sink */
/** @typedef {{ sink: Sink, fps: number, frameP95: number, visible: boolean }} HubTab */
/**
 * The socket the hub needs: the browser's WebSocket, or a test's stand-in.
 * @typedef {Pick<WebSocket, "binaryType" | "readyState" | "send" | "close" | "onopen" | "onmessage" | "onclose" | "onerror">} SocketLike
 */
/**
 * What the hub needs from its surroundings (browserEnv, or a test's fake clock and socket).
 * @typedef {object} HubEnv
 * @property {new (url: string) => SocketLike} WebSocket
 * @property {(fn: () => void, ms: number) => number} setTimeout
 * @property {(id: number) => void} clearTimeout
 * @property {() => number} now monotonic milliseconds
 * @property {() => number} wallUs wall clock, microseconds
 * @property {typeof fetch} [fetch]
 * @property {LockManager} [locks]
 */
export const PROTOCOL_VERSION: 1;
/** The close a draining gateway sends a client that has not moved after its GoAway. */
export const DRAINING_CLOSE: 4100;
/** @type {Readonly<HubConfig>} */
export const DEFAULTS: Readonly<HubConfig>;
export class Hub {
    /**
     * @param {"shared-worker" | "leader"} mode
     * @param {HubEnv} [env]
     */
    constructor(mode: "shared-worker" | "leader", env?: HubEnv);
    mode: "shared-worker" | "leader";
    env: HubEnv;
    /** @type {HubConfig | null} */
    config: HubConfig | null;
    /** @type {Reconnector | null} set by configure() */
    reconnector: Reconnector | null;
    /** @type {Map<string, HubTab>} */
    tabs: Map<string, HubTab>;
    outlet: Outlet;
    /** @type {Map<string, DrawPlan>} */
    pace: Map<string, DrawPlan>;
    refs: RefCount;
    /** @type {SeqTracker<Delta>} */
    tracker: SeqTracker<Delta>;
    /** @type {Map<string, GroupBook>} */
    books: Map<string, GroupBook>;
    merger: BatchMerger;
    clock: ClockOffset;
    latencies: Reservoir;
    /** @type {((tabs: string[], msg: HubMessage) => void) | null} */
    multicast: ((tabs: string[], msg: HubMessage) => void) | null;
    /** @type {Status["state"]} */
    state: Status["state"];
    /** @type {SocketLike | null} */
    ws: SocketLike | null;
    /** @type {{ id: number, ws: SocketLike | null } | null} */
    attempt: {
        id: number;
        ws: SocketLike | null;
    } | null;
    sessionId: string;
    principal: string;
    heartbeatMs: number;
    tokenExpiresUs: number;
    /** @type {Set<string>} */
    subscribed: Set<string>;
    /** @type {Map<string, number>} */
    snapshotAsked: Map<string, number>;
    /** @type {Degrade} */
    degrade: Degrade;
    /** @type {HubError | null} */
    lastError: HubError | null;
    frameIds: number;
    batchIds: number;
    nonce: number;
    lastRx: number;
    connectedAt: number;
    disconnectedAt: number;
    /** @type {number | null} */
    lastRecoveryMs: number | null;
    awaitingRecovery: boolean;
    /** @type {Counters} */
    counters: Counters;
    _reported: {
        reconnects: number;
        droppedBatches: number;
        checksumMismatches: number;
    };
    /** @type {Record<string, number>} */
    timers: Record<string, number>;
    /**
     * @param {string} tab
     * @param {Sink} sink
     */
    attach(tab: string, sink: Sink): void;
    /** @param {string} tab */
    detach(tab: string): void;
    /**
     * A message from a tab (already attached by the transport).
     * @param {string} tab
     * @param {TabMessage} msg
     */
    handle(tab: string, msg: TabMessage): void;
    /** @param {Config} config */
    configure(config: Config): void;
    /**
     * The settings, set by configure() (the first tab's hello) before any connection runs.
     * @returns {HubConfig}
     */
    _cfg(): HubConfig;
    /** @returns {Reconnector} the reconnector configure() made */
    _rc(): Reconnector;
    stop(): void;
    _driveConnection(): void;
    _connect(): Promise<void>;
    /** @returns {Promise<string>} */
    _token(): Promise<string>;
    _attemptFailed(): void;
    /**
     * @param {string} why
     * @param {number | null} [movedRetryMs] set when the gateway asked this client to move (its
     *   GoAway's retry hint): reconnect at once — to the configured wsUrl, the only place this
     *   hub ever connects to — and resume; not counted as a failure.
     */
    _socketGone(why: string, movedRetryMs?: number | null): void;
    /** @param {string} why */
    _closeSocket(why: string): void;
    /**
     * One ClientFrame with the next id and `fields` (hello, subscribe, ping, ...).
     * @param {Exclude<import("@bufbuild/protobuf").MessageInitShape<typeof ClientFrameSchema>, ClientFrame>} fields
     */
    _send(fields: Exclude<import("@bufbuild/protobuf").MessageInitShape<typeof ClientFrameSchema>, ClientFrame>): boolean;
    /** @param {unknown} data */
    _onFrame(data: unknown): void;
    /**
     * @param {Welcome} w
     * @param {number} now
     */
    _onWelcome(w: Welcome, now: number): void;
    /** @param {DegradeChange} d */
    _onDegrade(d: DegradeChange): void;
    /** @param {ErrorFrame} e */
    _onError(e: ErrorFrame): void;
    /**
     * @param {Snapshot} snap
     * @param {number} now
     */
    _onSnapshot(snap: Snapshot, now: number): void;
    /**
     * @param {Delta} delta
     * @param {number} now
     */
    _onDelta(delta: Delta, now: number): void;
    /**
     * @param {Delta} delta
     * @param {number} now
     */
    _applyDelta(delta: Delta, now: number): void;
    /** @param {number} now */
    _noteRecovery(now: number): void;
    /**
     * @param {string} group
     * @param {string} why
     */
    _askSnapshot(group: string, why: string): void;
    /** @param {string} group */
    _book(group: string): GroupBook;
    /** @param {string[]} groups */
    _sendSubscribe(groups: string[]): void;
    /** @param {string} group */
    _dropGroup(group: string): void;
    /** The group's current state as a batch (what a new, or newly visible, view is sent first). */
    /**
     * @param {string} group
     * @returns {HubBatch | null}
     */
    _viewOf(group: string): HubBatch | null;
    /** This frame's batches, one per group, to the outlet (sent on to idle tabs at once). */
    /** @param {number} now */
    _offer(now: number): void;
    /**
     * Post the outlet's deliveries (one message per tab), then arm the timer for what waits on a
     * tier's interval or an unacknowledged delivery. In leader mode tabs sent the very same
     * batches share one BroadcastChannel message.
     */
    /** @param {Delivery[]} deliveries */
    _deliver(deliveries: Delivery[]): void;
    /** Tell each tab whose draw rate changed (planDraw over every tab's reports). */
    _replan(): void;
    /**
     * @param {string} group
     * @param {HubMessage} msg
     */
    _fanout(group: string, msg: HubMessage): void;
    /** @param {HubMessage} msg */
    _broadcastAll(msg: HubMessage): void;
    /**
     * @param {string} tab
     * @param {HubMessage} msg
     */
    _post(tab: string, msg: HubMessage): void;
    /** @returns {{ t: "status" } & Status} */
    _status(): {
        t: "status";
    } & Status;
    _broadcastStatus(): void;
    _heartbeat(): void;
    _scheduleRefresh(): void;
    _onStatusTimer(): void;
    _onMetricsTimer(): void;
    /**
     * @param {string} name
     * @param {number} everyMs
     * @param {() => void} fn
     */
    _schedule(name: string, everyMs: number, fn: () => void): void;
    /**
     * @param {string} name
     * @param {number} ms
     * @param {() => void} fn
     */
    _scheduleOnce(name: string, ms: number, fn: () => void): void;
    /** @param {string} name */
    _cancel(name: string): void;
}
export type ServerFrame = import("./gen/xy_contracts.js").ServerFrame;
export type ClientFrame = import("./gen/xy_contracts.js").ClientFrame;
export type Snapshot = import("./gen/xy_contracts.js").Snapshot;
export type Delta = import("./gen/xy_contracts.js").Delta;
export type Welcome = import("./gen/xy_contracts.js").Welcome;
export type DegradeChange = import("./gen/xy_contracts.js").DegradeChange;
export type ErrorFrame = import("./gen/xy_contracts.js").Error;
export type PlainSnapshot = import("./xy-core.js").PlainSnapshot;
export type HubBatch = import("./xy-outlet.js").HubBatch;
export type TierBatch = import("./xy-outlet.js").TierBatch;
export type Delivery = import("./xy-outlet.js").Delivery;
export type DrawPlan = import("./xy-outlet.js").DrawPlan;
/**
 * The hub's settings (DEFAULTS, overridden by the config the first tab's hello carries).
 */
export type HubConfig = {
    /**
     * the gateway's ws:// or wss:// URL
     */
    wsUrl: string;
    /**
     * a fixed token, or ""
     */
    token: string;
    /**
     * an endpoint answering {"token": "..."} (fetched for every connection)
     */
    tokenUrl: string;
    batchMs: number;
    ackTimeoutMs: number;
    maxInFlight: number;
    heartbeatMs: number;
    deadAfterBeats: number;
    metricsMs: number;
    statusMs: number;
    backoffBaseMs: number;
    backoffCapMs: number;
    maxConcurrentConnects: number;
    connectTimeoutMs: number;
    stableMs: number;
    snapshotTimeoutMs: number;
    client: string;
};
/**
 * what an app passes: wsUrl and any other setting
 */
export type Config = Partial<HubConfig> & {
    wsUrl: string;
};
/**
 * Tab -> hub messages.
 */
export type TabMessage = {
    t: "hello";
    tab: string;
    config: Config;
    acks?: boolean;
    visible?: boolean;
} | {
    t: "sub";
    group: string;
    everyMs?: number;
} | {
    t: "unsub";
    group: string;
    everyMs?: number;
} | {
    t: "ack";
} | {
    t: "vis";
    visible: boolean;
} | {
    t: "render";
    lat?: number[];
    fps?: number;
    frameP95?: number;
} | {
    t: "bye";
} | {
    t: "resync";
    group: string;
};
export type HubError = {
    code: string;
    message: string;
    group?: string;
    fatal?: boolean;
};
export type Degrade = {
    level: number;
    reason: string;
    recovery: string;
    paused: string[];
};
export type Counters = {
    frames: number;
    bytes: number;
    deltas: number;
    snapshots: number;
    duplicates: number;
    gaps: number;
    epochChanges: number;
    rejected: number;
    snapshotRequests: number;
    checksumMismatches: number;
    checksumsVerified: number;
    batches: number;
    droppedBatches: number;
    badFrames: number;
    errors: number;
    connects: number;
    deliveries: number;
    coalesced: number;
    ackTimeouts: number;
    moves: number;
};
/**
 * The hub's state, as every tab is sent it (about once a second and on every change).
 */
export type Status = {
    /**
     * "shared-worker" | "leader"
     */
    mode: string;
    state: "idle" | "connecting" | "open" | "waiting" | "stopped";
    wsUrl: string;
    sessionId: string;
    principal: string;
    reconnects: number;
    failures: number;
    tabs: number;
    groups: string[];
    subscribed: string[];
    degrade: Degrade;
    heartbeatMs: number;
    rttMs: number | null;
    offsetUs: number;
    lastRecoveryMs: number | null;
    pendingLatencySamples: number;
    counters: Counters;
    lastError: HubError | null;
};
/**
 * A batch as a tab receives it, with the clock offset to the gateway and when the hub posted it.
 */
export type DeliveredBatch = TierBatch & {
    t: "batch";
    offsetUs: number;
    flushedUs: number;
};
/**
 * Hub -> tab messages.
 */
export type HubMessage = ({
    t: "status";
} & Status) | {
    t: "batches";
    list: DeliveredBatch[];
} | {
    t: "pace";
    fps: number;
} | ({
    t: "degrade";
} & Degrade) | {
    t: "error";
    code: string | number;
    message: string;
    group?: string;
    fatal?: boolean;
};
export type Sink = {
    post: (msg: HubMessage) => void;
};
export type HubTab = {
    sink: Sink;
    fps: number;
    frameP95: number;
    visible: boolean;
};
/**
 * The socket the hub needs: the browser's WebSocket, or a test's stand-in.
 */
export type SocketLike = Pick<WebSocket, "binaryType" | "readyState" | "send" | "close" | "onopen" | "onmessage" | "onclose" | "onerror">;
/**
 * What the hub needs from its surroundings (browserEnv, or a test's fake clock and socket).
 */
export type HubEnv = {
    WebSocket: new (url: string) => SocketLike;
    setTimeout: (fn: () => void, ms: number) => number;
    clearTimeout: (id: number) => void;
    /**
     * monotonic milliseconds
     */
    now: () => number;
    /**
     * wall clock, microseconds
     */
    wallUs: () => number;
    fetch?: typeof fetch | undefined;
    locks?: LockManager | undefined;
};
import { Reconnector } from "./xy-core.js";
import { Outlet } from "./xy-outlet.js";
import { RefCount } from "./xy-core.js";
import { SeqTracker } from "./xy-core.js";
import { GroupBook } from "./xy-core.js";
import { BatchMerger } from "./xy-core.js";
import { ClockOffset } from "./xy-core.js";
import { Reservoir } from "./xy-core.js";
import { ClientFrameSchema } from "./gen/xy_contracts.js";
