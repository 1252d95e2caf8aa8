// The hub: the browser's one WebSocket to the gateway, shared by every tab.
//
// Loaded as a module SharedWorker it serves the tabs of the browser over MessagePorts. Where
// SharedWorker does not exist, xy-client.js imports the same Hub into the tab that won the
// leader election (Web Locks) and serves the other tabs over a BroadcastChannel.
//
// What it does: hello with a short-lived JWT, subscribe/unsubscribe by reference count across
// tabs, per-(group, shard) epoch/sequence tracking with a snapshot request on a gap, an epoch
// change or a checksum mismatch, merge/dedupe per group per gateway frame, delivery to each tab
// at its tier with flow control (xy-outlet.js: an idle tab gets a batch on arrival, a busy or
// slower one a trade-safe merge later, a hidden one nothing until it shows), a draw rate per
// tab (planDraw), resume after a reconnect (last sequence per stream), exponential backoff with
// jitter and a cap on concurrent attempts, heartbeats and dead-socket detection, ClientMetrics.
//
// Tab -> hub messages ({t: ...}): hello {tab, config, acks, visible}, sub {group, everyMs},
// unsub {group, everyMs}, ack (a delivery was taken in), vis {visible},
// render {lat: [ms...], fps, frameP95}, bye, resync {group}.
// Hub -> tab messages: status {...}, batches {list: [{id, group, everyMs, snapshot, symbols,
// removed, ...}]} (acknowledge each with ack), pace {fps}, degrade {...}, error {...}.

import {
  ClientFrameSchema,
  ServerFrameSchema,
  create,
  fromBinary,
  toBinary,
} from "./gen/xy_contracts.js";
import {
  Backoff,
  BatchMerger,
  ClockOffset,
  GroupBook,
  Reconnector,
  RefCount,
  Reservoir,
  SeqTracker,
  errorText,
  num,
  plainState,
  removedKey,
} from "./xy-core.js";
import { Outlet, planDraw } from "./xy-outlet.js";

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

export const PROTOCOL_VERSION = 1;
/** The close a draining gateway sends a client that has not moved after its GoAway. */
export const DRAINING_CLOSE = 4100;

/** @type {Readonly<HubConfig>} */
export const DEFAULTS = Object.freeze({
  wsUrl: "",
  token: "", // a fixed token, or:
  tokenUrl: "", // an endpoint answering {"token": "..."} (fetched for every connection)
  batchMs: 16, // 16..33: how long a tab that never acknowledges (an older client) counts as busy
  ackTimeoutMs: 1000, // a delivery not acknowledged within this no longer holds the tab's next one
  maxInFlight: 1, // deliveries a tab may hold unacknowledged before the hub merges for it
  heartbeatMs: 5000, // used until the gateway's Welcome says otherwise
  deadAfterBeats: 3, // no frame for this many heartbeats -> the socket is dead
  metricsMs: 2000, // ClientMetrics report period
  statusMs: 1000, // status broadcast to tabs
  backoffBaseMs: 100,
  backoffCapMs: 1000, // one socket per browser: a short cap keeps recovery within ~1 s of the gateway's return
  maxConcurrentConnects: 1,
  connectTimeoutMs: 4000, // open + Welcome within this, or the attempt is abandoned
  stableMs: 5000,
  snapshotTimeoutMs: 2000, // re-ask for a snapshot not received within this
  client: "xy-worker/0.1",
});

// Gateway error codes the hub reacts to (ErrorCode in ws.proto).
const ERR_SNAPSHOT_UNAVAILABLE = 9;

/** What the hub needs from its surroundings; tests and the leader tab pass the same shape. */
/** @returns {HubEnv} */
export function browserEnv() {
  return {
    WebSocket: globalThis.WebSocket,
    setTimeout: globalThis.setTimeout.bind(globalThis),
    clearTimeout: globalThis.clearTimeout.bind(globalThis),
    now: () => performance.now(),
    wallUs: () => (performance.timeOrigin + performance.now()) * 1000,
    fetch: globalThis.fetch?.bind(globalThis),
    locks: globalThis.navigator?.locks,
  };
}

