"""Job code: importing the `run` targets, at start, in `check-config`, and on reload.

One loader for all three, run on a thread of its own and bounded (``timing.IMPORT_TIMEOUT``):
an import that hangs or raises anything (``SystemExit`` included) is a refusal, and a
timed-out import's result is never used, even if it finishes later.

*Local* modules are those under the config's directory or `python_path`. On reload, those
whose source changed, and the local modules that use them, are imported afresh: new module
objects, so live runs keep the code they started with and new runs get the new code.
Modules from site-packages are never re-imported. Local modules are compiled from their
source, never from a ``.pyc``: CPython checks a cached ``.pyc`` by the source's whole-second
mtime and size, which an edit within the same second, of the same length, would pass.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from beaconlite import timing
from beaconlite.config import Config
from beaconlite.errors import ConfigError


def import_paths(config: Config) -> list[str]:
    """Where `run` targets are imported from: the config's directory first."""
    paths = [str(config.path.parent.absolute())] if config.path else []
    return paths + list(config.daemon.python_path)


@dataclass
class Code:
    """The job code one config runs: its targets, and the local modules they came from."""

    targets: dict[str, Callable] = field(default_factory=dict)  # "module:function" -> callable
    sources: dict[str, str] = field(default_factory=dict)  # local module -> digest of its source
    reimported: list[str] = field(default_factory=list)  # local modules this load imported afresh


class _FromSource(importlib.machinery.SourceFileLoader):
    def get_code(self, fullname):
        return self.source_to_code(self.get_data(self.path), self.path)


class _LocalFinder(importlib.abc.MetaPathFinder):
    """Finds local modules first and compiles them from source."""

    def __init__(self):
        self.roots: list[str] = []

    def find_spec(self, name, path=None, target=None):
        search = [p for p in (path or self.roots) if _under(p, self.roots)]
        if not search:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, search)
        if spec is not None and isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            spec.loader = _FromSource(spec.loader.name, spec.loader.path)
        return spec


_finder = _LocalFinder()
_lock = threading.Lock()  # one load at a time: they share sys.modules


def _under(path: str | None, roots: list[str]) -> bool:
    if not path:
        return False
    resolved = str(Path(path).absolute())
    return any(resolved == r or resolved.startswith(r.rstrip("/") + "/") for r in roots)


def _local_modules(roots: list[str]) -> dict[str, ModuleType]:
    return {
        name: module
        for name, module in list(sys.modules.items())
        if isinstance(module, ModuleType) and _under(getattr(module, "__file__", None), roots)
    }


def _digest(module: ModuleType) -> str | None:
    try:
        return hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest()
    except OSError:
        return None  # deleted: it changed


def _users(local: dict[str, ModuleType]) -> dict[str, set[str]]:
    """For each local module, the local modules that use it (hold it or something from it)."""
    users: dict[str, set[str]] = {name: set() for name in local}
    for name, module in local.items():
        for value in list(vars(module).values()):
            used = value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", None)
            if isinstance(used, str) and used in users and used != name:
                users[used].add(name)
    return users


def resolve(target: str) -> Callable:
    """The callable for "module.path:function" (imported by module path, no eval)."""
    module_name, _, attr = target.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except (Exception, SystemExit) as e:
        raise ValueError(f"cannot import {module_name!r}: {type(e).__name__}: {e}") from None
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ValueError(f"{module_name!r} has no {attr!r}")
    if not callable(obj):
        raise ValueError(f"{target!r} is not callable")
    return obj


def load(config: Config, previous: Code | None = None, only: str | None = None) -> Code:
    """Import every `run` target of ``config`` (or of job ``only``; unbounded: see
    ``load_bounded``).

    With ``previous``, local modules whose source changed since, and the local modules that
    use them, are imported afresh first.
    """
    roots = [str(Path(p).absolute()) for p in import_paths(config)]
    with _lock:
        for root in reversed(roots):
            if root not in sys.path:
                sys.path.insert(0, root)
        _finder.roots = roots
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
        code = Code()
        if previous is not None:
            local = _local_modules(roots)
            changed = {name for name, m in local.items() if previous.sources.get(name) != _digest(m)}
            users, stale = _users(local), set()
            while changed - stale:
                name = (changed - stale).pop()
                stale.add(name)
                changed |= users.get(name, set())
            for name in stale:
                sys.modules.pop(name, None)
            code.reimported = sorted(stale)
        importlib.invalidate_caches()
        for job in config.jobs:
            if job.kind == "python" and only in (None, job.name):
                try:
                    code.targets[job.run] = resolve(job.run)
                except ValueError as e:
                    raise ConfigError(f'{config.path}: job "{job.name}": key "run": {e}') from None
        code.sources = {name: d for name, m in _local_modules(roots).items() if (d := _digest(m)) is not None}
        return code


def load_bounded(config: Config, previous: Code | None = None, only: str | None = None) -> Code:
    """``load`` on a thread of its own, for at most ``timing.IMPORT_TIMEOUT``; ConfigError
    (one line) for an import that raised anything or took too long."""
    box: dict = {}

    def work():
        try:
            box["code"] = load(config, previous, only)
        except BaseException as e:  # job code at import time: anything at all is a refusal
            box["error"] = e

    thread = threading.Thread(target=work, name="import", daemon=True)
    thread.start()
    thread.join(timing.IMPORT_TIMEOUT)
    if thread.is_alive():
        raise ConfigError(
            f"{config.path}: importing the job code took longer than {timing.IMPORT_TIMEOUT:g}s "
            "(a module that blocks at import?)"
        )
    error = box.get("error")
    if isinstance(error, ConfigError):
        raise error
    if error is not None:
        raise ConfigError(f"{config.path}: importing the job code failed: {type(error).__name__}: {error}")
    return box["code"]
