// The library a tab uses to reach the browser's single gateway connection.
//
//   const xy = await connect({ config });          // or connect() to read /config.json
//   const off = xy.subscribe("fx", (batch) => ...);  // every batch, as soon as this tab is free
//   xy.subscribe("fx", fn, { everyMs: 250 });        // a tier: at most one merged batch per 250 ms
//   xy.reportRender(latencyMs);                      // tick arrival -> drawn, for ClientMetrics
//   xy.on("pace", (fps) => ...);                     // how fast the hub wants this tab to draw
//   xy.on("status", (s) => ...);                     // connection, level, counters
//
// Each delivery is acknowledged once its handlers ran: while a tab is busy (drawing), the hub
// merges what arrives instead of queueing it. The tab tells the hub when it is hidden (it is then
// sent nothing, and the current state at once when it shows again).
//
// `connect()` uses a SharedWorker (xy-worker.js) when the browser has one. Otherwise — or when
// asked with mode "leader" (e.g. the page's ?mode=leader flag) — the tabs elect a leader with
// a Web Lock; the leader runs the same Hub in the page and serves the others over a
// BroadcastChannel. When the leader tab goes, its lock passes to the next tab, which takes over
// the socket; the others re-announce their subscriptions to it.

import { errorText } from "./xy-core.js";
import { Hub } from "./xy-worker.js";
import { TIERS } from "./xy-outlet.js";

export { TIERS };

/** @typedef {import("./xy-core.js").State} State */
/** @typedef {import("./xy-core.js").Level} Level */
/** @typedef {import("./xy-core.js").PlainSnapshot} PlainSnapshot */
/** @typedef {import("./xy-core.js").TopEntry} TopEntry */
/** @typedef {import("./xy-worker.js").Config} Config */
/** @typedef {import("./xy-worker.js").Status} Status */
/** @typedef {import("./xy-worker.js").Degrade} Degrade */
/** @typedef {import("./xy-worker.js").DeliveredBatch} DeliveredBatch */
/** @typedef {import("./xy-worker.js").HubMessage} HubMessage */
/** @typedef {import("./xy-worker.js").TabMessage} TabMessage */

/** @typedef {"worker-client" | "follower" | "leader"} Role */
/** The hub's status as this tab sees it (with its own role). */
/** @typedef {Status & { t: "status", role: Role }} ClientStatus */
/** @typedef {{ code: string | number, message: string, group?: string, fatal?: boolean }} ClientError */
/**
 * What `on(event, fn)` hands each listener.
 * @typedef {object} ClientEvents
 * @property {ClientStatus} status the connection, degradation level and counters
 * @property {{ t: "degrade" } & Degrade} degrade the gateway changed its degradation level
 * @property {ClientError} error an error of the hub (XY-UI-*) or the gateway's (its ErrorCode)
 * @property {DeliveredBatch} batch every batch, any group
 * @property {Role} role this tab became the leader
 * @property {number} pace the draw rate the hub asks of this tab (fps; 0 = do not draw)
 */
/**
 * @typedef {object} ConnectOptions
 * @property {Config | null} [config] the settings (else fetched from `configUrl`)
 * @property {string} [configUrl] where to fetch them ("/config.json")
 * @property {"auto" | "shared-worker" | "leader"} [mode] how the tabs share one connection
 * @property {string} [channel] the name shared by the tabs of one app ("xy")
 */
/** @typedef {{ group: string, everyMs: number, fns: Set<(batch: DeliveredBatch) => void> }} Handlers */
/**
 * What travels on the leader's BroadcastChannel.
 * @typedef {{ leader: string } | { to: "leader", from: string, msg: TabMessage } | { to: string | string[], msg: HubMessage }} Envelope
 */

const RENDER_REPORT_MS = 500;

function isVisible() {
  return globalThis.document?.visibilityState !== "hidden";
}

