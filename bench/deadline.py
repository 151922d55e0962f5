"""How late does a run end, past its deadline? (recorded end minus deadline)

    python bench/deadline.py [--trials 20] [--timeout 0.5]

Cases: a server that accepts and never answers, one that trickles a body byte every 300 ms,
a sleeping command, and a Python run that never reaches a checkpoint (ended by abort_grace).
For comparison, the same hanging and trickling servers through plain `requests` with only a
per-socket read timeout.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import requests  # noqa: E402
from peers import start_peer, stop_peer  # noqa: E402

from beaconlite import clock, loader, store  # noqa: E402
from beaconlite.config import load_config  # noqa: E402
from beaconlite.runner import Runner  # noqa: E402

ABORT_GRACE = 0.5


def config(tmp: Path, url: str, timeout: float) -> Path:
    path = tmp / "bench.toml"
    path.write_text(f"""
[daemon]
database = "b.db"
abort_grace = "{ABORT_GRACE}s"
[http]
read_timeout = "300s"
[[jobs]]
name = "hanging"
timeout = "{timeout}s"
run = "jobs:fetch"
params = {{url = "{url}/hang"}}
[[jobs]]
name = "trickling"
timeout = "{timeout}s"
run = "jobs:fetch"
params = {{url = "{url}/trickle"}}
[[jobs]]
name = "sleeping-command"
timeout = "{timeout}s"
command = ["sleep", "60"]
[[jobs]]
name = "non-cooperative"
timeout = "{timeout}s"
run = "jobs:sleep_uncooperatively"
""")
    return path


def lateness(runner: Runner, job: str, trials: int) -> list[float]:
    late = []
    for _ in range(trials):
        live = runner.start(runner.config.job(job), "manual", time.time())
        live.ended.wait(30)
        run = store.get_run(live.run_id)[0]
        assert run.status == "timeout", (job, run.status, run.error)
        late.append((run.finished_at - run.deadline_at) * 1000)
    return late


def plain_requests(url: str, read_timeout: float, cap: float) -> str:
    t0 = time.monotonic()
    try:
        with requests.get(url, timeout=(5, read_timeout), stream=True) as resp:
            for _ in resp.iter_content(1):
                if time.monotonic() - t0 > cap:
                    return f"> {cap:.0f} s (still receiving; stopped by the benchmark)"
    except requests.RequestException:
        pass
    return f"{time.monotonic() - t0:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=0.5)
    args = parser.parse_args()
    logging.getLogger("beaconlite").addHandler(logging.NullHandler())  # figures only
    logging.getLogger("beaconlite").propagate = False
    peer = start_peer()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(config(Path(tmp), peer.url, args.timeout))
        store.open_writer(cfg.daemon.database)
        instance = store.register_instance("daemon", os.getpid(), "bench", "b", 60, clock.wall())
        runner = Runner(cfg, loader.load(cfg), instance)
        print(
            f"deadline {args.timeout}s, abort_grace {ABORT_GRACE}s, read_timeout 300s, "
            f"{args.trials} runs each"
        )
        print(f"{'case':22} {'median ms late':>15} {'worst ms late':>14}")
        for job in ("hanging", "trickling", "sleeping-command", "non-cooperative"):
            late = lateness(runner, job, args.trials)
            print(f"{job:22} {statistics.median(late):15.1f} {max(late):14.1f}")
        store.close()
    print("plain requests, per-socket read timeout 3 s, no deadline:")
    print(f"  hanging server:   ends after {plain_requests(peer.url + '/hang', 3, 15)}")
    print(f"  trickling server: ends after {plain_requests(peer.url + '/trickle', 3, 15)}")
    stop_peer(peer)


if __name__ == "__main__":
    main()