export class Hub {
  /**
   * @param {"shared-worker" | "leader"} mode
   * @param {HubEnv} [env]
   */
  constructor(mode, env = browserEnv()) {
    this.mode = mode; // "shared-worker" | "leader"
    this.env = env;
    /** @type {HubConfig | null} */
    this.config = null;
    /** @type {Reconnector | null} set by configure() */
    this.reconnector = null;
    /** @type {Map<string, HubTab>} */
    this.tabs = new Map(); // tab -> {sink, fps, frameP95, visible}
    this.outlet = new Outlet({ viewOf: (group) => this._viewOf(group) });
    /** @type {Map<string, DrawPlan>} */
    this.pace = new Map(); // tab -> {fps, until}: the draw plan (planDraw)
    this.refs = new RefCount();
    /** @type {SeqTracker<Delta>} */
    this.tracker = new SeqTracker();
    /** @type {Map<string, GroupBook>} */
    this.books = new Map(); // group -> GroupBook
    this.merger = new BatchMerger();
    this.clock = new ClockOffset();
    this.latencies = new Reservoir(512);
    /** @type {((tabs: string[], msg: HubMessage) => void) | null} */
    this.multicast = null; // optional (tabs, msg) => void, set by the leader tab
    /** @type {Status["state"]} */
    this.state = "idle"; // idle | connecting | open | waiting | stopped
    /** @type {SocketLike | null} */
    this.ws = null;
    /** @type {{ id: number, ws: SocketLike | null } | null} */
    this.attempt = null;
    this.sessionId = "";
    this.principal = "";
    this.heartbeatMs = DEFAULTS.heartbeatMs;
    this.tokenExpiresUs = 0;
    /** @type {Set<string>} */
    this.subscribed = new Set(); // groups the gateway confirmed
    /** @type {Map<string, number>} */
    this.snapshotAsked = new Map(); // group -> time asked
    /** @type {Degrade} */
    this.degrade = { level: 0, reason: "", recovery: "", paused: [] };
    /** @type {HubError | null} */
    this.lastError = null;
    this.frameIds = 0;
    this.batchIds = 0;
    this.nonce = 0;
    this.lastRx = 0;
    this.connectedAt = 0;
    this.disconnectedAt = 0;
    /** @type {number | null} */
    this.lastRecoveryMs = null; // disconnect -> first data on the prior subscriptions
    this.awaitingRecovery = false;
    /** @type {Counters} */
    this.counters = {
      frames: 0, bytes: 0, deltas: 0, snapshots: 0, duplicates: 0, gaps: 0, epochChanges: 0, rejected: 0,
      snapshotRequests: 0, checksumMismatches: 0, checksumsVerified: 0, batches: 0,
      droppedBatches: 0, badFrames: 0, errors: 0, connects: 0, deliveries: 0, coalesced: 0, ackTimeouts: 0,
      moves: 0,
    };
    this._reported = { reconnects: 0, droppedBatches: 0, checksumMismatches: 0 };
    /** @type {Record<string, number>} */
    this.timers = {};
  }

  // ------------------------------------------------------------------ tabs

  /**
   * @param {string} tab
   * @param {Sink} sink
   */
  attach(tab, sink) {
    const known = this.tabs.get(tab);
    this.tabs.set(tab, { sink, fps: known?.fps ?? 0, frameP95: known?.frameP95 ?? 0, visible: known?.visible ?? true });
    if (!known) this.outlet.setTab(tab);
    // A tab's lock is released when the tab goes away (closed, crashed, navigated): waiting
    // for it is how the hub learns of a tab that never said goodbye.
    if (!known && this.env.locks) {
      this.env.locks.request(`xy-tab:${tab}`, () => this.detach(tab)).catch(() => this.detach(tab));
    }
  }

  /** @param {string} tab */
  detach(tab) {
    if (!this.tabs.delete(tab)) return;
    this.outlet.removeTab(tab);
    this.pace.delete(tab);
    for (const group of this.refs.removeTab(tab)) this._dropGroup(group);
    this._replan();
    this._broadcastStatus();
  }

