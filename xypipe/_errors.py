"""One exception tree for the whole project.

Every error carries a stable ``code`` (``XY-<AREA>-<NNN>``) that also appears in the JSON log
line and in ``docs/observability/field-dictionary.md``. Third-party errors (nats-py, wsproto,
protobuf, jwt) are caught in their adapter module and re-raised as one of these, so nothing
outside an adapter ever has to know which library failed.
"""

from __future__ import annotations

from typing import ClassVar, TypeVar

E = TypeVar("E", bound=BaseException)


def find_in_group(exc: BaseException, kind: type[E]) -> E | None:
    """The first ``kind`` inside (possibly nested) exception groups, or ``exc`` itself."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            found = find_in_group(sub, kind)
            if found is not None:
                return found
    return None


def sole_leaf(exc: BaseException) -> BaseException:
    """Unwrap groups that hold exactly one exception (Trio nurseries wrap every error)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class XyError(Exception):
    """Base of every error xypipe raises on purpose."""

    code: ClassVar[str] = "XY-GEN-000"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]

    def __str__(self) -> str:
        return self.message


class ConfigError(XyError):
    """A configuration file or table is invalid. ``problems`` lists every finding, one per line."""

    code = "XY-CFG-001"

    def __init__(self, problems: list[str], *, codes: list[str] | None = None) -> None:
        self.problems = list(problems)
        #: The code of each problem (a config can hold wiring mistakes and bad values at once).
        self.codes = list(codes) if codes is not None else [self.code] * len(self.problems)
        super().__init__("\n".join(self.problems))

    def coded(self) -> list[tuple[str, str]]:
        """Each problem with its code."""
        return list(zip(self.problems, self.codes, strict=True))


class PluginError(XyError):
    """A stage could not be found or does not satisfy the stage protocol."""

    code = "XY-PLG-001"


#: Leaves of an exception group named in one line at most; the rest are counted.
_MAX_LEAVES = 3


