"""``shard``: route each symbol to its group and to a shard of that group.

The group comes from the symbol's reference contract (``Contract.group``), else from the first
config rule that matches (venue list and ``fnmatch`` symbol patterns), else ``default_group``.
The shard is a stable hash of ``venue.symbol`` (CRC-32 modulo the group's shard count), so every
instance and every restart agrees. The delta subject becomes ``{prefix}.{group}`` for a
one-shard group and ``{prefix}.{group}.{shard}`` otherwise.

Input/output: ``Batch`` values (records get their ``route``) and the ``Restore`` record (whose
snapshots say where each symbol was, so routing survives a restart before contracts are read;
a ``Restore`` in mid-stream starts the routes over).

With group ownership (``ownership`` on ``ingest``) every group shard routes to is offered to
the ownership, the routes are shared with ingest (which skips a tick of a group this aggregator
does not own before decoding it), and a tick routed to such a group here is dropped and counted
(``agg_foreign_ticks_total{where="shard"}``).

A tick whose symbol no contract has named a group for yet is routed at once by the rules /
default group, not held (ingest loads every stored contract before the first tick, and a
publisher's contracts precede its ticks in the stream, so this is a feed without reference data
for that symbol): counted in ``symbols_routed_without_contract_total`` and logged once per
symbol (``XY-AGG-012``). A contract that changes a symbol's group carries the route it leaves
(``ContractRec.moved_from``) so conflation removes the symbol from the old group at once.
"""

from __future__ import annotations

import fnmatch
import zlib

import attrs

from xypipe._errors import ROUTED_WITHOUT_CONTRACT
from xypipe._md.conflation import delta_subject
from xypipe._md.records import Batch, ContractRec, Restore, Route, TickRec
from xypipe._stage import Stage
from xypipe._stages._aggshare import foreign_counter, share_of
from xypipe._validate import Invalid, group_problem, in_range, non_empty, subject_pattern


