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

import { Hub } from "./xy-worker.js";
import { TIERS } from "./xy-outlet.js";

export { TIERS };

const RENDER_REPORT_MS = 500;

function isVisible() {
  return globalThis.document?.visibilityState !== "hidden";
}

function newId() {
  return globalThis.crypto?.randomUUID?.() ?? `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/** Absolute URLs, so the worker (whose base URL differs) resolves them as the page does. */
function absolutize(config) {
  const out = { ...config };
  for (const key of ["wsUrl", "tokenUrl"]) {
    if (out[key]) out[key] = new URL(out[key], globalThis.location?.href).href;
  }
  return out;
}

export async function loadConfig(url = "/config.json") {
  const res = await fetch(url, { cache: "no-store" });
  if (!res.ok) throw new Error(`${url} answered ${res.status}`);
  return res.json();
}

/**
 * Connect this tab. Options: `config` (object; else fetched from `configUrl`), `mode`
 * ("auto" | "shared-worker" | "leader"), `channel` (name shared by the tabs of one app).
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
  constructor(config, mode, channel) {
    this.config = config;
    this.mode = mode; // "shared-worker" | "leader"
    this.channel = channel;
    this.tab = newId();
    this.role = mode === "shared-worker" ? "worker-client" : "follower";
    this.handlers = new Map(); // "group@everyMs" -> {group, everyMs, fns: Set(fn)}
    this.pace = 60; // draw rate the hub asks of this tab (fps; 0 = do not draw)
    this.listeners = new Map(); // event -> Set(fn)
    this.status = null;
    this.pendingLatency = [];
    this.fps = 0;
    this.frameP95 = 0;
    this._send = () => {};
    this._releaseTabLock = null;
    this._releaseLeader = null;
    this.hub = null; // the Hub, when this tab is the leader
    this._closed = false;
  }

  // ------------------------------------------------------------------ public API

  /**
   * Call `onBatch(batch)` for the batches of `group`; returns the unsubscribe function. `everyMs`
   * is the tier: 0 (TIERS.live) = every batch, as soon as this tab is free; otherwise at most one
   * batch per `everyMs` (TIERS.ladder 16, TIERS.overview 250), holding every change since the
   * last one (latest state per symbol, trades and volume accumulated). The browser keeps one
   * gateway subscription per group whatever the tiers.
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

  /** Tick arrival -> rendered, in ms; sent to the hub in small batches, then to the gateway. */
  reportRender(latencyMs) {
    if (this.pendingLatency.length < 4096) this.pendingLatency.push(latencyMs);
  }

  /** The tab's frame rate and frame-time p95 (for ClientMetrics.fps). */
  reportFrames(fps, frameP95) {
    this.fps = fps;
    this.frameP95 = frameP95;
  }

  /** Ask the hub to resynchronise a group from a fresh snapshot. */
  resync(group) {
    this._send({ t: "resync", group });
  }

  /** Events: "status", "degrade", "error", "batch" (every batch, any group), "role", "pace". */
  on(event, fn) {
    let set = this.listeners.get(event);
    if (set === undefined) this.listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  close() {
    if (this._closed) return;
    this._closed = true;
    this._send({ t: "bye" });
    clearInterval(this._renderTimer);
    globalThis.document?.removeEventListener("visibilitychange", this._onVisibility);
    this.hub?.stop();
    this._releaseLeader?.();
    this._releaseTabLock?.();
    this.bc?.close();
  }

  // ------------------------------------------------------------------ plumbing

  _emit(event, value) {
    for (const fn of this.listeners.get(event) ?? []) fn(value);
  }

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
        this._emit(msg.t, msg);
    }
  }

  _hello() {
    this._send({ t: "hello", tab: this.tab, config: this.config, acks: true, visible: isVisible() });
    for (const { group, everyMs } of this.handlers.values()) this._send({ t: "sub", group, everyMs });
  }

  async _start() {
    // Held for the tab's whole life: the hub waits on it to learn when the tab is gone.
    if (globalThis.navigator?.locks) {
      await new Promise((held) => {
        navigator.locks.request(`xy-tab:${this.tab}`, () => {
          held();
          return new Promise((release) => { this._releaseTabLock = release; });
        });
      });
    }
    if (this.mode === "shared-worker") this._startWorker();
    else this._startLeaderElection();
    this._renderTimer = setInterval(() => this._flushRender(), RENDER_REPORT_MS);
    globalThis.addEventListener?.("pagehide", () => this.close());
    this._onVisibility = () => this._send({ t: "vis", visible: isVisible() });
    globalThis.document?.addEventListener("visibilitychange", this._onVisibility);
  }

  _flushRender() {
    if (!this.pendingLatency.length && !this.fps) return;
    const lat = this.pendingLatency;
    this.pendingLatency = [];
    this._send({ t: "render", lat, fps: this.fps, frameP95: this.frameP95 });
  }

  _startWorker() {
    const url = new URL("./xy-worker.js", import.meta.url);
    const worker = new SharedWorker(url, { type: "module", name: `${this.channel}-hub` });
    const port = worker.port;
    port.onmessage = (ev) => this._deliver(ev.data);
    worker.onerror = (ev) => this._emit("error", { code: "XY-UI-007", message: `SharedWorker failed: ${ev.message ?? "load error"}` });
    port.start();
    this._send = (msg) => port.postMessage(msg);
    this._hello();
  }

  // Leader election: one tab holds the `xy-leader` lock and the Hub; the lock passes on when
  // that tab closes. Messages on the channel: {to: "leader", from, msg} tab -> hub,
  // {to: [tabs], msg} hub -> tabs, {leader: tab} when a tab takes over.
  _startLeaderElection() {
    const bc = new BroadcastChannel(`${this.channel}-hub`);
    this.bc = bc;
    bc.onmessage = (ev) => {
      const env = ev.data;
      if (env.leader !== undefined) {
        if (env.leader !== this.tab) this._hello(); // re-announce to the new leader
        return;
      }
      if (env.to === "leader") {
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
      return new Promise((release) => { this._releaseLeader = release; });
    });
  }

  _becomeLeader(bc) {
    this.role = "leader";
    const hub = new Hub("leader");
    hub.multicast = (tabs, msg) => {
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

  _hubReceive(from, msg) {
    const hub = this.hub;
    if (msg?.t === "hello") {
      const local = from === this.tab;
      hub.attach(from, {
        post: local ? (m) => this._deliver(m) : (m) => this.bc.postMessage({ to: from, msg: m }),
      });
    } else if (!hub.tabs.has(from)) {
      return; // a tab that has not said hello to this leader yet; it will on the announcement
    }
    try {
      hub.handle(from, msg);
    } catch (err) {
      this._emit("error", { code: "XY-UI-007", message: `hub: ${err.message ?? err}` });
    }
  }
}
