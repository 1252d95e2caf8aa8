/**
 * The settings the page serves (the gateway's /config.json).
 * @returns {Promise<Config>}
 */
export function loadConfig(url?: string): Promise<Config>;
/**
 * Connect this tab. Options: `config` (object; else fetched from `configUrl`), `mode`
 * ("auto" | "shared-worker" | "leader"), `channel` (name shared by the tabs of one app).
 * @param {ConnectOptions} [options]
 * @returns {Promise<XyClient>}
 */
export function connect({ config, configUrl, mode, channel }?: ConnectOptions): Promise<XyClient>;
export { TIERS };
export class XyClient {
    /**
     * Made by connect().
     * @param {Config} config
     * @param {"shared-worker" | "leader"} mode
     * @param {string} channel
     */
    constructor(config: Config, mode: "shared-worker" | "leader", channel: string);
    config: import("./xy-worker.js").Config;
    mode: "shared-worker" | "leader";
    channel: string;
    /** @type {string} */
    tab: string;
    /** @type {Role} */
    role: Role;
    /** @private @type {Map<string, Handlers>} */
    private handlers;
    pace: number;
    /** @private @type {Map<string, Set<(value: unknown) => void>>} */
    private listeners;
    /** @type {ClientStatus | null} */
    status: ClientStatus | null;
    /** @private @type {number[]} */
    private pendingLatency;
    fps: number;
    frameP95: number;
    /** @private @type {(msg: TabMessage) => void} */
    private _send;
    /** @private @type {(() => void) | null} */
    private _releaseTabLock;
    /** @private @type {(() => void) | null} */
    private _releaseLeader;
    /** @private @type {Hub | null} */
    private hub;
    /** @private @type {BroadcastChannel | null} */
    private bc;
    /** @private @type {ReturnType<typeof setInterval> | undefined} */
    private _renderTimer;
    /** @private @type {(() => void) | null} */
    private _onVisibility;
    /** @private */
    private _closed;
    /**
     * Call `onBatch(batch)` for the batches of `group`; returns the unsubscribe function. `everyMs`
     * is the tier: 0 (TIERS.live) = every batch, as soon as this tab is free; otherwise at most one
     * batch per `everyMs` (TIERS.ladder 16, TIERS.overview 250), holding every change since the
     * last one (latest state per symbol, trades and volume accumulated). The browser keeps one
     * gateway subscription per group whatever the tiers. `group` is a group, or one of its
     * projections as `"group/projection"` (only the projection's symbols: its own stream).
     * @param {string} group
     * @param {(batch: DeliveredBatch) => void} onBatch
     * @param {{ everyMs?: number }} [options]
     * @returns {() => void}
     */
    subscribe(group: string, onBatch: (batch: DeliveredBatch) => void, { everyMs }?: {
        everyMs?: number;
    }): () => void;
    /**
     * Stop calling `onBatch` (every handler of the group at that tier when it is omitted).
     * @param {string} group
     * @param {((batch: DeliveredBatch) => void) | null} [onBatch]
     * @param {{ everyMs?: number }} [options]
     */
    unsubscribe(group: string, onBatch?: ((batch: DeliveredBatch) => void) | null, { everyMs }?: {
        everyMs?: number;
    }): void;
    /**
     * Tick arrival -> rendered, in ms; sent to the hub in small batches, then to the gateway.
     * @param {number} latencyMs
     */
    reportRender(latencyMs: number): void;
    /**
     * The tab's frame rate and frame-time p95 (for ClientMetrics.fps).
     * @param {number} fps
     * @param {number} frameP95
     */
    reportFrames(fps: number, frameP95: number): void;
    /**
     * Ask the hub to resynchronise a group from a fresh snapshot.
     * @param {string} group
     */
    resync(group: string): void;
    /**
     * Events: "status", "degrade", "error", "batch" (every batch, any group), "role", "pace".
     * Returns the function that removes the listener.
     * @template {keyof ClientEvents} K
     * @param {K} event
     * @param {(value: ClientEvents[K]) => void} fn
     * @returns {() => boolean}
     */
    on<K extends keyof ClientEvents>(event: K, fn: (value: ClientEvents[K]) => void): () => boolean;
    close(): void;
    /**
     * @param {string} event
     * @param {unknown} value
     * @private
     */
    private _emit;
    /**
     * @param {HubMessage} msg
     * @private
     */
    private _deliver;
    /** @private */
    private _hello;
    /** Starts the connection; connect() calls it once. */
    _start(): Promise<void>;
    /** @private */
    private _flushRender;
    /** @private */
    private _startWorker;
    /** @private */
    private _startLeaderElection;
    /**
     * @param {BroadcastChannel} bc
     * @private
     */
    private _becomeLeader;
    /**
     * @param {string} from
     * @param {TabMessage} msg
     * @private
     */
    private _hubReceive;
}
export type State = import("./xy-core.js").State;
export type Level = import("./xy-core.js").Level;
export type PlainSnapshot = import("./xy-core.js").PlainSnapshot;
export type TopEntry = import("./xy-core.js").TopEntry;
export type Config = import("./xy-worker.js").Config;
export type Status = import("./xy-worker.js").Status;
export type Degrade = import("./xy-worker.js").Degrade;
export type DeliveredBatch = import("./xy-worker.js").DeliveredBatch;
export type HubMessage = import("./xy-worker.js").HubMessage;
export type TabMessage = import("./xy-worker.js").TabMessage;
export type Role = "worker-client" | "follower" | "leader";
export type ClientStatus = Status & {
    t: "status";
    role: Role;
};
export type ClientError = {
    code: string | number;
    message: string;
    group?: string;
    fatal?: boolean;
};
/**
 * What `on(event, fn)` hands each listener.
 */
export type ClientEvents = {
    /**
     * the connection, degradation level and counters
     */
    status: ClientStatus;
    /**
     * the gateway changed its degradation level
     */
    degrade: {
        t: "degrade";
    } & Degrade;
    /**
     * an error of the hub (XY-UI-*) or the gateway's (its ErrorCode)
     */
    error: ClientError;
    /**
     * every batch, any group
     */
    batch: DeliveredBatch;
    /**
     * this tab became the leader
     */
    role: Role;
    /**
     * the draw rate the hub asks of this tab (fps; 0 = do not draw)
     */
    pace: number;
};
export type ConnectOptions = {
    /**
     * the settings (else fetched from `configUrl`)
     */
    config?: import("./xy-worker.js").Config | null | undefined;
    /**
     * where to fetch them ("/config.json")
     */
    configUrl?: string | undefined;
    /**
     * how the tabs share one connection
     */
    mode?: "auto" | "shared-worker" | "leader" | undefined;
    /**
     * the name shared by the tabs of one app ("xy")
     */
    channel?: string | undefined;
};
export type Handlers = {
    group: string;
    everyMs: number;
    fns: Set<(batch: DeliveredBatch) => void>;
};
/**
 * What travels on the leader's BroadcastChannel.
 */
export type Envelope = {
    leader: string;
} | {
    to: "leader";
    from: string;
    msg: TabMessage;
} | {
    to: string | string[];
    msg: HubMessage;
};
import { TIERS } from "./xy-outlet.js";
