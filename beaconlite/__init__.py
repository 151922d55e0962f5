"""beaconlite: a scheduler daemon for integrity runs that never leaves a run hanging."""

from __future__ import annotations

__version__ = "0.1.0"

from beaconlite.errors import RunAborted, RunCancelled, RunTimeout

__all__ = ["RunAborted", "RunCancelled", "RunContext", "RunTimeout", "__version__"]


def __getattr__(name: str):
    # RunContext pulls in requests; keep `import beaconlite` (and so the CLI) light.
    if name == "RunContext":
        from beaconlite.context import RunContext

        return RunContext
    raise AttributeError(name)