function newId() {
  return globalThis.crypto?.randomUUID?.() ?? `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/** Absolute URLs, so the worker (whose base URL differs) resolves them as the page does. */
/**
 * @param {Config} config
 * @returns {Config}
 */
function absolutize(config) {
  const out = { ...config };
  for (const key of /** @type {const} */ (["wsUrl", "tokenUrl"])) {
    if (out[key]) out[key] = new URL(out[key], globalThis.location?.href).href;
  }
  return out;
}

/**
 * The settings the page serves (the gateway's /config.json).
 * @returns {Promise<Config>}
 */
export async function loadConfig(url = "/config.json") {
  const res = await fetch(url, { cache: "no-store" });
  if (!res.ok) throw new Error(`${url} answered ${res.status}`);
  return /** @type {Promise<Config>} */ (res.json());
}

/**
 * Connect this tab. Options: `config` (object; else fetched from `configUrl`), `mode`
 * ("auto" | "shared-worker" | "leader"), `channel` (name shared by the tabs of one app).
 * @param {ConnectOptions} [options]
 * @returns {Promise<XyClient>}
 */
export async function connect({ config = null, configUrl = "/config.json", mode = "auto", channel = "xy" } = {}) {
  const cfg = absolutize(config ?? (await loadConfig(configUrl)));
  const hasWorker = typeof SharedWorker === "function";
  const chosen = mode === "auto" ? (hasWorker ? "shared-worker" : "leader") : mode;
  if (chosen === "shared-worker" && !hasWorker) throw new Error("connect: this browser has no SharedWorker; use mode 'leader'");
  if (chosen === "leader" && !(globalThis.navigator?.locks && typeof BroadcastChannel === "function")) {
    throw new Error("connect: leader election needs Web Locks and BroadcastChannel");
  }
  const client = new XyClient(cfg, chosen, channel);
  await client._start();
  return client;
}

export class XyClient {
  /**
   * Made by connect().
   * @param {Config} config
   * @param {"shared-worker" | "leader"} mode
   * @param {string} channel
   */
  constructor(config, mode, channel) {
    this.config = config;
    this.mode = mode; // "shared-worker" | "leader"
    this.channel = channel;
    /** @type {string} */
    this.tab = newId();
    /** @type {Role} */
    this.role = mode === "shared-worker" ? "worker-client" : "follower";
    /** @private @type {Map<string, Handlers>} */
    this.handlers = new Map(); // "group@everyMs" -> {group, everyMs, fns: Set(fn)}
    this.pace = 60; // draw rate the hub asks of this tab (fps; 0 = do not draw)
    /** @private @type {Map<string, Set<(value: unknown) => void>>} */
    this.listeners = new Map(); // event -> Set(fn)
    /** @type {ClientStatus | null} */
    this.status = null;
    /** @private @type {number[]} */
    this.pendingLatency = [];
    this.fps = 0;
    this.frameP95 = 0;
    /** @private @type {(msg: TabMessage) => void} */
    this._send = () => {};
    /** @private @type {(() => void) | null} */
    this._releaseTabLock = null;
    /** @private @type {(() => void) | null} */
    this._releaseLeader = null;
    /** @private @type {Hub | null} */
    this.hub = null; // the Hub, when this tab is the leader
    /** @private @type {BroadcastChannel | null} */
    this.bc = null;
    /** @private @type {ReturnType<typeof setInterval> | undefined} */
    this._renderTimer = undefined;
    /** @private @type {(() => void) | null} */
    this._onVisibility = null;
    /** @private */
    this._closed = false;
  }

  // ------------------------------------------------------------------ public API

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
  subscribe(group, onBatch, { everyMs = TIERS.live } = {}) {
    if (!(Number.isFinite(everyMs) && everyMs >= 0)) {
      throw new RangeError(`subscribe(${JSON.stringify(group)}): everyMs must be a number of ms >= 0, got ${everyMs}`);
    }
    const key = `${group}@${everyMs}`;
    let view = this.handlers.get(key);
    if (view === undefined) {
      this.handlers.set(key, (view = { group, everyMs, fns: new Set() }));
      this._send({ t: "sub", group, everyMs });
    }
    view.fns.add(onBatch);
    return () => this.unsubscribe(group, onBatch, { everyMs });
  }

  /**
   * Stop calling `onBatch` (every handler of the group at that tier when it is omitted).
   * @param {string} group
   * @param {((batch: DeliveredBatch) => void) | null} [onBatch]
   * @param {{ everyMs?: number }} [options]
   */
  unsubscribe(group, onBatch, { everyMs = TIERS.live } = {}) {
    const key = `${group}@${everyMs}`;
    const view = this.handlers.get(key);
    if (view === undefined) return;
    if (onBatch) view.fns.delete(onBatch);
    else view.fns.clear();
    if (view.fns.size === 0) {
      this.handlers.delete(key);
      this._send({ t: "unsub", group, everyMs });
    }
  }

  /**
   * Tick arrival -> rendered, in ms; sent to the hub in small batches, then to the gateway.
   * @param {number} latencyMs
   */
  reportRender(latencyMs) {
    if (this.pendingLatency.length < 4096) this.pendingLatency.push(latencyMs);
  }

  /**
   * The tab's frame rate and frame-time p95 (for ClientMetrics.fps).
   * @param {number} fps
   * @param {number} frameP95
   */
  reportFrames(fps, frameP95) {
    this.fps = fps;
    this.frameP95 = frameP95;
  }

  /**
   * Ask the hub to resynchronise a group from a fresh snapshot.
   * @param {string} group
   */
  resync(group) {
    this._send({ t: "resync", group });
  }

  /**
   * Events: "status", "degrade", "error", "batch" (every batch, any group), "role", "pace".
   * Returns the function that removes the listener.
   * @template {keyof ClientEvents} K
   * @param {K} event
   * @param {(value: ClientEvents[K]) => void} fn
   * @returns {() => boolean}
   */
  on(event, fn) {
    const listener = /** @type {(value: unknown) => void} */ (fn);
    let set = this.listeners.get(event);
    if (set === undefined) this.listeners.set(event, (set = new Set()));
    set.add(listener);
    const listeners = set;
    return () => listeners.delete(listener);
  }

  close() {
    if (this._closed) return;
    this._closed = true;
    this._send({ t: "bye" });
    clearInterval(this._renderTimer);
    if (this._onVisibility !== null) globalThis.document?.removeEventListener("visibilitychange", this._onVisibility);
    this.hub?.stop();
    this._releaseLeader?.();
    this._releaseTabLock?.();
    this.bc?.close();
  }

  // ------------------------------------------------------------------ plumbing

  /**
   * @param {string} event
   * @param {unknown} value
   * @private
   */
  _emit(event, value) {
    for (const fn of this.listeners.get(event) ?? []) fn(value);
  }

  /**
   * @param {HubMessage} msg
   * @private
   */
  _deliver(msg) {
    switch (msg.t) {
      case "batches":
        try {
          for (const batch of msg.list) {
            this._emit("batch", batch);
            for (const fn of this.handlers.get(`${batch.group}@${batch.everyMs}`)?.fns ?? []) fn(batch);
          }
        } finally {
          this._send({ t: "ack" });
        }
        break;
      case "pace":
        this.pace = msg.fps;
        this._emit("pace", msg.fps);
        break;
      case "status":
        this.status = { ...msg, role: this.role };
        this._emit("status", this.status);
        break;
      default:
        this._emit(msg.t, msg); // "degrade", "error"
    }
  }

  /** @private */
  _hello() {
    this._send({ t: "hello", tab: this.tab, config: this.config, acks: true, visible: isVisible() });
    for (const { group, everyMs } of this.handlers.values()) this._send({ t: "sub", group, everyMs });
  }

  /** Starts the connection; connect() calls it once. */
  async _start() {
    // Held for the tab's whole life: the hub waits on it to learn when the tab is gone.
    if (globalThis.navigator?.locks) {
      await /** @type {Promise<void>} */ (new Promise((held) => {
        navigator.locks.request(`xy-tab:${this.tab}`, () => {
          held();
          return /** @type {Promise<void>} */ (new Promise((release) => { this._releaseTabLock = release; }));
        });
      }));
    }
    if (this.mode === "shared-worker") this._startWorker();
    else this._startLeaderElection();
    this._renderTimer = setInterval(() => this._flushRender(), RENDER_REPORT_MS);
    globalThis.addEventListener?.("pagehide", () => this.close());
    const onVisibility = () => this._send({ t: "vis", visible: isVisible() });
    this._onVisibility = onVisibility;
    globalThis.document?.addEventListener("visibilitychange", onVisibility);
  }

  /** @private */
  _flushRender() {
    if (!this.pendingLatency.length && !this.fps) return;
    const lat = this.pendingLatency;
    this.pendingLatency = [];
    this._send({ t: "render", lat, fps: this.fps, frameP95: this.frameP95 });
  }

  /** @private */
  _startWorker() {
    const url = new URL("./xy-worker.js", import.meta.url);
    const worker = new SharedWorker(url, { type: "module", name: `${this.channel}-hub` });
    const port = worker.port;
    port.onmessage = (ev) => this._deliver(/** @type {HubMessage} */ (ev.data));
    worker.onerror = (ev) => this._emit("error", { code: "XY-UI-007", message: `SharedWorker failed: ${/** @type {{ message?: string }} */ (ev).message ?? "load error"}` });
    port.start();
    this._send = (msg) => port.postMessage(msg);
    this._hello();
  }

  // Leader election: one tab holds the `xy-leader` lock and the Hub; the lock passes on when
  // that tab closes. Messages on the channel: {to: "leader", from, msg} tab -> hub,
  // {to: [tabs], msg} hub -> tabs, {leader: tab} when a tab takes over.
  /** @private */
  _startLeaderElection() {
    const bc = new BroadcastChannel(`${this.channel}-hub`);
    this.bc = bc;
    bc.onmessage = (ev) => {
      const env = /** @type {Envelope} */ (ev.data);
      if ("leader" in env) {
        if (env.leader !== this.tab) this._hello(); // re-announce to the new leader
        return;
      }
      if ("from" in env) {
        if (this.hub !== null) this._hubReceive(env.from, env.msg);
        return;
      }
      if (Array.isArray(env.to) ? env.to.includes(this.tab) : env.to === this.tab) this._deliver(env.msg);
    };
    this._send = (msg) => {
      if (this.hub !== null) this._hubReceive(this.tab, msg);
      else bc.postMessage({ to: "leader", from: this.tab, msg });
    };
    this._hello();
    navigator.locks.request(`${this.channel}-leader`, () => {
      if (this._closed) return undefined;
      this._becomeLeader(bc);
      return /** @type {Promise<void>} */ (new Promise((release) => { this._releaseLeader = release; }));
    });
  }

  /**
   * @param {BroadcastChannel} bc
   * @private
   */
  _becomeLeader(bc) {
    this.role = "leader";
    const hub = new Hub("leader");
    hub.multicast = (tabs, msg) => {
      /** @type {string[]} */
      const remote = [];
      for (const t of tabs) {
        if (t === this.tab) this._deliver(msg);
        else remote.push(t);
      }
      if (remote.length) bc.postMessage({ to: remote, msg });
    };
    this.hub = hub;
    this._emit("role", "leader");
    // Our own subscriptions first, then ask every other tab to announce theirs.
    this._hello();
    bc.postMessage({ leader: this.tab });
  }

  /**
   * @param {string} from
   * @param {TabMessage} msg
   * @private
   */
  _hubReceive(from, msg) {
    const hub = this.hub;
    if (hub === null) return;
    if (msg?.t === "hello") {
      const local = from === this.tab;
      hub.attach(from, {
        post: local ? (m) => this._deliver(m) : (m) => this.bc?.postMessage({ to: from, msg: m }),
      });
    } else if (!hub.tabs.has(from)) {
      return; // a tab that has not said hello to this leader yet; it will on the announcement
    }
    try {
      hub.handle(from, msg);
    } catch (err) {
      this._emit("error", { code: "XY-UI-007", message: `hub: ${errorText(err)}` });
    }
  }
}