def _check_group(inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    problem = group_problem(value)
    if problem is not None:
        raise Invalid(attribute.name,
                      "expected a group name of 1-64 letters, digits, '_' or '-' (it becomes a "
                      f"subject token); {problem}", value)


@attrs.frozen
class GroupRule:
    """Symbols matching ``symbols`` (fnmatch patterns) on ``venues`` (all if empty) belong to
    ``group``."""

    group: str = attrs.field(validator=_check_group)
    symbols: list[str] = attrs.field(factory=lambda: ["*"], validator=non_empty())
    venues: list[str] = attrs.field(factory=list)


@attrs.frozen
class ShardConfig:
    prefix: str = attrs.field(default="xy.md.tick", validator=subject_pattern())
    #: Shards per group unless ``group_shards`` says otherwise.
    shards: int = attrs.field(default=1, validator=in_range(1, 256))
    group_shards: dict[str, int] = attrs.field(factory=dict)
    default_group: str = attrs.field(default="default", validator=_check_group)
    rules: list[GroupRule] = attrs.field(factory=list)
    #: Let reference contracts choose the group (they win over the rules).
    use_contracts: bool = True

    def __attrs_post_init__(self) -> None:
        for group, n in self.group_shards.items():
            problem = group_problem(group)
            if problem is not None:
                raise Invalid("group_shards", "expected group names made of letters, digits, "
                              f"'_' or '-'; {problem}", group)
            if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 256:
                raise Invalid(f"group_shards.{group}", "expected an integer 1..256", n)


class Router:
    """The sans-I/O core: symbol -> Route, learning groups from contracts.

    ``table`` (symbol key -> group) is kept up to date with every route and every group a
    contract names (ingest reads it to skip foreign ticks before decoding them); groups never
    routed to before are collected in :attr:`new_groups` (the stage offers them to the
    ownership)."""

    def __init__(self, cfg: ShardConfig, table: dict[str, str] | None = None) -> None:
        self.cfg = cfg
        self._routes: dict[str, Route] = {}
        self._shared: dict[tuple[str, int], Route] = {}
        self._group_of: dict[str, str] = {}
        self.table: dict[str, str] = table if table is not None else {}
        self._groups: set[str] = set()
        #: Groups seen for the first time (drained by the stage).
        self.new_groups: list[str] = []
        #: Keys routed by the rules / default group because no contract named their group yet
        #: (drained by the stage, which counts and logs them).
        self.without_contract: list[str] = []

    def groups_of_config(self) -> list[str]:
        """The groups the config names (rules and the default group)."""
        return sorted({r.group for r in self.cfg.rules} | {self.cfg.default_group})

    def _seen(self, group: str) -> None:
        if group not in self._groups:
            self._groups.add(group)
            self.new_groups.append(group)

    def shards_of(self, group: str) -> int:
        return self.cfg.group_shards.get(group, self.cfg.shards)

    def _by_rules(self, key: str) -> str:
        venue, _, symbol = key.partition(".")
        for rule in self.cfg.rules:
            if rule.venues and venue not in rule.venues:
                continue
            if any(fnmatch.fnmatchcase(symbol, p) for p in rule.symbols):
                return rule.group
        return self.cfg.default_group

    def learn(self, key: str, group: str) -> Route | None:
        """``key`` belongs to ``group`` from now on; returns the route it leaves (``None``
        when it was never routed or stays in the same group)."""
        self.table[key] = group
        if self._group_of.get(key) == group:
            return None
        old = self._routes.get(key)
        if old is None and key in self._group_of:
            old = self.route(key)  # known from a restored snapshot, not routed yet
        self._group_of[key] = group
        self._seen(group)
        self._routes.pop(key, None)
        return old if old is not None and old.group != group else None

    def route(self, key: str) -> Route:
        r = self._routes.get(key)
        if r is not None:
            return r
        group = self._group_of.get(key)
        if group is None:
            group = self._by_rules(key)
            self.without_contract.append(key)
        shards = self.shards_of(group)
        shard = zlib.crc32(key.encode()) % shards if shards > 1 else 0
        r = self._shared.get((group, shard))
        if r is None:
            r = self._shared[(group, shard)] = Route(
                group, shard, shards, delta_subject(self.cfg.prefix, group, shard, shards))
            self._seen(group)
        self._routes[key] = r
        self.table[key] = group
        return r


class Shard(Stage[Restore | Batch, Restore | Batch, ShardConfig]):
    """Map each symbol to its group and shard; set the delta subject."""

    async def run(self) -> None:
        share = share_of(self.ctx)
        router = Router(self.config, share.routes)
        share.offer(router.groups_of_config())
        self._no_contract = self.ctx.metrics.counter(
            "symbols_routed_without_contract",
            "Symbols whose first tick was routed by the rules / default group because no "
            "reference contract named their group yet")
        self._foreign = foreign_counter(self.ctx)
        use_contracts = self.config.use_contracts
        send = self.outbox.send
        owned: frozenset[str] | None = None
        async for item in self.inbox:
            if isinstance(item, Restore):
                # A fresh start (mid-stream too): the routes are learnt again from the
                # restore's snapshots and the contracts ingest reads after it.
                router = Router(self.config, share.routes)
                share.routes.clear()
                router.new_groups.clear()
                owned = item.owned
                share.routed_through = (item.replay_from - 1 if item.replay_from
                                        else item.target_seq)
                for snap in item.snapshots:
                    for s in snap.symbols:
                        router.learn(f"{s.venue}.{s.symbol}", snap.group)
                await send(item)
                continue
            routes = router._routes
            route_of = router.route
            first_tick = share.first_tick
            for rec in item.recs:
                if type(rec) is TickRec:
                    r = routes.get(rec.key)
                    rec.route = r = r if r is not None else route_of(rec.key)
                    if owned is not None and r.group not in first_tick and rec.sseq:
                        first_tick[r.group] = rec.sseq  # (stream order: the first one)
                elif type(rec) is ContractRec:
                    if use_contracts and rec.contract.group:
                        rec.moved_from = router.learn(rec.key, rec.contract.group)
                    rec.route = route_of(rec.key)
            if router.without_contract:
                self._without_contract(router, use_contracts)
            if router.new_groups:
                share.offer(router.new_groups)
                router.new_groups = []
            batch = item if isinstance(item, Batch) else Batch(list(item), 0)
            if batch.watermark > share.routed_through:
                share.routed_through = batch.watermark
            if owned is not None:
                batch = self._owned_only(batch, owned)
            await send(batch)

    def _owned_only(self, batch: Batch, owned: frozenset[str]) -> Batch:
        """Ticks of groups this aggregator does not own go no further (ingest skips most
        before decoding them; these were routed here first). Contracts all pass: they move
        symbols out of owned groups too."""
        recs = batch.recs
        kept = [r for r in recs
                if type(r) is not TickRec or (r.route is not None and r.route.group in owned)]
        if len(kept) != len(recs):
            self._foreign.labels("shard").inc(len(recs) - len(kept))
            batch.recs = kept
        return batch

    def _without_contract(self, router: Router, use_contracts: bool) -> None:
        keys, router.without_contract = router.without_contract, []
        if not use_contracts:
            return  # routing by rules is the configuration, not a missing contract
        self._no_contract.inc(len(keys))
        for key in keys[:5]:
            # Once per symbol (a route is computed once): a feed whose contracts come late,
            # or from elsewhere, shows here. The symbol moves, explicitly, when one arrives.
            self.ctx.log.info("symbol routed before any contract named its group",
                              code=ROUTED_WITHOUT_CONTRACT, symbol=key,
                              group=router.route(key).group)
        if len(keys) > 5:
            self.ctx.log.info("more symbols routed before any contract named their group",
                              code=ROUTED_WITHOUT_CONTRACT, symbols=len(keys) - 5)
