/**
 * The draw rate of every tab, from their reports: `tabs` maps tab -> {visible, frameP95} (the
 * p95 of the tab's animation-frame intervals, ms; 0 = not known yet), `prev` is the previous
 * plan (tab -> {fps, until}). Returns the new plan, tab -> {fps, until}, `until` being how long
 * an overrun keeps the tab at 30 fps.
 */
/**
 * @param {Map<string, { visible: boolean, frameP95: number }>} tabs
 * @param {Map<string, DrawPlan>} prev
 * @param {number} now
 * @returns {Map<string, DrawPlan>}
 */
export function planDraw(tabs: Map<string, {
    visible: boolean;
    frameP95: number;
}>, prev: Map<string, DrawPlan>, now: number, policy?: Readonly<{
    fullRateMaxVisible: 2;
    overrunMs: 20;
    holdMs: 5000;
}>): Map<string, DrawPlan>;
/** Fold batch `b` into the pending merge `p` (a snapshot in `b` replaces everything). */
/**
 * @param {Pending} p
 * @param {HubBatch} b
 * @returns {Pending}
 */
export function foldBatch(p: Pending, b: HubBatch): Pending;
/** @typedef {import("./xy-core.js").Batch} Batch */
/** @typedef {import("./xy-core.js").State} State */
/**
 * A batch as the hub numbers it (`id`); `owned` marks a view's own pending merge (Pending).
 * @typedef {Batch & { id: number, owned?: false }} HubBatch
 */
/**
 * A batch as a tab receives it: at the tier (`everyMs`) of the subscription it is for.
 * @typedef {HubBatch & { everyMs: number }} TierBatch
 */
/**
 * A view's own pending merge of batches (Maps, so later batches fold in place).
 * @typedef {object} Pending
 * @property {true} owned
 * @property {number} id
 * @property {string} group
 * @property {Batch["snapshot"]} snapshot
 * @property {Map<string, State>} symbols
 * @property {Set<string>} removed
 * @property {number} deltas
 * @property {number} minArrivalUs
 * @property {Record<number, number>} seqs
 */
/**
 * One tab's subscription of one group at one tier.
 * @typedef {{ tab: string, group: string, everyMs: number, pending: HubBatch | Pending | null, lastAt: number, needsView: boolean }} View
 */
/** @typedef {{ acks: boolean, visible: boolean, sent: number[], views: Map<string, View> }} OutletTab */
/** What to post to one tab: one message holding every batch due to it. */
/** @typedef {{ tab: string, batches: TierBatch[] }} Delivery */
/** @typedef {{ fps: number, until: number }} DrawPlan */
/** Named tiers (ms between deliveries); any interval in ms works as well. */
export const TIERS: Readonly<{
    live: 0;
    ladder: 16;
    overview: 250;
}>;
/**
 * How fast tabs draw: full rate (60 fps) while at most `fullRateMaxVisible` tabs are visible and
 * the tab's frames keep time; 30 fps when more are visible, or for `holdMs` after the tab's
 * frame-interval p95 went over `overrunMs`; nothing while hidden.
 */
export const DRAW_POLICY: Readonly<{
    fullRateMaxVisible: 2;
    overrunMs: 20;
    holdMs: 5000;
}>;
/**
 * Batches: {id, group, snapshot, symbols, removed, deltas, minArrivalUs, seqs} (BatchMerger's,
 * with the hub's id). Every method returns deliveries, [{tab, batches: [{...batch, everyMs}]}],
 * for the caller to post (one message per tab) — after the outlet's state is updated, so a tab
 * that acknowledges synchronously (the leader's own tab) is safe.
 *
 * `viewOf(group)` gives the group's current state as a batch with a snapshot (null when the hub
 * holds none); `maxInFlight` is how many deliveries a tab may hold unacknowledged, `ackTimeoutMs`
 * how long one may stay unacknowledged before it no longer counts, and `batchMs` how long a
 * delivery to a tab that never acknowledges (an older client) counts.
 */