  /**
   * A message from a tab (already attached by the transport).
   * @param {string} tab
   * @param {TabMessage} msg
   */
  handle(tab, msg) {
    switch (msg?.t) {
      case "hello": {
        if (this.config === null) this.configure(msg.config);
        const visible = msg.visible ?? true;
        const t = this.tabs.get(tab);
        if (t) t.visible = visible;
        this.outlet.setTab(tab, { acks: Boolean(msg.acks), visible });
        this._post(tab, this._status());
        this.pace.delete(tab); // a (re)announced tab is told its draw rate afresh
        this._replan();
        break;
      }
      case "sub":
        if (this.refs.add(tab, msg.group)) this._sendSubscribe([msg.group]);
        this._deliver(this.outlet.addView(tab, msg.group, msg.everyMs ?? 0, this.env.now()));
        this._broadcastStatus();
        break;
      case "unsub":
        if (this.outlet.removeView(tab, msg.group, msg.everyMs ?? 0) && this.refs.remove(tab, msg.group)) {
          this._dropGroup(msg.group);
        }
        this._broadcastStatus();
        break;
      case "ack":
        this._deliver(this.outlet.ack(tab, this.env.now()));
        break;
      case "vis": {
        const t = this.tabs.get(tab);
        if (t) t.visible = Boolean(msg.visible);
        this._deliver(this.outlet.setVisible(tab, Boolean(msg.visible), this.env.now()));
        this._replan();
        break;
      }
      case "render": {
        for (const ms of msg.lat ?? []) if (Number.isFinite(ms)) this.latencies.add(ms);
        const t = this.tabs.get(tab);
        if (t) {
          t.fps = msg.fps ?? t.fps;
          t.frameP95 = msg.frameP95 ?? t.frameP95;
        }
        this._replan();
        break;
      }
      case "resync":
        this._askSnapshot(msg.group, "tab");
        break;
      case "bye":
        this.detach(tab);
        break;
      default:
        this._post(tab, { t: "error", code: "XY-UI-001", message: `unknown message type ${JSON.stringify(/** @type {{ t?: unknown } | null} */ (msg)?.t)} from tab` });
    }
  }

  /** @param {Config} config */
  configure(config) {
    const c = { ...DEFAULTS, ...config };
    this.config = c;
    if (!c.wsUrl) throw new Error("xy hub: config.wsUrl is required (the gateway's ws:// URL)");
    this.outlet.batchMs = c.batchMs;
    this.outlet.ackTimeoutMs = c.ackTimeoutMs;
    this.outlet.maxInFlight = c.maxInFlight;
    this.heartbeatMs = c.heartbeatMs;
    this.reconnector = new Reconnector({
      backoff: new Backoff({ baseMs: c.backoffBaseMs, capMs: c.backoffCapMs }),
      maxConcurrent: c.maxConcurrentConnects,
      attemptTimeoutMs: c.connectTimeoutMs,
      stableMs: c.stableMs,
    });
    this._schedule("status", c.statusMs, () => this._onStatusTimer());
    this._schedule("metrics", c.metricsMs, () => this._onMetricsTimer());
    this._driveConnection();
  }

  /**
   * The settings, set by configure() (the first tab's hello) before any connection runs.
   * @returns {HubConfig}
   */
  _cfg() {
    if (this.config === null) throw new Error("xy hub: not configured yet (no hello with a config)");
    return this.config;
  }

  /** @returns {Reconnector} the reconnector configure() made */
  _rc() {
    if (this.reconnector === null) throw new Error("xy hub: not configured yet (no hello with a config)");
    return this.reconnector;
  }

  stop() {
    this.state = "stopped";
    for (const name of Object.keys(this.timers)) this._cancel(name);
    this._closeSocket("hub stopped");
  }

  // ------------------------------------------------------------------ connection

  _driveConnection() {
    if (this.state === "stopped" || this.config === null) return;
    const now = this.env.now();
    for (const id of this._rc().expired(now)) {
      if (this.attempt?.id === id) this._socketGone(`no Welcome within ${this._cfg().connectTimeoutMs} ms`);
    }
    if (this._rc().due(now)) {
      this._connect();
    } else if (this.state !== "open" && this.state !== "connecting") {
      this.state = "waiting";
      this._scheduleOnce("connect", Math.max(1, this._rc().waitMs(now)), () => this._driveConnection());
    }
  }

