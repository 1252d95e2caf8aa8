"""The field dictionary and the code agree: every metric, label, label value and error code.

Both directions, with no list of our own: the code side is read from the AST of ``xypipe/``
(every registration and every ``.labels(...)`` call site, :mod:`_field_dictionary`) and from the
``/metrics`` of every process of a real demo tree (what is actually emitted, label values
included); the dictionary side from its tables.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections import defaultdict

import pytest
import trio
from _field_dictionary import (
    PACKAGE,
    ROOT,
    CodeScan,
    MetricDoc,
    codes_in,
    documented_codes,
    parse_dictionary,
    parse_labels,
)
from prometheus_client.parser import text_string_to_metric_families
from test_demo import demo_copy, http_get, wait_healthy, wait_metrics

from xypipe import load_config
from xypipe.contracts import (
    ErrorCode,
    GroupRef,
    Resume,
    ResumePoint,
    SnapshotRequest,
    Subscribe,
)

sys.path.insert(0, str(ROOT / "tests" / "gateway"))
from gw_support import ws_client


@pytest.fixture(scope="module")
def scan() -> CodeScan:
    return CodeScan()


@pytest.fixture(scope="module")
def docs() -> dict[str, MetricDoc]:
    rows, _ = parse_dictionary()  # rows outside the grammar: the grammar test names them
    out: dict[str, MetricDoc] = {}
    for row in rows:
        out.setdefault(row.family, row)
    return out


def fail_if(problems: list[str], what: str) -> None:
    assert not problems, f"{what} ({len(problems)}):\n  " + "\n  ".join(sorted(problems))


# --------------------------------------------------------------------------- the grammar


def test_the_labels_grammar_reads_values_patterns_sources_and_refuses_open_lists():
    labels = parse_labels("`outcome` = `bridged` (replayed), `snapshot`; `reason` = values of "
                          "`xypipe._md.seqrules.ResumeOutcome`; `group`, `edge` = `{p}:{up}`",
                          "row")
    assert labels["outcome"].values == {"bridged", "snapshot"}
    assert labels["reason"].accepts("too_old") and not labels["reason"].accepts("nope")
    assert labels["group"].values is None and labels["group"].accepts("anything")
    assert labels["edge"].accepts("agg:ingest->dedupe") and not labels["edge"].accepts(":x")
    with pytest.raises(ValueError, match="open list"):
        parse_labels("`reason` (`delta`, `snapshot`, …)", "row")
    with pytest.raises(ValueError, match="expected `value`"):
        parse_labels("`level` = `L0`..`L3`", "row")


def test_every_metric_row_is_in_the_grammar_and_no_metric_has_two_differing_rows():
    rows, problems = parse_dictionary()
    fail_if(problems, "rows outside the grammar")
    seen: dict[str, MetricDoc] = {}
    for row in rows:
        first = seen.setdefault(row.family, row)
        if first is row:
            continue
        if first.section == row.section:
            problems.append(f"`{row.name}` has two rows in '{row.section}' (lines "
                            f"{first.line} and {row.line})")
        elif (first.kind, first.labels) != (row.kind, row.labels):
            problems.append(f"`{row.name}` is documented differently in '{first.section}' "
                            f"(line {first.line}) and '{row.section}' (line {row.line})")
    fail_if(problems, "duplicate metric rows")


# --------------------------------------------------------------------------- code vs dictionary


def test_every_registered_metric_is_documented_with_its_type_and_labels(scan, docs):
    fail_if(scan.problems, "registrations the scan cannot read")
    problems = []
    for reg in scan.registrations:
        doc = docs.get(reg.family)
        if doc is None:
            problems.append(f"metric `{reg.family}` ({reg.kind}, registered at {reg.where}) "
                            "is not documented")
            continue
        if doc.kind != reg.kind:
            problems.append(f"`{doc.name}` is documented as a {doc.kind} but registered as a "
                            f"{reg.kind} at {reg.where}")
        if set(doc.labels) != set(reg.labels):
            problems.append(f"`{doc.name}` is documented with labels {sorted(doc.labels)} but "
                            f"registered with {sorted(reg.labels)} at {reg.where}")
    fail_if(sorted(set(problems)), "metrics the dictionary does not match")


def test_every_documented_metric_is_registered(scan, docs):
    registered = {r.family for r in scan.registrations}
    fail_if([f"documented metric `{d.name}` ({d.section}, line {d.line}) is never registered"
             for d in docs.values() if d.family not in registered],
            "documented metrics missing from the code")


def test_every_label_value_written_in_the_code_is_documented(scan, docs):
    problems = []
    for family, uses in scan.uses.items():
        doc = docs.get(family)
        if doc is None:
            continue  # reported by the registration test
        for label, use in uses.items():
            ldoc = doc.labels.get(label)
            if ldoc is None:
                continue
            if use.literals and ldoc.allowed() is None:
                problems.append(f"`{doc.name}{{{label}}}` is documented with free values but "
                                f"the code writes {sorted(use.literals)}: enumerate them")
            for value in sorted(use.literals):
                if not ldoc.accepts(value):
                    problems.append(f"`{doc.name}{{{label}}}` value `{value}` is emitted by the "
                                    "code but not documented")
    fail_if(problems, "label values the dictionary does not list")


def test_every_documented_label_value_can_be_produced_by_the_code(scan, docs):
    """A documented value is a literal (or an f-string's match) at one of the metric's
    ``.labels(...)`` call sites, or, where a site passes a computed value, a string the code
    writes somewhere; a value named by an enumeration is that enumeration's, by import."""
    problems = []
    for doc in docs.values():
        uses = scan.uses.get(doc.family, {})
        for label, ldoc in doc.labels.items():
            if ldoc.source is not None:
                try:
                    ldoc.source_values()
                except (ImportError, AttributeError, TypeError) as exc:
                    problems.append(f"`{doc.name}{{{label}}}` names `{ldoc.source}` as its "
                                    f"values, which does not import as an enumeration: {exc}")
                continue
            if ldoc.values is None:
                continue
            use = uses.get(label)
            computed = use is None or bool(use.computed)
            for value in sorted(ldoc.values):
                if use is not None and (value in use.literals or any(
                        re.fullmatch(p, value) for p in use.patterns)):
                    continue
                if computed and value in scan.literals:
                    continue
                problems.append(f"`{doc.name}{{{label}}}` value `{value}` is documented but "
                                "the code never produces it")
    fail_if(problems, "documented label values nothing produces")


# --------------------------------------------------------------------------- error codes


def test_every_error_code_in_the_code_is_documented_and_every_documented_one_exists():
    server = codes_in(sorted(PACKAGE.rglob("*.py")))
    browser = codes_in(sorted(p for p in (ROOT / "ui-static").rglob("*")
                              if p.suffix in (".js", ".html") and "gen" not in p.parts))
    documented = documented_codes()
    problems = [f"error code {code} (in {where}) is not in the dictionary's error-code table"
                for code, where in {**browser, **server}.items() if code not in documented]
    for code, section in documented.items():
        home = browser if section == "browser" else server
        if code not in home:
            problems.append(f"documented error code {code} is used nowhere in "
                            f"{'ui-static/' if section == 'browser' else 'xypipe/'}")
    fail_if(problems, "error codes the dictionary does not match")


# --------------------------------------------------------------------------- a real demo tree


async def _scrape(port: int) -> str:
    status, text = await trio.to_thread.run_sync(http_get, port, "/metrics")
    assert status == 200, f"/metrics on :{port} answered {status}"
    return text


#: What the browser session below leaves on the gateway's page (checked like the rest).
BROWSER_SAMPLES = {("ws_connections_total", (("outcome", "accepted"),)),
                   ("ws_resyncs_total", (("reason", "request"),)),
                   ("ws_resumes_total", (("outcome", "snapshot"), ("reason", "ahead")))}


def _samples(text: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {(s.name, tuple(sorted(s.labels.items())))
            for f in text_string_to_metric_families(text) for s in f.samples}


async def _browser_session(gateway_port: int, ui_port: int) -> None:
    """What a browser does, so the gateway's labelled counters have children: connect with a
    dev token, subscribe, ask for a snapshot, and resume from a point the stream has not
    reached (answered with a snapshot). Whether the gateway looks the group's snapshot up
    depends on whether a live one came first, so no lookup is required here."""
    status, body = await trio.to_thread.run_sync(http_get, ui_port, "/dev/token")
    assert status == 200, body
    token = json.loads(body)["token"]
    async with ws_client(gateway_port) as c:
        await c.hello(token)
        # The gateway learns the published groups from their first deltas and the known-groups
        # bucket, and looks a group's snapshot up in JetStream on a miss; on a busy machine the
        # subscription can come before either and is refused as unknown or answered
        # SNAPSHOT_UNAVAILABLE (both not fatal): subscribe again, as a client does.
        with trio.fail_after(30):
            while True:
                await c.send(subscribe=Subscribe(groups=[GroupRef(group="fx")]))
                f = await c.recv_until(lambda f: len(f.snapshots) > 0 or f.HasField("error"),
                                       limit_s=10)
                if f.snapshots:
                    break
                assert f.error.code in (ErrorCode.ERROR_CODE_UNKNOWN_GROUP,
                                        ErrorCode.ERROR_CODE_SNAPSHOT_UNAVAILABLE), f.error
                await trio.sleep(0.2)
        await c.send(snapshot_request=SnapshotRequest(group="fx"))
        await c.recv_until(lambda f: len(f.snapshots) > 0, limit_s=30)
        ahead = [attrs_evolve_point(p) for p in c.resume_points()]
    async with ws_client(gateway_port) as c:
        await c.hello(token)
        await c.send(resume=Resume(points=ahead))
        await c.recv_until(lambda f: len(f.snapshots) > 0, limit_s=30)


def attrs_evolve_point(p: ResumePoint) -> ResumePoint:
    return ResumePoint(group=p.group, shard=p.shard, epoch=p.epoch, seq=p.seq + 1_000_000)


async def test_what_a_running_demo_emits_is_documented(tmp_path, scan, docs):
    config_path = demo_copy(tmp_path)
    cfg = load_config(config_path)
    ports = {name: cfg.http_for(name).port for name in cfg.process_names()}
    ports["main"] = cfg.http.port
    ui_port = next(s.config.port for p in cfg.pipelines.values() for s in p.stages
                   if s.use == "ui_server")
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "xypipe", "run", str(config_path)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    pages: dict[str, str] = {}
    try:
        for port in ports.values():
            await wait_healthy(port, 60)
        # Deltas and snapshots reach the gateway; the UI server answers a page and a token.
        await wait_metrics(ports["aggregator"], ("ticks_out_total", "snapshots_out_total"), 60)
        for path in ("/", "/config.json", "/missing.js"):
            await trio.to_thread.run_sync(http_get, ui_port, path)
        await _browser_session(ports["gateway"], ui_port)
        with trio.fail_after(30):  # the gateway exports its hub's counts with the next batch
            while True:
                if BROWSER_SAMPLES <= _samples(await _scrape(ports["gateway"])):
                    break
                await trio.sleep(0.2)
        for name, port in ports.items():
            pages[name] = await _scrape(port)
    finally:
        proc.send_signal(signal.SIGINT)
        with trio.move_on_after(10):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    registered = {r.family for r in scan.registrations}
    problems: list[str] = []
    seen: dict[str, set[str]] = defaultdict(set)
    for process, text in pages.items():
        families = list(text_string_to_metric_families(text))
        names = {f.name for f in families}
        for family in families:
            if family.name.endswith("_created") and family.name[:-8] in names:
                continue  # prometheus-client's creation time of a counter or histogram
            seen[family.name].add(process)
            doc = docs.get(family.name)
            if doc is None:
                problems.append(f"metric `{family.name}` is emitted by the {process} but not "
                                "documented")
                continue
            if family.name not in registered:
                problems.append(f"`{family.name}` is emitted by the {process} but the code scan "
                                "found no registration of it (teach _field_dictionary.py)")
            for sample in family.samples:
                for label, value in sample.labels.items():
                    if label == "le" and doc.kind == "histogram":
                        continue
                    ldoc = doc.labels.get(label)
                    if ldoc is None:
                        problems.append(f"`{doc.name}` is emitted by the {process} with label "
                                        f"`{label}`, which is not documented")
                    elif not ldoc.accepts(value):
                        problems.append(f"`{doc.name}{{{label}}}` value `{value}` is emitted by "
                                        f"the {process} but not documented")
    fail_if(sorted(set(problems)), "what the demo emits and the dictionary does not document")
    # The run covered every process and the metrics each is known for.
    assert {"ticks_out", "src_ingest", "ws_active", "ui_requests", "process_up"} <= set(seen), \
        sorted(seen)