def leaves_of(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (possibly nested) exception groups, or ``[exc]``."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves_of(sub)]
    return [exc]


def _raised_at(exc: BaseException) -> str:
    """``module.py:123 in func`` of the frame that raised ``exc`` (its traceback's last)."""
    tb = exc.__traceback__
    if tb is None:
        return ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return f"{code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno} in {code.co_name}"


def _one(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, XyError):
        return text  # ours: the message says what and where already
    at = _raised_at(exc)
    return f"{text} (at {at})" if at else text


def describe_exception(exc: BaseException) -> str:
    """One line for ``exc``: ``Type: message``; a group as its leaf exceptions (a nursery's
    wrapper names nothing); an exception that is not one of ours with where it was raised."""
    leaves = leaves_of(exc)
    if len(leaves) == 1 and leaves[0] is exc:
        return _one(exc)
    shown = "; ".join(_one(leaf) for leaf in leaves[:_MAX_LEAVES])
    more = len(leaves) - _MAX_LEAVES
    return shown + (f"; and {more} more" if more > 0 else "")


class StageError(XyError):
    """A stage raised; names the pipeline and stage so the operator knows where to look."""

    code = "XY-STG-001"

    def __init__(self, pipeline: str, stage: str, cause: BaseException) -> None:
        cause = sole_leaf(cause)
        self.pipeline = pipeline
        self.stage = stage
        self.cause = cause
        super().__init__(
            f"pipeline {pipeline!r}, stage {stage!r} failed: {describe_exception(cause)}"
        )


class ContractError(XyError):
    """Bytes on the wire do not decode as the contract says."""

    code = "XY-CON-001"


class BridgeError(XyError):
    """The NATS bridge failed: connect, publish, request, JetStream."""

    code = "XY-NATS-001"


class NatsTimeout(BridgeError):
    code = "XY-NATS-002"


class NatsNotFound(BridgeError):
    """A JetStream message, stream or key does not exist."""

    code = "XY-NATS-003"


class EmbeddedServerError(XyError):
    """The embedded nats-server could not be started."""

    code = "XY-EMB-001"


class ChildFailed(XyError):
    """A supervised process (a worker child or the embedded nats-server) exited and is not
    restarted — its policy says ``never``, or its restart budget is spent — so the tree stops.
    The code says which (see the constants below)."""

    code = "XY-SUP-001"


# Supervision (xypipe/_supervise.py): what happened to a supervised process. Worker processes
# log XY-SUP-*, the embedded nats-server XY-EMB-*, so an operator can grep for either.
#: A process exited and its restart policy is "never": the tree stops.
SUP_NOT_RESTARTED = ChildFailed.code
#: A second signal while stopping: whatever still runs is killed now.
SUP_SECOND_SIGNAL = "XY-SUP-002"
#: A child did not stop within its grace period after SIGTERM and was killed.
SUP_KILLED_AFTER_GRACE = "XY-SUP-003"
#: A process died (non-zero status or a signal); it is restarted after a backoff.
SUP_RESTARTING = "XY-SUP-004"
#: A process died once more than its restart budget allows: the tree stops.
SUP_BUDGET_SPENT = "XY-SUP-005"
#: A restart could not start the process; counts as a failure against the budget.
SUP_START_FAILED = "XY-SUP-006"
#: A process exited with status 0 under policy "on-failure": not restarted, the rest keeps running.
SUP_FINISHED = "XY-SUP-007"
#: Without main pipelines the parent serves /metrics on [http], but a child has that port.
SUP_HTTP_PORT_TAKEN = "XY-SUP-008"
#: The embedded nats-server died; it is restarted on the same host, port and data directory.
EMB_RESTARTING = "XY-EMB-002"
#: The embedded nats-server died once more than its restart budget allows: the tree stops.
EMB_BUDGET_SPENT = "XY-EMB-003"
#: A restart of the embedded nats-server failed (port taken, data dir unusable...).
EMB_START_FAILED = "XY-EMB-004"
#: The embedded nats-server exited and its policy does not restart it: the tree stops.
EMB_NOT_RESTARTED = "XY-EMB-005"


class SharedPortUnsupported(XyError):
    """``workers = N`` > 1 asks the copies of a process to share one port with
    ``SO_REUSEPORT``, and this platform has no such option."""

    code = "XY-SUP-020"


# Workers (``[processes.NAME] workers = N``): the copies of one process, each supervised alone.
#: How many copies of a process the supervisor starts, and why (the config's integer or the
#: "auto" rule: usable cores, other child processes) — logged once at start.
SUP_WORKERS_PLANNED = "XY-SUP-021"
#: A worker could not bind its private /metrics port (metrics_port + index): it serves the
#: shared port only, and Prometheus cannot scrape it alone.
SUP_WORKER_METRICS_PORT = "XY-SUP-022"


# Rolling restarts (xypipe/_rollout.py, _rollout_gate.py, _rollout_shell.py).
#: A rollout started: which copies it replaces, in which order, with which gate.
SUP_ROLLOUT_STARTED = "XY-SUP-040"
#: One copy replaced: its successor passed the gate and the old copy was drained and stopped.
SUP_ROLLOUT_STEP_DONE = "XY-SUP-041"
#: Every copy was replaced.
SUP_ROLLOUT_DONE = "XY-SUP-042"
#: A new copy failed (never ready, exited, or its health gate): it is drained, the old copies
#: not yet replaced keep serving, the rollout stops. The line says why.
SUP_ROLLOUT_ROLLED_BACK = "XY-SUP-043"
#: A rollout was asked for and refused before anything started (the config does not load, its
#: processes or worker counts changed, another rollout runs).
SUP_ROLLOUT_REFUSED = "XY-SUP-044"
#: A copy is not rolled: two copies of it side by side would publish twice (no stage that scales
#: out, no ownership leases); it keeps running the version it started with.
SUP_ROLLOUT_SKIPPED = "XY-SUP-045"
#: A process's /healthz or /metrics could not be read during a rollout (counted as not ready).
SUP_ROLLOUT_PROBE_FAILED = "XY-SUP-046"


class RolloutError(XyError):
    """``xypipe rollout``: no running ``xypipe run`` for this config, or the rollout it asked
    for was refused or rolled back."""

    code = "XY-SUP-047"


class AuthError(XyError):
    """A client failed authentication (bad token, expired, wrong audience...)."""

    code = "XY-AUTH-001"


class AuthKeysBad(AuthError):
    """A file of the token key set is unusable (named in the message): at a reload the keys in
    force stay, at start the stage refuses to start."""

    code = "XY-AUTH-020"


class ProtocolError(XyError):
    """A peer broke the wire protocol. ``remote`` says whether it was the peer or us."""

    code = "XY-PROTO-001"

    def __init__(self, message: str, *, code: str | None = None, remote: bool = True) -> None:
        super().__init__(message, code=code)
        self.remote = remote


class NatsNoResponders(BridgeError):
    """A request found nobody subscribed to its subject."""

    code = "XY-NATS-004"


class NatsConnectionError(BridgeError):
    """Cannot connect to NATS, or the connection is closed."""

    code = "XY-NATS-005"


class NatsBackpressure(BridgeError):
    """Outgoing messages cannot be queued: the bridge's publish queue is full, or nats-py's
    reconnect buffer is full while the server is away."""

    code = "XY-NATS-006"


class NatsSlowConsumer(BridgeError):
    """A subscription fell behind and NATS (client or server side) dropped messages for it."""

    code = "XY-NATS-007"


class SourceDataError(ContractError):
    """A source message (``xy.src.*``/``xy.ref.*``) is malformed or contradicts its subject;
    the aggregator counts it in ``src_bad_total{reason}`` and skips it."""

    code = "XY-SRC-001"


#: A source symbol re-anchored: ``reanchor_after`` consecutive, mutually consistent ticks out
#: of its bounds (a venue renumbering, a real price move) made the last of them the new anchor.
SRC_REANCHOR = "XY-SRC-003"


class RebuildError(XyError):
    """A restarted aggregator could not use part of its stored state (an undecodable stored
    snapshot or checkpoint is left out; the groups concerned start a new epoch, see
    ``AGG_GROUP_NEW_EPOCH``)."""

    code = "XY-AGG-001"


class NatsPermissionDenied(BridgeError):
    """The NATS server refused a publish or subscribe under the user's permissions."""

    code = "XY-NATS-008"


class NatsJsUnavailable(NatsNotFound):
    """JetStream does not answer (not enabled, restarting, no meta leader): a transient state
    that callers ride out with a retry (see :mod:`xypipe._retry`). A ``NatsNotFound`` for code
    that only knew that one."""

    code = "XY-NATS-009"


#: A JetStream push consumer the pipeline depends on was found missing (server restart, lame
#: duck, node loss, deleted) or stale after a reconnect, and was re-created from the last
#: stream sequence handed downstream + 1.
JS_CONSUMER_RECREATED = "XY-NATS-010"
#: A JetStream operation failed with a transient error (JetStream or the server away) and is
#: retried with backoff; logged once per attempt (attempts are at most ``max_s`` apart).
JS_RETRYING = "XY-NATS-011"
#: The publish stage lost messages while the server was away (nats-py's reconnect buffer was
#: full); it keeps running and counts them.
PUBLISH_DROPPED = "XY-NATS-012"
#: A KV watch was restarted after a reconnect (its ordered consumer lives on the server).
KV_WATCH_RESTARTED = "XY-NATS-013"
class KvRevisionConflict(BridgeError):
    """A conditional KV write found the key at another revision than the one it expected (someone
    changed it meanwhile); the server stored nothing."""

    code = "XY-ADM-012"

    def __init__(self, message: str, *, current: int | None = None) -> None:
        super().__init__(message)
        self.current = current


# Admin and audit codes logged without an exception of their own (defined once, here).
#: A feature-flag change failed because the store could not be reached; it is not applied later.
ADM_STORE_UNAVAILABLE = "XY-ADM-011"
#: A feature-flag change was applied from the store (the watch's audit line: who, old -> new).
ADM_FLAG_APPLIED = "XY-ADM-013"
#: A change answered as failed reached the store late anyway and was reverted.
ADM_LATE_WRITE_REVERTED = "XY-ADM-014"
#: A late change could not be reverted (the store was unreachable again, or the key moved on).
ADM_REVERT_FAILED = "XY-ADM-015"
#: A client address was locked out after repeated authentication failures (one audit summary).
AUTH_LOCKOUT = "XY-AUTH-004"
#: An authentication attempt was refused unchecked because its address is locked out.
AUTH_THROTTLED = "XY-AUTH-005"
# -- the gateway's sequence checks (docs/protocol.md, "Sequence rules"); log codes, not raised --

#: A delta was rejected (far future, stale epoch, future epoch without its snapshot): never
#: believed, counted in ``gateway_deltas_total{verdict}``.
GW_DELTA_REJECTED = "XY-GW-010"
#: A snapshot of an epoch already replaced was ignored (``gateway_snapshots_rejected_total``).
GW_SNAPSHOT_REJECTED = "XY-GW-011"
#: A stream was re-anchored from JetStream's record (``gateway_reanchors_total{reason}``).
GW_REANCHORED = "XY-GW-012"
#: Reading a stream's record (checkpoint or snapshot) from JetStream to re-anchor it failed.
GW_ANCHOR_LOOKUP_FAILED = "XY-GW-013"
# Health and restore points (XY-HLT-001..019): log codes, not exceptions — nothing is raised
# when an input stream goes quiet, the process reports not-ready and keeps serving.

#: A watched input stream went stale (no data for N x its cadence while its source is live).
HEALTH_STREAM_STALE = "XY-HLT-001"
#: A stale input stream delivers data again.
HEALTH_STREAM_RECOVERED = "XY-HLT-002"
#: A watched stream was dropped (its subject fell silent while its siblings kept flowing).
HEALTH_STREAM_FORGOTTEN = "XY-HLT-003"
#: Polling a source stream's position (JetStream stream info) failed; retried next poll.
HEALTH_SOURCE_POLL_FAILED = "XY-HLT-004"
#: A stored group snapshot left out of the restore point (its group is gone or emptied, so it
#: would only drag the replay start back).
RESTORE_SNAPSHOT_IGNORED = "XY-HLT-010"


# The embedded bus's per-role credentials (docs/security.md).
class NatsKeyError(EmbeddedServerError):
    """A kept NATS role key (``<data_dir>/auth/<role>.nk``) cannot be read or is not a user
    seed; it is never replaced silently (every client using it would be locked out)."""

    code = "XY-NATS-020"


#: A kept seed file was readable by group or others; its mode was tightened to 0600.
NATS_KEY_MODE_TIGHTENED = "XY-NATS-021"
#: The embedded server runs without users (``[nats.embedded] auth = "none"``): an open bus.
NATS_OPEN_BUS = "XY-NATS-022"
#: A command line tool found no credentials for the embedded bus it was pointed at.
NATS_NO_CREDENTIALS = "XY-NATS-023"
# -- cold start and group names (docs/architecture.md "Cold start", docs/protocol.md "Groups") --


class SourceStreamMismatch(XyError):
    """The source stream exists with subjects or storage other than this side's definition;
    neither is changed automatically (an operator aligns the configs or deletes the stream)."""

    code = "XY-AGG-010"


#: The source stream exists with other retention limits: the aggregator sets its own, a
#: publisher leaves them as they are (logged either way).
SOURCE_STREAM_RETENTION = "XY-AGG-011"
#: A symbol's first tick arrived before any reference contract named its group: routed by the
#: rules / default group at once (logged once per symbol, counted).
ROUTED_WITHOUT_CONTRACT = "XY-AGG-012"
#: A symbol moved to another group: removed explicitly from the old group's deltas and
#: snapshots (logged, counted in ``symbols_moved_total``).
SYMBOL_MOVED = "XY-AGG-013"
#: Writing a group to the known-groups KV bucket failed; retried with the next delta.
KNOWN_GROUPS_WRITE_FAILED = "XY-AGG-014"
# -- aggregators that split the groups (docs/architecture.md "Aggregators that split the
# groups"): XY-AGG-030..049 --
#: A delta or snapshot of a group this aggregator may not publish (no lease, or the lease is
#: lost or released) was dropped (counted; logged at most once a second per group).
AGG_NOT_OWNER = "XY-AGG-030"
#: The groups this aggregator owns changed: ingest restores the new set and replays.
AGG_OWNED_CHANGED = "XY-AGG-031"
#: A group cannot continue its delta sequence (checkpoints and snapshot disagree, or the
#: replay it needs is gone): it starts a new epoch, clients resync it by snapshot.
AGG_GROUP_NEW_EPOCH = "XY-AGG-032"
#: Storing a released group's last checkpoint (acknowledged publish) failed.
AGG_CHECKPOINT_STORE_FAILED = "XY-AGG-033"
# -- projections (docs/architecture.md "Projections"): XY-AGG-050..069 --
#: The projections restarted under a new epoch at a restore (their sequences are not
#: checkpointed): readers resync them from their snapshots (INFO).
AGG_PROJECTIONS_RESTARTED = "XY-AGG-050"
#: Subscribe/resume to a well-formed group the aggregator does not publish (``UNKNOWN_GROUP``).
GW_UNKNOWN_GROUP = "XY-GW-030"
#: A connection's snapshot look-ups were over its rate limit; the request was refused.
GW_SNAPSHOT_LOOKUPS_LIMITED = "XY-GW-031"
#: The known-groups list is loaded (or reloaded) from its KV bucket.
GW_KNOWN_GROUPS_LOADED = "XY-GW-032"
#: The gateway's watch of the known-groups bucket failed (e.g. started while the server
#: restarted); the list stays as it is and the bucket is read again with backoff.
GW_KNOWN_GROUPS_WATCH_FAILED = "XY-GW-033"
# -- graceful drain (docs/architecture.md "Graceful drain", docs/protocol.md "Drain")
#: A gateway worker began to drain (SIGTERM or an admin request): not ready, no new sockets,
#: its clients told to move (GoAway) spread over ``drain_s``.
GW_DRAIN_STARTED = "XY-GW-040"
#: A drain ended: every client left, or ``drain_s`` ran out (the rest closed with 4100).
GW_DRAIN_FINISHED = "XY-GW-041"
#: A client told to move had not left ``close_in_ms`` after its GoAway: closed with 4100.
GW_DRAIN_CLOSED = "XY-GW-042"
#: An admin drain request was accepted (audited).
GW_DRAIN_REQUESTED = "XY-GW-043"
#: An admin drain request was refused: no token, a bad token, or no admin role (audited).
GW_DRAIN_REFUSED = "XY-GW-044"
#: The worker drained and exits with status 75 (``DRAINED_EXIT``) so its supervisor replaces it.
GW_DRAINED_EXIT = "XY-GW-045"
#: The supervisor replaced a worker that exited drained (not a failure; no budget spent).
GW_DRAINED_REPLACED = "XY-GW-046"
#: The client SDK got a GoAway: it reconnects at once to its configured URL and resumes.
GW_GOAWAY_RECEIVED = "XY-GW-047"
# -- the gateway shell (docs/architecture.md "The gateway's modules"): one name per code its
# -- socket, admin and store modules log, instead of literals at the call sites.
#: Any Origin may connect (``allowed_origins = ["*"]``): dev only.
WS_ANY_ORIGIN = "XY-WS-001"
#: A WebSocket upgrade from an Origin not in ``allowed_origins`` was refused (audited).
WS_ORIGIN_DENIED = "XY-WS-002"
#: SO_SNDBUF could not be set on a browser socket.
WS_SNDBUF_FAILED = "XY-WS-003"
#: A browser sent bytes that are not WebSocket framing; the connection ends.
WS_BAD_FRAMING = "XY-WS-004"
#: Slow consumer: a connection's degradation level went up.
WS_LEVEL_RAISED = "XY-WS-010"
#: An aggregator message or a stored record (snapshot, checkpoint) the gateway cannot use.
GW_BAD_MESSAGE = "XY-GW-001"
#: A snapshot direct get from JetStream failed (retried with backoff).
GW_SNAPSHOT_GET_FAILED = "XY-GW-002"
#: An unusable value in the feature-flag bucket (counted, ignored).
FLAG_UNUSABLE = "XY-FLAG-002"
#: A subscription or resume outside the token's subject patterns was refused (audited).
ACL_DENIED = "XY-ACL-001"
#: A token is malformed, forged, for someone else, or uses a refused algorithm.
AUTH_INVALID = "XY-AUTH-002"
#: A token has expired (or is not valid yet).
AUTH_EXPIRED = "XY-AUTH-003"
#: A token's ``kid`` names no loaded key (or it has none while several are loaded).
AUTH_UNKNOWN_KID = "XY-AUTH-021"
#: The token key set was reloaded (file change or SIGHUP): kids added and removed.
AUTH_KEYS_RELOADED = "XY-AUTH-022"
#: A session ended because the key its token was verified with was removed (audited).
AUTH_KEY_REMOVED = "XY-AUTH-023"
#: An admin request without a bearer token, or with a bad one (audited).
ADM_UNAUTHENTICATED = "XY-ADM-001"
#: An admin request from a principal without the admin role (audited).
ADM_FORBIDDEN = "XY-ADM-002"
#: A feature-flag change (or value) is invalid: which flag, what was expected.
ADM_FLAG_INVALID = "XY-ADM-003"
#: A feature flag was changed through the admin API (who, old -> new).
ADM_FLAG_CHANGED = "XY-ADM-010"
# -- the gateway's fan-out core and browser session (xypipe/_gateway/_hub.py, _session.py) --
#: The browser broke the protocol, its frame or its timing (``RemoteProtocolError``).
PROTO_REMOTE_ERROR = "XY-PROTO-002"
#: The gateway drove a session core against its transition table (``LocalProtocolError``).
PROTO_LOCAL_ERROR = "XY-PROTO-003"


# -- NATS trust chain and TLS (XY-SEC-001..049; docs/security.md, "Operator mode") ----------
class CredsError(XyError):
    """A trust-chain file or value (NKey seed, NATS JWT, ``.creds`` file, certificate) is
    missing, malformed or not of the kind expected; the message names it and what was wanted."""

    code = "XY-SEC-001"


class ChainExistsError(CredsError):
    """``xypipe creds init`` was pointed at a directory that already holds a trust chain: it is
    never overwritten (every process signed in with it would be locked out)."""

    code = "XY-SEC-002"


class JwtError(CredsError):
    """A NATS JWT is malformed, of the wrong kind, or its signature does not verify."""

    code = "XY-SEC-003"


class TlsMaterialError(CredsError):
    """A certificate, private key or CA file for TLS cannot be read or does not fit together."""

    code = "XY-SEC-004"


class UnknownRoleError(CredsError):
    """A role that is not in the trust chain (or not a role at all) was named."""

    code = "XY-SEC-005"


#: A user JWT was issued (``creds init``, ``creds rotate``): role, user key, expiry.
CREDS_USER_ISSUED = "XY-SEC-010"
#: A user key was revoked in its account JWT (``creds revoke``, ``creds rotate --new-key``).
CREDS_USER_REVOKED = "XY-SEC-011"
#: The account JWTs were pushed to a running server's ``full`` resolver (``creds push``).
CREDS_ACCOUNTS_PUSHED = "XY-SEC-012"
#: A running server refused an account JWT pushed to it (the server's reason is logged).
CREDS_PUSH_REFUSED = "XY-SEC-013"
#: A rotated ``.creds`` file was picked up: the connection signs in again with it.
CREDS_ROTATION_PICKED_UP = "XY-SEC-014"
#: The ``.creds`` file changed but holds no valid user JWT; the connection keeps the old one.
CREDS_ROTATION_INVALID = "XY-SEC-015"
#: The user JWT in use expires soon and its ``.creds`` file was not rotated.
CREDS_EXPIRING = "XY-SEC-016"
#: The user JWT in use has expired: the server closes the connection and refuses it again.
CREDS_EXPIRED = "XY-SEC-017"


# -- the stage contract: typed stages, wiring, plugins (XY-CFG-100.., XY-STG-100.., XY-PLG-100..)
# and codes logged by the runner, the HTTP server and the built-in stages.


class WiringError(ConfigError):
    """A pipeline's stages do not fit together — an output its neighbour does not take, a
    source not first, a sink not last — or their process lacks what they require (NATS, an
    HTTP server, one NATS role). Raised by ``xypipe check`` and ``xypipe run`` alike."""

    code = "XY-CFG-100"


#: A config value does not satisfy its field's validator (``xypipe.Invalid``).
CFG_INVALID_VALUE = "XY-CFG-101"
#: A config value has the wrong TOML type (a string for an integer, a table for a list...).
CFG_WRONG_TYPE = "XY-CFG-102"

# -- overrides of the config from the environment and the command line (XY-CFG-200..219)

#: An ``XYPIPE_`` variable (or a ``--set`` key) that names no config key; with a did-you-mean.
CFG_OVERRIDE_UNKNOWN = "XY-CFG-200"
#: A value from the environment or the command line that its key refuses (the line names the
#: variable, the key and what was expected).
CFG_OVERRIDE_VALUE = "XY-CFG-201"
#: A ``--set`` argument that is not ``KEY=VALUE``.
CFG_SET_SYNTAX = "XY-CFG-202"
#: Two variables of the environment name the same key (spelled in different cases).
CFG_OVERRIDE_TWICE = "XY-CFG-203"
#: An override reaches into a file value that is not a table (``restart = "always"``).
CFG_OVERRIDE_NOT_TABLE = "XY-CFG-204"
#: A process started with keys set by the environment or the command line (names, never values).
CFG_OVERRIDES_APPLIED = "XY-CFG-205"


class MissingRequirement(XyError):
    """A stage asked its context for something its process does not have (``require_nats()``
    without ``[nats]``). The loader refuses such configs, so this means a stage used what it
    did not declare in ``requires``, or was built by hand without it."""

    code = "XY-STG-100"

    def __init__(self, pipeline: str, stage: str, requirement: str) -> None:
        self.pipeline = pipeline
        self.stage = stage
        self.requirement = requirement
        super().__init__(
            f"pipeline {pipeline!r}, stage {stage!r}: needs {requirement} but its process has "
            f'none (declare requires = {{"{requirement}"}} on the stage class so the config '
            "loader checks it)")


#: A stage declared a ``Config`` that is not the config type of its ``Stage[...]`` arguments.
PLG_CONFIG_MISMATCH = "XY-PLG-100"
#: A stage's ``requires`` names something a process cannot provide (known: nats, http).
PLG_UNKNOWN_REQUIREMENT = "XY-PLG-101"

#: The pipeline's degradation level went up (logged with its reason and recovery condition).
DEG_LEVEL_RAISED = "XY-DEG-001"
#: An HTTP route handler raised; the client got a 500.
HTTP_HANDLER_FAILED = "XY-HTTP-001"
#: A stage received an item of a kind it does not handle (logged and skipped).
STG_UNEXPECTED_ITEM = "XY-STG-002"
#: A snapshot was requested for a group that is unknown or not yet consistent.
AGG_NO_SNAPSHOT = "XY-AGG-002"
#: A source restarted its sequences at 1 (a new session); dedupe follows it.
SRC_SEQUENCE_RESET = "XY-SRC-002"
#: ui_server: minting a dev token failed (answered 500).
UI_TOKEN_MINT_FAILED = "XY-UI-101"
#: ui_server: no index.html under the configured root.
UI_ROOT_MISSING = "XY-UI-102"
#: ui_server: the configured token_factory cannot be imported.
UI_TOKEN_FACTORY_UNLOADABLE = "XY-UI-103"
#: ui_server: a file listed at start-up cannot be read any more (answered 404).
UI_FILE_UNREADABLE = "XY-UI-104"


# -- logs and the command line (XY-LOG-001..009, XY-CLI-110..129) ----------------------------
#: The log format asked for (``[log] format``, ``$XY_LOG_FORMAT``) is not auto, json or console.
LOG_BAD_FORMAT = "XY-LOG-001"


class UsageError(XyError):
    """A command line argument does not fit (a value out of range, a command run from the
    wrong place); the message names the argument and what was expected. Exit status 2."""

    code = "XY-CLI-110"


class OutputExists(XyError):
    """A command would overwrite a file it never replaces (a private key, a trust chain)."""

    code = "XY-CLI-111"


#: A file or directory a command reads or writes is not there or not allowed (an ``OSError``:
#: its path and the system's reason).
CLI_FILE_ERROR = "XY-CLI-112"
# -- the Python client SDK (xypipe.client, docs/client.md): XY-SDK-001..019 ---------------------


class ClientError(XyError):
    """The client SDK (:mod:`xypipe.client`) failed; the subclasses say how."""

    code = "XY-SDK-001"


class GatewayUnreachable(ClientError):
    """The gateway could not be reached (DNS, TCP, TLS), did not finish the WebSocket handshake,
    or sent no ``Welcome`` in time. ``url`` says where the client went."""

    code = "XY-SDK-002"

    def __init__(self, url: str, message: str) -> None:
        super().__init__(f"{url}: {message}")
        self.url = url


class HandshakeRejected(ClientError):
    """The gateway answered the WebSocket upgrade with an HTTP status instead: 403 (origin not
    allowed), 404 (not the WebSocket path), 503 (at ``max_connections``)."""

    code = "XY-SDK-003"

    def __init__(self, url: str, status: int, body: str) -> None:
        detail = f": {body}" if body else ""
        super().__init__(f"{url}: the gateway refused the WebSocket upgrade with HTTP {status}"
                         f"{detail}")
        self.url = url
        self.status = status


class GatewayClosed(ClientError):
    """The gateway closed the connection (or it was lost) and the client does not reconnect:
    the close code says why (``docs/protocol.md``, "Close codes"; ``None`` when the connection
    was lost without a close frame), ``error`` is the fatal ``Error`` frame's text if one came
    first."""

    code = "XY-SDK-005"

    def __init__(self, message: str, *, close_code: int | None, reason: str = "",
                 error: str = "") -> None:
        super().__init__(message)
        self.close_code = close_code
        self.reason = reason
        self.error = error


class GatewayAuthError(GatewayClosed, AuthError):
    """The gateway refused the token: close 4001 (no valid hello), 4002 (invalid: signature,
    algorithm, issuer, audience, malformed) or 4003 (expired). Also an :class:`AuthError`."""

    code = "XY-SDK-004"


class ReconnectGaveUp(ClientError):
    """The connection was lost and ``max_attempts`` reconnections in a row failed; ``last`` is
    the last attempt's error."""

    code = "XY-SDK-006"

    def __init__(self, attempts: int, last: ClientError) -> None:
        super().__init__(f"gave up after {attempts} failed reconnection attempts; last: "
                         f"[{last.code}] {last}")
        self.attempts = attempts
        self.last = last


class ClientClosed(ClientError):
    """The client was used after its connection ended (outside ``async with``, or after an
    error ended it)."""

    code = "XY-SDK-007"


class TokenUnavailable(ClientError):
    """The token callable given to the client raised (or returned no token); ``cause`` is what
    it raised."""

    code = "XY-SDK-008"


#: The gateway sent a frame that is not a binary ``ServerFrame`` (skipped and counted).
SDK_BAD_FRAME = "XY-SDK-010"
#: An applied entry's checksum did not match its state; the group resynchronises.
SDK_CHECKSUM_MISMATCH = "XY-SDK-011"
#: A delta the sequence rules did not let through (gap, far future, stale or future epoch).
SDK_DELTA_NOT_APPLIED = "XY-SDK-012"
#: A group's snapshot was requested (gap, new epoch, checksum mismatch, overdue).
SDK_SNAPSHOT_REQUESTED = "XY-SDK-013"
#: The connection was lost; the client reconnects after a backoff and resumes.
SDK_RECONNECTING = "XY-SDK-014"
#: A non-fatal ``Error`` frame from the gateway (ACL, unknown group, rate limit...).
SDK_GATEWAY_ERROR = "XY-SDK-015"
#: Nothing came from the gateway for ``dead_after_beats`` heartbeats: the connection is dead.
SDK_HEARTBEAT_LOST = "XY-SDK-016"
#: Fetching a fresh token for a refresh failed; the current one stays until it expires.
SDK_TOKEN_REFRESH_FAILED = "XY-SDK-017"
# -- xypipe tail --ws and the other market-data commands (xypipe/_cli_md.py): XY-CLI-100..109 --
#: ``xypipe tail``: a message did not decode as its contract (skipped, counted; exit status 1).
CLI_TAIL_UNDECODABLE = "XY-CLI-100"
#: ``xypipe tail --ws``: a check failed (gap, repeat, rejected delta, checksum mismatch).
CLI_TAIL_VERIFY_FAILED = "XY-CLI-101"
# -- demo lifecycle and the embedded data directory (XY-EMB-010..019, XY-DEMO-001..019):
# `xypipe demo up/down/publisher/observe/smoke` (xypipe/_demo/) and the data-directory lock
# (xypipe/_datadir_lock.py).


class DataDirLocked(EmbeddedServerError):
    """Another ``xypipe run`` holds the embedded NATS data directory (its lock file is locked):
    two servers must never share one JetStream store."""

    code = "XY-EMB-010"


class DataDirUnusable(EmbeddedServerError):
    """The embedded NATS data directory or its lock file cannot be created or locked."""

    code = "XY-EMB-011"


# -- the embedded NATS cluster (XY-EMB-020..029): [nats.embedded] cluster (xypipe/_embedded.py,
# xypipe/_nats_cluster.py).


class ClusterNotFormed(EmbeddedServerError):
    """The embedded cluster's servers started but did not agree on a JetStream meta leader
    within the start-up time (routes blocked, a route port taken by something else)."""

    code = "XY-EMB-020"


#: Streams and buckets keep fewer copies than the embedded cluster has nodes (``[nats]
#: replicas`` set lower): losing a node can lose what it alone kept.
EMB_FEW_REPLICAS = "XY-EMB-021"
#: The process's NATS connection moved to another server of the cluster (its server was lost).
EMB_SERVER_CHANGED = "XY-EMB-022"


class DemoError(XyError):
    """A ``xypipe demo`` command cannot do what was asked; the code says why (constants below)."""

    code = "XY-DEMO-001"


#: `demo up`: the demo is already up (its recorded supervisor is alive).
DEMO_ALREADY_UP = DemoError.code
#: `demo down/publisher/observe/smoke`: the demo is not up (no state, or its process is gone).
DEMO_NOT_UP = "XY-DEMO-002"
#: `demo up`: the demo exited while starting (the last lines of its log say why).
DEMO_EXITED_AT_START = "XY-DEMO-003"
#: `demo up`: not every /healthz was ready within the start timeout; the demo was stopped.
DEMO_START_TIMEOUT = "XY-DEMO-004"
#: `demo up`: the config cannot be run in the background (a port picked at start, no HTTP).
DEMO_CONFIG_UNSUITABLE = "XY-DEMO-005"
#: `demo down`: processes were still there after the grace period and were killed.
DEMO_KILLED_AFTER_GRACE = "XY-DEMO-006"
#: `demo down`: a process the demo started survived even SIGKILL (named in the message).
DEMO_PROCESS_LEFT = "XY-DEMO-007"
#: `demo publisher start` / `demo observe`: already running.
DEMO_HELPER_RUNNING = "XY-DEMO-008"
#: `demo observe`: the prometheus binary or the scrape config template is missing.
DEMO_OBSERVE_UNAVAILABLE = "XY-DEMO-009"
#: `demo observe` / `demo publisher start`: the helper process failed to start or exited.
DEMO_HELPER_FAILED = "XY-DEMO-010"
#: `demo smoke`: at least one check failed (each failure is its own line).
DEMO_SMOKE_FAILED = "XY-DEMO-011"
#: `demo down --wipe`: a directory was not removed (not ours, or something still runs).
DEMO_WIPE_REFUSED = "XY-DEMO-012"
#: A state file under the demo's state directory is unreadable; it is treated as absent.
DEMO_STATE_UNREADABLE = "XY-DEMO-013"
#: `demo up`: a port the demo needs is already taken (another demo, a foreground `make demo`).
DEMO_PORT_TAKEN = "XY-DEMO-014"
# -- NATS credentials per process, refusals made visible, the prod profile (XY-SEC-020..049;
# -- docs/security.md) ----------------------------------------------------------------------
class NatsRefused(NatsConnectionError):
    """The NATS server refused this process at connect — its credentials (``reason`` auth,
    expired or revoked: ``XY-SEC-020``) or its TLS (``reason`` tls: ``XY-SEC-021``). Audited and
    counted in ``nats_refusals_total``; retrying with the same credentials cannot help, so the
    first connect fails at once instead of retrying until its deadline."""

    code = "XY-SEC-020"

    def __init__(self, message: str, *, reason: str, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.reason = reason


#: The server refused this process's TLS (certificate not trusted, none presented, another CA).
NATS_TLS_REFUSED = "XY-SEC-021"
#: The server refused or closed a live connection: its JWT expired, its user was revoked, or a
#: reconnect was not admitted (audited; the process keeps trying while its policy allows).
NATS_LIVE_REFUSED = "XY-SEC-022"
#: The embedded (demo) NATS bus runs without TLS: said once at start.
NATS_DEMO_WITHOUT_TLS = "XY-SEC-023"
#: A feature-flag watch failed (a gateway's, which may not create the bucket and so watches
#: from after its start): the flags in force stay, the watch is started again with backoff.
FLAG_WATCH_RESTARTED = "XY-SEC-024"


class SecurityProfileError(ConfigError):
    """A config under ``[security] profile = "prod"`` relaxes what production requires; each
    line names the key and carries its own code (``XY-SEC-030``..``XY-SEC-036``)."""

    code = "XY-SEC-029"


#: prod: NATS is reached without TLS (a ``nats://`` URL without ``[nats.tls]``, or embedded).
PROD_PLAINTEXT_NATS = "XY-SEC-030"
#: prod: a process presents no client certificate to NATS (mutual TLS is required).
PROD_NO_CLIENT_CERT = "XY-SEC-031"
#: prod: a process signs in to NATS without a ``.creds`` file (a user JWT of its role).
PROD_NO_CREDS = "XY-SEC-032"
#: prod: a gateway lets any Origin in (``allowed_origins = ["*"]``).
PROD_ANY_ORIGIN = "XY-SEC-033"
#: prod: no key to verify browser tokens with (none, or the committed development key).
PROD_NO_TOKEN_KEY = "XY-SEC-034"
#: prod: a ``ui_server`` mints development tokens.
PROD_DEV_TOKENS = "XY-SEC-035"
#: prod: a process signs in as ``superuser`` (everything; operators' tools and tests only).
PROD_SUPERUSER = "XY-SEC-036"


# -- Ownership of groups by aggregators: leases, members, fencing (XY-OWN-001..029;
# -- docs/architecture.md, "Aggregators that split the groups") ------------------------------
class KvKeyExists(KvRevisionConflict):
    """A KV create found the key holding a value (a lease someone holds); nothing was stored.
    ``current`` is that value's revision."""

    code = "XY-OWN-002"


class OwnershipError(XyError):
    """The ownership engine cannot work: its buckets cannot be opened or created (permissions,
    JetStream away at start), or a member name is not a valid KV key."""

    code = "XY-OWN-011"


#: A held lease was lost: its renewal was refused (someone else's revision, the key gone) or
#: its local deadline passed before a renewal came back. The group stopped publishing at once.
OWN_LOST = "XY-OWN-001"
#: The release hook (store the group's last checkpoint) failed or overran its timeout; the
#: lease is deleted anyway (the next owner restores from what is stored).
OWN_RELEASE_HOOK_FAILED = "XY-OWN-003"
#: Deleting a released lease failed; it expires by the bucket's age limit instead.
OWN_RELEASE_DELETE_FAILED = "XY-OWN-004"
#: A renewal failed in transport (NATS away, timeout); retried until the local deadline.
OWN_RENEW_FAILED = "XY-OWN-005"
#: Acquiring a lease failed for another reason than someone holding it; retried.
OWN_ACQUIRE_FAILED = "XY-OWN-006"
#: This member's announcement in the members bucket failed; retried every renew period.
OWN_ANNOUNCE_FAILED = "XY-OWN-007"
#: A lease in this member's name that it does not hold (a previous incarnation, a renewal
#: that came back after the deadline) is deleted so the member can take the group again.
OWN_STALE_LEASE_CLEARED = "XY-OWN-008"
#: A value in the leases or members bucket is not what xypipe writes: ignored, counted.
OWN_BAD_VALUE = "XY-OWN-009"
#: A reader (the gateway's hub, the Python client) dropped a delta or snapshot whose fence is
#: below the highest seen for its group: from an owner that has since been replaced.
OWN_FENCED = "XY-OWN-010"


# -- replay benchmark and SLO gates (xypipe bench replay, bench/README.md): XY-BENCH-001..019 --


class SloSpecError(UsageError):
    """An ``--slo`` spec that cannot be read: the message names the term and what a term looks
    like (``METRIC<BUDGET`` with a known metric and a unit of its kind)."""

    code = "XY-BENCH-001"


class BenchSetupError(XyError):
    """``xypipe bench replay`` cannot run: the benchmark harness (``bench/replay.py``), the
    tape or Chromium is not there, or an objective needs a measurement the run will not make
    (browser tabs without ``--tabs``)."""

    code = "XY-BENCH-002"


#: One or more service level objectives were broken by the measured run (each named on stderr
#: with its measured value and budget); the command exits 1.
BENCH_SLO_BROKEN = "XY-BENCH-003"


class CurvesSpecError(UsageError):
    """``xypipe bench curves`` cannot run as asked: a list of levels (``--rates``,
    ``--clients``, ``--workers``) that is not positive integers in rising order, or an
    ``--slo`` objective a curve's point does not measure (recovery, rebuild, the tabs')."""

    code = "XY-BENCH-010"

# -- tapes (xypipe._tape, docs/tapes.md): XY-TAPE-001..019 ------------------------------------


class TapeError(XyError):
    """A file is not a tape: empty, or its first message is not a ``TapeHeader`` whose
    ``format`` is ``"xypipe-tape"``. Every tape error names the file, the byte offset (and
    the record index when it is about a record) and what was expected."""

    code = "XY-TAPE-001"


class TapeVersionError(TapeError):
    """The tape's header has a ``version`` this xypipe does not know (a newer layout)."""

    code = "XY-TAPE-002"


class TapeTruncated(TapeError):
    """The tape ends inside a record (its length prefix or its bytes): the file was cut short,
    e.g. a recording killed in mid-write or a partial copy."""

    code = "XY-TAPE-003"


class TapeCorrupt(TapeError):
    """A record's bytes do not decode as a ``TapeRecord`` (damaged in the middle)."""

    code = "XY-TAPE-004"


class TapeCountMismatch(TapeError):
    """The header says how many records follow and the file holds another number (cut at a
    record boundary, or records appended after it was closed)."""

    code = "XY-TAPE-005"


class TapeOrderError(TapeError):
    """A writer was given a record earlier than the one before it (or before the tape's start):
    a tape is in time order."""

    code = "XY-TAPE-006"


#: A tape whose header does not say how many records it holds (a recording that was not closed):
#: read to its end, every record checked, with this warning.
TAPE_NOT_CLOSED = "XY-TAPE-007"
#: ``xypipe record`` stopped without having received any message on its subjects.
TAPE_RECORDED_NOTHING = "XY-TAPE-008"
#: ``xypipe tape deltas`` skipped records of the tape as ingest would (malformed, out of bounds,
#: on a subject the aggregator does not read); counted by reason in its summary.
TAPE_RECORDS_SKIPPED = "XY-TAPE-009"


# Tracing (xypipe/_tracing.py, the optional otel extra).
#: A message's ``traceparent`` header is malformed: ignored (the message goes on untraced) and
#: counted in ``trace_bad_parents_total{stage}``.
TRACE_BAD_PARENT = "XY-TRACE-001"
