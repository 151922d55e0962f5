"""A reload (SIGHUP or `beaconlite reload`): the config and the job code are read on a thread
of their own, never on the tick, and at most ``timing.IMPORT_TIMEOUT`` long; the tick then
applies the result whole, or keeps the running config whole and says why."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from beaconlite import loader, timing
from beaconlite.config import Config, load_config
from beaconlite.loader import Code


@dataclass
class Change:
    """What a reload changed, for the log line and `beaconlite reload`."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)  # local modules imported afresh

    def summary(self) -> str:
        parts = [
            f"{len(names)} {what}"
            for names, what in ((self.added, "added"), (self.changed, "changed"), (self.removed, "removed"))
            if names
        ]
        if self.modules:
            parts.append(f"{len(self.modules)} module{'s' if len(self.modules) > 1 else ''} re-imported")
        detail = [f"{what}: {', '.join(names)}" for names, what in
                  ((self.added, "added"), (self.changed, "changed"), (self.removed, "removed"),
                   (self.modules, "re-imported")) if names]  # fmt: skip
        return ", ".join(parts) + f" ({'; '.join(detail)})" if parts else "nothing changed"


def compare(old: Config, new: Config, old_code: Code, new_code: Code) -> Change:
    """Jobs added, removed, and changed: in the config, or in their code (a new function)."""

    def changed(job) -> bool:
        before = old.job(job.name)
        new_function = job.kind == "python" and new_code.targets.get(job.run) is not old_code.targets.get(
            job.run
        )
        return before is not None and (before != job or new_function)

    return Change(
        added=[j.name for j in new.jobs if old.job(j.name) is None],
        removed=[j.name for j in old.jobs if new.job(j.name) is None],
        changed=[j.name for j in new.jobs if changed(j)],
        modules=list(new_code.reimported),
    )


class Reloading:
    """One reload under way. ``outcome()``: None while it runs, else (config, code) or the
    reason it is refused. A reload past its bound is refused, and its result, if it ever
    comes, is thrown away."""

    def __init__(self, path: Path, previous: Code, requests: list[int]):
        self.requests = requests  # `beaconlite reload` requests waiting for the answer
        self.started = time.monotonic()
        self._result: tuple[Config, Code] | str | None = None
        self._thread = threading.Thread(target=self._work, args=(path, previous), name="reload", daemon=True)
        self._thread.start()

    def _work(self, path: Path, previous: Code) -> None:
        try:
            config = load_config(path)
            self._result = (config, loader.load(config, previous))
        except BaseException as e:  # the config, or job code at import time: anything at all
            self._result = str(e) if isinstance(e, Exception) and str(e) else f"{type(e).__name__}: {e}"

    def outcome(self) -> tuple[Config, Code] | str | None:
        if self._result is not None:
            return self._result
        if time.monotonic() - self.started > timing.IMPORT_TIMEOUT:
            return (
                f"reading the config and importing the job code took longer than {timing.IMPORT_TIMEOUT:g}s "
                "(a module that blocks at import?)"
            )
        return None