  async _connect() {
    const id = this._rc().begin(this.env.now());
    if (id === null) return;
    this.state = "connecting";
    this.attempt = { id, ws: null };
    this._scheduleOnce("connect", this._cfg().connectTimeoutMs + 1, () => this._driveConnection());
    this._broadcastStatus();
    let token;
    try {
      token = await this._token();
    } catch (err) {
      if (this.attempt?.id !== id) return;
      this.lastError = { code: "XY-UI-002", message: `token: ${errorText(err)}` };
      this._attemptFailed();
      return;
    }
    // stop() may have run while the token was fetched.
    if (this.attempt?.id !== id || /** @type {Status["state"]} */ (this.state) === "stopped") return;
    let ws;
    try {
      ws = new this.env.WebSocket(this._cfg().wsUrl);
    } catch (err) {
      this.lastError = { code: "XY-UI-003", message: `WebSocket(${this._cfg().wsUrl}): ${errorText(err)}` };
      this._attemptFailed();
      return;
    }
    ws.binaryType = "arraybuffer";
    this.attempt.ws = ws;
    this.ws = ws;
    this.counters.connects += 1;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.lastRx = this.env.now();
      this._send({
        hello: { token, protocolVersion: PROTOCOL_VERSION, client: `${this._cfg().client} (${this.mode})`, sessionId: this.sessionId },
      });
    };
    ws.onmessage = (ev) => {
      if (this.ws === ws) this._onFrame(ev.data);
    };
    ws.onclose = (ev) => {
      // 4100: a draining gateway closed a client that had not moved yet — a move, not a failure.
      if (this.ws === ws) this._socketGone(`closed ${ev.code}${ev.reason ? ` ${ev.reason}` : ""}`, ev.code === DRAINING_CLOSE ? 0 : null);
    };
    ws.onerror = () => {
      // A close event always follows; the reason is reported there.
    };
  }

  /** @returns {Promise<string>} */
  async _token() {
    const c = this._cfg();
    if (c.token) return c.token;
    if (!c.tokenUrl) return "";
    if (this.env.fetch === undefined) throw new Error(`${c.tokenUrl}: this environment has no fetch`);
    const res = await this.env.fetch(c.tokenUrl, { method: "POST", cache: "no-store" });
    if (!res.ok) throw new Error(`${c.tokenUrl} answered ${res.status}`);
    const doc = await res.json();
    if (typeof doc.token !== "string" || !doc.token) throw new Error(`${c.tokenUrl}: expected {"token": "<jwt>"}, got keys ${Object.keys(doc)}`);
    return doc.token;
  }

  _attemptFailed() {
    const id = this.attempt?.id ?? null;
    this.attempt = null;
    this.ws = null;
    this.state = "waiting";
    this._rc().failed(id, this.env.now());
    this._cancel("heartbeat");
    this._broadcastStatus();
    this._driveConnection();
  }

  /**
   * @param {string} why
   * @param {number | null} [movedRetryMs] set when the gateway asked this client to move (its
   *   GoAway's retry hint): reconnect at once — to the configured wsUrl, the only place this
   *   hub ever connects to — and resume; not counted as a failure.
   */
  _socketGone(why, movedRetryMs = null) {
    const ws = this.ws;
    const wasOpen = this.state === "open";
    const moved = movedRetryMs !== null;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      // 4900: the client gave up on this socket; 1000: it leaves as asked.
      if (ws.readyState <= 1) ws.close(moved ? 1000 : 4900, (moved ? "moving (GoAway)" : why).slice(0, 100));
    }
    if (wasOpen) {
      this.disconnectedAt = this.env.now();
      this.awaitingRecovery = true;
    }
    this.lastError = { code: "XY-UI-004", message: `gateway connection: ${why}` };
    this.subscribed.clear();
    this.snapshotAsked.clear();
    const id = wasOpen ? null : (this.attempt?.id ?? null);
    this.attempt = null;
    this.state = "waiting";
    if (moved && wasOpen) this._rc().moved(this.env.now(), movedRetryMs);
    else this._rc().failed(id, this.env.now());
    this._cancel("heartbeat");
    this._cancel("refresh");
    this._broadcastStatus();
    this._driveConnection();
  }

  /** @param {string} why */
  _closeSocket(why) {
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      if (ws.readyState <= 1) ws.close(1000, why);
    }
  }

  /**
   * One ClientFrame with the next id and `fields` (hello, subscribe, ping, ...).
   * @param {Exclude<import("@bufbuild/protobuf").MessageInitShape<typeof ClientFrameSchema>, ClientFrame>} fields
   */
  _send(fields) {
    const ws = this.ws;
    if (ws === null || ws.readyState !== 1) return false;
    const frame = create(ClientFrameSchema, { id: ++this.frameIds, ...fields });
    ws.send(toBinary(ClientFrameSchema, frame));
    return true;
  }

  // ------------------------------------------------------------------ frames in

  /** @param {unknown} data */
  _onFrame(data) {
    const now = this.env.now();
    this.lastRx = now;
    this.counters.frames += 1;
    if (!(data instanceof ArrayBuffer)) {
      this.counters.badFrames += 1;
      this.lastError = { code: "XY-UI-005", message: `gateway sent a ${typeof data} frame; expected binary protobuf ServerFrame` };
      return;
    }
    this.counters.bytes += data.byteLength;
    let frame;
    try {
      frame = fromBinary(ServerFrameSchema, new Uint8Array(data));
    } catch (err) {
      this.counters.badFrames += 1;
      this.lastError = { code: "XY-UI-005", message: `undecodable ServerFrame (${data.byteLength} bytes): ${errorText(err)}` };
      return;
    }
    const wall = this.env.wallUs();
    if (frame.tsSendUs) this.clock.seed(wall, num(frame.tsSendUs));
    if (frame.welcome) this._onWelcome(frame.welcome, now);
    if (frame.pong) this.clock.observe(num(frame.pong.tsUs), wall, num(frame.pong.serverTimeUs));
    if (frame.subscribed) for (const g of frame.subscribed.groups) this.subscribed.add(g.group);
    if (frame.degrade) this._onDegrade(frame.degrade);
    if (frame.error) this._onError(frame.error);
    for (const snap of frame.snapshots) this._onSnapshot(snap, now);
    for (const delta of frame.deltas) this._onDelta(delta, now);
    if (this.merger.size) this._offer(now);
    if (frame.goAway) {
      // After the frame's data, so the resume points include it. A GoAway names no place to
      // go: the hub reconnects to its configured wsUrl (a forged frame cannot redirect it).
      this.counters.moves += 1;
      this.lastError = { code: "XY-GW-047", message: `gateway asked to move: ${frame.goAway.reason}` };
      this._socketGone(`GoAway: ${frame.goAway.reason}`, frame.goAway.retryMs);
    }
  }

  /**
   * @param {Welcome} w
   * @param {number} now
   */
  _onWelcome(w, now) {
    this.tokenExpiresUs = num(w.tokenExpiresUs);
    if (this.state === "open") {
      // The answer to a token refresh: the session goes on, nothing to resume.
      this._scheduleRefresh();
      return;
    }
    this._rc().opened(this.attempt?.id ?? null, now);
    this.attempt = null;
    this._cancel("connect");
    this.state = "open";
    this.connectedAt = now;
    this.sessionId = w.sessionId;
    this.principal = w.principal;
    if (w.heartbeatMs) this.heartbeatMs = w.heartbeatMs;
    this.clock.seed(this.env.wallUs(), num(w.serverTimeUs));
    this._heartbeat();
    this._scheduleRefresh();
    // Back on the prior subscriptions: resume the streams we were in, subscribe the rest.
    const groups = this.refs.keys();
    if (groups.length) {
      const plan = this.tracker.reconnectPlan(groups);
      // uint64 on the wire: the same varints as the numbers, typed as the contract's bigint.
      const points = plan.points.map((p) => ({ ...p, epoch: BigInt(p.epoch), seq: BigInt(p.seq) }));
      if (points.length) this._send({ resume: { points } });
      if (plan.subscribe.length) this._send({ subscribe: { groups: plan.subscribe.map((group) => ({ group })) } });
    }
    this._broadcastStatus();
  }

  /** @param {DegradeChange} d */
  _onDegrade(d) {
    this.degrade = { level: d.level, reason: d.reason, recovery: d.recovery, paused: [...d.pausedGroups] };
    this._broadcastAll({ t: "degrade", ...this.degrade });
    this._broadcastStatus();
  }

  /** @param {ErrorFrame} e */
  _onError(e) {
    this.counters.errors += 1;
    this.lastError = { code: `gateway:${e.code}`, message: e.message, group: e.group, fatal: e.fatal };
    if (e.code === ERR_SNAPSHOT_UNAVAILABLE && e.group) {
      // Nothing to resynchronise from yet: take the next delta as the baseline.
      this.tracker.forgetGroup(e.group);
      this.snapshotAsked.delete(e.group);
    }
    /** @type {HubMessage} */
    const msg = { t: "error", code: e.code, message: e.message, group: e.group, fatal: e.fatal };
    if (e.group) this._fanout(e.group, msg);
    else this._broadcastAll(msg);
  }

  /**
   * @param {Snapshot} snap
   * @param {number} now
   */
  _onSnapshot(snap, now) {
    const group = snap.group;
    if (!this.refs.holders(group).size) return;
    this.counters.snapshots += 1;
    this.snapshotAsked.delete(group);
    const follow = this.tracker.applySnapshot(snap);
    const plain = {
      group,
      version: num(snap.version),
      epoch: num(snap.epoch),
      symbols: snap.symbols.map(plainState),
      top: snap.top.map((t) => ({ venue: t.venue, symbol: t.symbol, value: num(t.value) })),
      topBy: snap.topBy,
      tsEmitUs: num(snap.tsEmitUs),
    };
    this._book(group).applySnapshot(plain);
    this.merger.addSnapshot(group, plain);
    for (const d of follow) this._applyDelta(d, now);
    if (this.tracker.isResyncing(group)) this._askSnapshot(group, "gap after snapshot");
    this._noteRecovery(now);
  }

  /**
   * @param {Delta} delta
   * @param {number} now
   */
  _onDelta(delta, now) {
    const group = delta.group;
    if (!this.refs.holders(group).size) return;
    this.counters.deltas += 1;
    const verdict = this.tracker.check(delta);
    switch (verdict) {
      case "apply":
        this._applyDelta(delta, now);
        this._noteRecovery(now);
        break;
      case "duplicate":
        this.counters.duplicates += 1;
        break;
      case "gap":
      case "future_epoch":
        if (verdict === "gap") this.counters.gaps += 1;
        else this.counters.epochChanges += 1;
        this.tracker.beginResync(group, now, delta);
        this._askSnapshot(group, verdict);
        break;
      case "far_future":
        // Never the baseline: re-anchor from a fresh snapshot, without holding the delta.
        this.counters.rejected += 1;
        this.tracker.beginResync(group, now);
        this._askSnapshot(group, verdict);
        break;
      case "stale_epoch":
        this.counters.rejected += 1;
        break;
      case "held":
        break;
    }
  }

  /**
   * @param {Delta} delta
   * @param {number} now
   */
  _applyDelta(delta, now) {
    // Symbols that moved to another group leave this one first; trimmed entries keep the
    // deeper levels the book holds; every other entry's checksum is verified.
    const book = this._book(delta.group);
    const { states, checks } = book.applyDelta(delta.removed ?? [], delta.symbols.map(plainState));
    const removed = (delta.removed ?? []).map(removedKey); // tabs drop them whatever the book held
    let mismatch = false;
    for (const v of checks) {
      if (v === "ok") this.counters.checksumsVerified += 1;
      else if (v === "mismatch") mismatch = true;
    }
    this.merger.addDelta(delta.group, delta.shard, num(delta.seq), states, removed);
    if (mismatch) {
      this.counters.checksumMismatches += 1;
      this.tracker.beginResync(delta.group, now);
      this._askSnapshot(delta.group, "checksum");
    }
  }

  /** @param {number} now */
  _noteRecovery(now) {
    if (this.awaitingRecovery) {
      this.awaitingRecovery = false;
      this.lastRecoveryMs = now - this.disconnectedAt;
      this._broadcastStatus();
    }
  }

  /**
   * @param {string} group
   * @param {string} why
   */
  _askSnapshot(group, why) {
    if (!group || !this.refs.holders(group).size) return;
    const now = this.env.now();
    const asked = this.snapshotAsked.get(group);
    if (asked !== undefined && now - asked < this._cfg().snapshotTimeoutMs) return;
    if (!this.tracker.isResyncing(group)) this.tracker.beginResync(group, now);
    if (this._send({ snapshotRequest: { group } })) {
      this.snapshotAsked.set(group, now);
      this.counters.snapshotRequests += 1;
      this.lastError = { code: "XY-UI-006", message: `snapshot requested for ${group}: ${why}` };
    }
  }

  /** @param {string} group */
  _book(group) {
    let b = this.books.get(group);
    if (b === undefined) this.books.set(group, (b = new GroupBook(group)));
    return b;
  }

  // ------------------------------------------------------------------ subscriptions

  /** @param {string[]} groups */
  _sendSubscribe(groups) {
    if (this.state === "open") this._send({ subscribe: { groups: groups.map((group) => ({ group })) } });
  }

  /** @param {string} group */
  _dropGroup(group) {
    if (this.state === "open") this._send({ unsubscribe: { groups: [{ group }] } });
    this.subscribed.delete(group);
    this.tracker.forgetGroup(group);
    this.books.delete(group);
    this.snapshotAsked.delete(group);
  }

  /** The group's current state as a batch (what a new, or newly visible, view is sent first). */
  /**
   * @param {string} group
   * @returns {HubBatch | null}
   */
  _viewOf(group) {
    const book = this.books.get(group);
    if (book === undefined || book.symbols.size === 0) return null;
    return { id: this.batchIds, group, snapshot: book.view(), symbols: [], removed: [], deltas: 0, minArrivalUs: 0, seqs: {} };
  }

  // ------------------------------------------------------------------ delivery

  /** This frame's batches, one per group, to the outlet (sent on to idle tabs at once). */
  /** @param {number} now */
  _offer(now) {
    /** @type {HubBatch[]} */
    const batches = [];
    for (const batch of this.merger.drain()) {
      if (!this.refs.holders(batch.group).size) {
        this.counters.droppedBatches += 1;
        continue;
      }
      batches.push(Object.assign(batch, { id: ++this.batchIds }));
    }
    this._deliver(this.outlet.offer(batches, now));
  }

  /**
   * Post the outlet's deliveries (one message per tab), then arm the timer for what waits on a
   * tier's interval or an unacknowledged delivery. In leader mode tabs sent the very same
   * batches share one BroadcastChannel message.
   */
  /** @param {Delivery[]} deliveries */
  _deliver(deliveries) {
    if (deliveries.length) {
      const offsetUs = this.clock.offsetUs;
      const flushedUs = this.env.wallUs();
      /** @type {{ tabs: string[], batches: TierBatch[], msg: HubMessage }[]} */
      const messages = [];
      for (const { tab, batches } of deliveries) {
        const same = this.multicast ? messages.find((m) => sameBatches(m.batches, batches)) : undefined;
        if (same) {
          same.tabs.push(tab);
          continue;
        }
        /** @type {DeliveredBatch[]} */
        const list = batches.map((b) => ({ t: "batch", ...b, offsetUs, flushedUs }));
        messages.push({ tabs: [tab], batches, msg: { t: "batches", list } });
        this.counters.batches += list.length;
      }
      const s = this.outlet.stats;
      Object.assign(this.counters, { deliveries: s.deliveries, coalesced: s.coalesced, ackTimeouts: s.ackTimeouts });
      for (const m of messages) {
        if (this.multicast) this.multicast(m.tabs, m.msg);
        else this._post(m.tabs[0], m.msg);
      }
    }
    const next = this.outlet.nextAt();
    if (next === null) this._cancel("deliver");
    else {
      this._scheduleOnce("deliver", Math.max(0, next - this.env.now()), () => this._deliver(this.outlet.due(this.env.now())));
    }
  }

  /** Tell each tab whose draw rate changed (planDraw over every tab's reports). */
  _replan() {
    const plan = planDraw(this.tabs, this.pace, this.env.now());
    for (const [tab, p] of plan) {
      if (this.pace.get(tab)?.fps !== p.fps) this._post(tab, { t: "pace", fps: p.fps });
    }
    this.pace = plan;
  }

  // ------------------------------------------------------------------ fan-out

  /**
   * @param {string} group
   * @param {HubMessage} msg
   */
  _fanout(group, msg) {
    const tabs = [...this.refs.holders(group)];
    if (this.multicast) {
      this.multicast(tabs, msg);
      return;
    }
    for (const tab of tabs) this._post(tab, msg);
  }

  /** @param {HubMessage} msg */
  _broadcastAll(msg) {
    const tabs = [...this.tabs.keys()];
    if (this.multicast) this.multicast(tabs, msg);
    else for (const tab of tabs) this._post(tab, msg);
  }

  /**
   * @param {string} tab
   * @param {HubMessage} msg
   */
  _post(tab, msg) {
    this.tabs.get(tab)?.sink.post(msg);
  }

  /** @returns {{ t: "status" } & Status} */
  _status() {
    const latest = this.latencies.values;
    return {
      t: "status",
      mode: this.mode,
      state: this.state,
      wsUrl: this.config?.wsUrl ?? "",
      sessionId: this.sessionId,
      principal: this.principal,
      reconnects: this.reconnector?.reconnects ?? 0,
      failures: this.reconnector?.failures ?? 0,
      tabs: this.tabs.size,
      groups: this.refs.keys(),
      subscribed: [...this.subscribed],
      degrade: this.degrade,
      heartbeatMs: this.heartbeatMs,
      rttMs: Number.isFinite(this.clock.bestRttUs) ? this.clock.bestRttUs / 1000 : null,
      offsetUs: this.clock.offsetUs,
      lastRecoveryMs: this.lastRecoveryMs,
      pendingLatencySamples: latest.length,
      counters: { ...this.counters },
      lastError: this.lastError,
    };
  }

  _broadcastStatus() {
    this._broadcastAll(this._status());
  }

  // ------------------------------------------------------------------ timers

  _heartbeat() {
    this._scheduleOnce("heartbeat", Math.max(250, this.heartbeatMs / 2), () => {
      if (this.state !== "open") return;
      const idle = this.env.now() - this.lastRx;
      const deadAfter = this.heartbeatMs * this._cfg().deadAfterBeats;
      if (idle > deadAfter) {
        this._socketGone(`no frame from the gateway for ${Math.round(idle)} ms (dead after ${deadAfter} ms)`);
        return;
      }
      this._send({ ping: { tsUs: BigInt(Math.round(this.env.wallUs())), nonce: BigInt(++this.nonce) } });
      this._heartbeat();
    });
  }

  _scheduleRefresh() {
    if (!this.tokenExpiresUs || this._cfg().token) return;
    const leftMs = (this.tokenExpiresUs - (this.env.wallUs() + this.clock.offsetUs)) / 1000;
    if (!(leftMs > 0)) return;
    this._scheduleOnce("refresh", Math.max(1000, leftMs * 0.8), async () => {
      try {
        const token = await this._token();
        if (this.state === "open") this._send({ refresh: { token } });
      } catch (err) {
        this.lastError = { code: "XY-UI-002", message: `token refresh: ${errorText(err)}` };
      }
    });
  }

  _onStatusTimer() {
    const now = this.env.now();
    for (const group of this.tracker.overdue(now, this._cfg().snapshotTimeoutMs)) {
      this.snapshotAsked.delete(group);
      this._askSnapshot(group, "snapshot overdue");
    }
    this._broadcastStatus();
  }

  _onMetricsTimer() {
    if (this.state !== "open") return;
    const reconnects = this._rc().reconnects;
    const c = this.counters;
    const tabs = [...this.tabs.values()];
    const fps = tabs.length ? tabs.reduce((a, t) => a + (t.fps || 0), 0) / tabs.length : 0;
    const latencies = this.latencies.drain();
    // Counters go as increments since the last report: a new session cannot be diffed by the
    // gateway against the previous connection's totals.
    const sent = this._send({
      metrics: {
        renderLatencyMs: latencies,
        tabs: this.tabs.size,
        fps,
        droppedBatches: c.droppedBatches - this._reported.droppedBatches,
        reconnects: reconnects - this._reported.reconnects,
        checksumMismatches: c.checksumMismatches - this._reported.checksumMismatches,
      },
    });
    if (sent) this._reported = { reconnects, droppedBatches: c.droppedBatches, checksumMismatches: c.checksumMismatches };
  }

  /**
   * @param {string} name
   * @param {number} everyMs
   * @param {() => void} fn
   */
  _schedule(name, everyMs, fn) {
    const tick = () => {
      this.timers[name] = this.env.setTimeout(tick, everyMs);
      fn();
    };
    this._cancel(name);
    this.timers[name] = this.env.setTimeout(tick, everyMs);
  }

  /**
   * @param {string} name
   * @param {number} ms
   * @param {() => void} fn
   */
  _scheduleOnce(name, ms, fn) {
    this._cancel(name);
    this.timers[name] = this.env.setTimeout(() => {
      delete this.timers[name];
      fn();
    }, ms);
  }

  /** @param {string} name */
  _cancel(name) {
    if (this.timers[name] !== undefined) {
      this.env.clearTimeout(this.timers[name]);
      delete this.timers[name];
    }
  }
}