export class Outlet {
    /**
     * @param {string} group
     * @param {number} everyMs
     */
    static key(group: string, everyMs: number): string;
    /** @param {{ viewOf?: (group: string) => HubBatch | null, batchMs?: number, ackTimeoutMs?: number, maxInFlight?: number }} [options] */
    constructor({ viewOf, batchMs, ackTimeoutMs, maxInFlight }?: {
        viewOf?: (group: string) => HubBatch | null;
        batchMs?: number;
        ackTimeoutMs?: number;
        maxInFlight?: number;
    });
    viewOf: (group: string) => HubBatch | null;
    batchMs: number;
    ackTimeoutMs: number;
    maxInFlight: number;
    /** @type {Map<string, OutletTab>} */
    tabs: Map<string, OutletTab>;
    /** @type {Map<string, Set<View>>} */
    byGroup: Map<string, Set<View>>;
    stats: {
        deliveries: number;
        batches: number;
        coalesced: number;
        ackTimeouts: number;
    };
    /** Add (or re-announce) a tab: whether it acknowledges deliveries, whether it is visible. */
    /**
     * @param {string} tab
     * @param {{ acks?: boolean, visible?: boolean }} [options]
     */
    setTab(tab: string, { acks, visible }?: {
        acks?: boolean;
        visible?: boolean;
    }): void;
    /** @param {string} tab */
    removeTab(tab: string): void;
    /** A tab subscribes `group` at `everyMs`: it is sent the group's current state at once. */
    /**
     * @param {string} tab
     * @param {string} group
     * @param {number} everyMs
     * @param {number} now
     * @returns {Delivery[]}
     */
    addView(tab: string, group: string, everyMs: number, now: number): Delivery[];
    /** Returns true when the tab holds no other view of `group` (its reference can go). */
    /**
     * @param {string} tab
     * @param {string} group
     * @param {number} everyMs
     */
    removeView(tab: string, group: string, everyMs: number): boolean;
    /**
     * New batches (one gateway frame's, one per group): to every idle, visible tab now — all of a
     * tab's in one delivery —, merged for the others.
     */
    /**
     * @param {HubBatch[]} batches
     * @param {number} now
     * @returns {Delivery[]}
     */
    offer(batches: HubBatch[], now: number): Delivery[];
    /** The tab took its delivery in: what it has pending goes now. */
    /**
     * @param {string} tab
     * @param {number} now
     * @returns {Delivery[]}
     */
    ack(tab: string, now: number): Delivery[];
    /**
     * @param {string} tab
     * @param {boolean} visible
     * @param {number} now
     * @returns {Delivery[]}
     */
    setVisible(tab: string, visible: boolean, now: number): Delivery[];
    /** Whatever has come due by `now` (tiers whose interval passed, deliveries never acknowledged). */
    /**
     * @param {number} now
     * @returns {Delivery[]}
     */
    due(now: number): Delivery[];
    /**
     * When `due` next has something to send (null: nothing is waiting).
     * @returns {number | null}
     */
    nextAt(): number | null;
    /**
     * @param {string} tab
     * @param {OutletTab} t
     * @param {number} now
     * @returns {Delivery[]}
     */
    _flush(tab: string, t: OutletTab, now: number): Delivery[];
}
export type Batch = import("./xy-core.js").Batch;
export type State = import("./xy-core.js").State;
/**
 * A batch as the hub numbers it (`id`); `owned` marks a view's own pending merge (Pending).
 */
export type HubBatch = Batch & {
    id: number;
    owned?: false;
};
/**
 * A batch as a tab receives it: at the tier (`everyMs`) of the subscription it is for.
 */
export type TierBatch = HubBatch & {
    everyMs: number;
};
/**
 * A view's own pending merge of batches (Maps, so later batches fold in place).
 */
export type Pending = {
    owned: true;
    id: number;
    group: string;
    snapshot: Batch["snapshot"];
    symbols: Map<string, State>;
    removed: Set<string>;
    deltas: number;
    minArrivalUs: number;
    seqs: Record<number, number>;
};
/**
 * One tab's subscription of one group at one tier.
 */
export type View = {
    tab: string;
    group: string;
    everyMs: number;
    pending: HubBatch | Pending | null;
    lastAt: number;
    needsView: boolean;
};
export type OutletTab = {
    acks: boolean;
    visible: boolean;
    sent: number[];
    views: Map<string, View>;
};
export type Delivery = {
    tab: string;
    batches: TierBatch[];
};
export type DrawPlan = {
    fps: number;
    until: number;
};
