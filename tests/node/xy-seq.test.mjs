// The sequence rules through the browser's pure core (ui-static/xy-core.js), from the same
// scenario vectors the Python side reads (proto/scenarios/sequence.json;
// tests/gateway/test_seq_vectors.py).
// Run: node --test tests/node/
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { MAX_GAP, REJECTED, SeqTracker, judgeDelta, judgeResume } from "../../ui-static/xy-core.js";

const vectors = JSON.parse(readFileSync(new URL("../../proto/scenarios/sequence.json", import.meta.url), "utf8"));

test("the bound is the one the vectors are written for", () => {
  assert.equal(MAX_GAP, vectors.max_gap);
});

for (const v of vectors.judge) {
  test(`judge: ${v.name}`, () => {
    const d = v.delta;
    assert.equal(judgeDelta(v.baseline, d.epoch, d.first_seq, d.seq, vectors.max_gap), v.verdict);
  });
}

for (const v of vectors.resume) {
  test(`resume: ${v.name}`, () => {
    assert.equal(judgeResume(v.stream, v.point), v.outcome);
  });
}

// What the worker does with each verdict (xy-worker.js _onDelta): the tracker's state is what
// the vectors check; asking for the snapshot is the worker's I/O.
function onVerdict(t, delta, verdict) {
  if (verdict === "gap" || verdict === "future_epoch") t.beginResync(delta.group, 0, delta);
  else if (verdict === "far_future") t.beginResync(delta.group, 0);
}

for (const s of vectors.streams) {
  test(`stream: ${s.name}`, () => {
    const t = new SeqTracker({ maxGap: vectors.max_gap });
    s.steps.forEach((step, i) => {
      const where = `${s.name}, step ${i}`;
      if (step.snapshot) {
        const follow = t.applySnapshot({ group: "g", epoch: step.snapshot.epoch, shardSeq: step.snapshot.shard_seq });
        assert.deepEqual(follow, [], `${where}: no held delta follows the snapshot`);
      } else {
        const d = step.delta;
        const delta = { group: "g", shard: d.shard, epoch: d.epoch, firstSeq: d.first_seq, seq: d.seq };
        const verdict = t.check(delta);
        assert.equal(verdict, step.expect, where);
        onVerdict(t, delta, verdict);
      }
      assert.equal(t.isResyncing("g"), step.resyncing, `${where}: resyncing`);
    });
  });
}

test("rejected verdicts never move the baseline", () => {
  const t = new SeqTracker();
  t.applySnapshot({ group: "g", epoch: 7, shardSeq: { 0: 10 } });
  for (const [epoch, seq] of [[7, 10 + MAX_GAP + 2], [6, 11], [8, 1]]) {
    const verdict = t.check({ group: "g", shard: 0, epoch, seq, firstSeq: 0 });
    assert.ok(REJECTED.has(verdict), verdict);
    t.resyncing.delete("g");
  }
  assert.deepEqual(t.resumePoints(["g"]), [{ group: "g", shard: 0, epoch: 7, seq: 10 }]);
});