/** Two deliveries of the very same batches (same objects, same tiers). */
/**
 * @param {TierBatch[]} a
 * @param {TierBatch[]} b
 */
function sameBatches(a, b) {
  return a.length === b.length && a.every((x, i) => x.id === b[i].id && x.group === b[i].group && x.everyMs === b[i].everyMs && x.symbols === b[i].symbols);
}

// ---------------------------------------------------------------------- SharedWorker entry

// The DOM library has no SharedWorkerGlobalScope: the worker's global as far as it is used here.
const workerScope = /** @type {{ SharedWorkerGlobalScope?: Function, onconnect?: (event: MessageEvent) => void }} */ (
  /** @type {unknown} */ (globalThis));
if (typeof workerScope.SharedWorkerGlobalScope === "function" && globalThis instanceof workerScope.SharedWorkerGlobalScope) {
  const hub = new Hub("shared-worker");
  workerScope.onconnect = (event) => {
    const port = event.ports[0];
    /** @type {string | null} */
    let tab = null;
    port.onmessage = (ev) => {
      const msg = ev.data;
      if (msg?.t === "hello") {
        const hello = /** @type {string} */ (msg.tab);
        tab = hello;
        hub.attach(hello, { post: (m) => port.postMessage(m) });
      }
      if (tab === null) {
        port.postMessage({ t: "error", code: "XY-UI-001", message: `first message must be hello, got ${JSON.stringify(msg?.t)}` });
        return;
      }
      try {
        hub.handle(tab, msg);
      } catch (err) {
        port.postMessage({ t: "error", code: "XY-UI-007", message: `hub: ${errorText(err)}` });
      }
    };
    port.start();
  };
}
