"""Finding stages: the ``xypipe.stages`` entry-point group or a ``module:Class`` reference.

Built-in stages register through the same entry-point group as third-party ones, so the plugin
path is exercised by every run. Plugins load lazily and are checked when loaded.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from importlib.metadata import EntryPoint, entry_points

import attrs

from xypipe._errors import PLG_CONFIG_MISMATCH, PLG_UNKNOWN_REQUIREMENT, PluginError
from xypipe._hints import Unchecked, describe
from xypipe._stage import REQUIREMENTS, StageBase

GROUP = "xypipe.stages"
_cache: dict[str, type[StageBase]] = {}


def stage_entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def _origin(ep: EntryPoint | None, use: str) -> str:
    if ep is None:
        return f"reference {use!r}"
    dist = ep.dist.name if ep.dist is not None else "an unknown distribution"
    return f"entry point {ep.name!r} = {ep.value!r} of distribution {dist!r}"


def check_stage_class(obj: object, where: str) -> type[StageBase]:
    """Validate that ``obj`` satisfies the stage protocol; raise PluginError naming ``where``.

    A stage is a subclass of ``xypipe.Stage`` (so its types and requirements are declared the
    way the wiring check reads them) with a frozen attrs ``Config`` — the config type of its
    ``Stage[...]`` arguments — an ``async def run(self)``, and ``requires`` naming only what a
    process can provide.
    """
    if not inspect.isclass(obj):
        raise PluginError(f"{where} is not a class (got {type(obj).__name__})")
    cfg = getattr(obj, "Config", None)
    if cfg is None or not attrs.has(cfg):
        raise PluginError(f"{where}: {obj.__name__}.Config must be an attrs class")
    if getattr(cfg.__setattr__, "__name__", "") != "_frozen_setattrs":
        raise PluginError(f"{where}: {obj.__name__}.Config must be frozen (@attrs.frozen)")
    run = getattr(obj, "run", None)
    if run is None or not inspect.iscoroutinefunction(run):
        raise PluginError(f"{where}: {obj.__name__}.run must be an `async def run(self)`")
    if not issubclass(obj, StageBase):
        raise PluginError(f"{where}: {obj.__name__} must subclass xypipe.Stage "
                          "(Stage[Takes, Gives, Config]: what it takes, gives and its config)")
    declared = obj.types.config
    if isinstance(declared, type) and declared not in (cfg, Unchecked):
        raise PluginError(f"{where}: {obj.__name__}.Config is {cfg.__name__}, but its "
                          f"Stage[...] arguments declare the config {describe(declared)}",
                          code=PLG_CONFIG_MISMATCH)
    unknown = sorted(set(obj.requires) - set(REQUIREMENTS))
    if unknown:
        raise PluginError(f"{where}: {obj.__name__}.requires names {', '.join(unknown)}; "
                          f"expected some of {', '.join(REQUIREMENTS)}",
                          code=PLG_UNKNOWN_REQUIREMENT)
    return obj


def resolve_stage(use: str) -> type[StageBase]:
    """Return the stage class for ``use`` (an entry-point name or ``module:Class``)."""
    if use in _cache:
        return _cache[use]
    ep: EntryPoint | None = None
    if ":" in use:
        module_name, _, attr = use.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise PluginError(f"cannot import module {module_name!r}: {exc}") from None
        try:
            obj: object = module
            for part in attr.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            raise PluginError(f"module {module_name!r} has no attribute {attr!r}") from None
    else:
        eps = stage_entry_points()
        ep = eps.get(use)
        if ep is None:
            close = difflib.get_close_matches(use, list(eps), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            known = ", ".join(sorted(eps)) or "none installed"
            raise PluginError(
                f'unknown stage {use!r}{hint} (installed: {known}; or use "module:Class")'
            )
        try:
            obj = ep.load()
        except Exception as exc:
            raise PluginError(
                f"{_origin(ep, use)} failed to load: {type(exc).__name__}: {exc}"
            ) from exc
    cls = check_stage_class(obj, _origin(ep, use))
    _cache[use] = cls
    return cls
