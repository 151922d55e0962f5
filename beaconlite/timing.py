"""Every timing constant beaconlite decides on its own (the config's durations aside).

Module attributes, read at the moment of use, so a test can shorten them.
"""

from __future__ import annotations

KILL_AFTER = 5.0  # SIGTERM to a command's process group, then SIGKILL this much later (SPEC 5)
PIPE_LINGER = 0.5  # after a command exits, how long a grandchild may hold its output pipe
DESCRIBE_TIMEOUT = 1.0  # describing a job's exception or summary (its __str__ may block)
TICK = 1.0  # the daemon's tick (shorter when heartbeats or the watchdog ask for it)
TICK_PHASE = 0.5  # seconds past the whole second: away from the slots' bursts of fires
GAP = 2.0  # a tick this much later than due, or elapsed time this far ahead: sleep / freeze
TICK_WRITE_WAIT = 0.3  # all of one tick's writes together wait at most this on the database
FIRE_WRITE_WAIT = 0.5  # the writes of one scheduler wake-up, likewise
FIRES_PER_TRANSACTION = 500  # a burst's rows commit in batches: few commits, short holds of the lock
RUN_WRITE_WAIT = 2.0  # one write of a run's thread (a step, its end)
ENDS_PER_TRANSACTION = 500  # run ends written together (record_pending)
STOP_WRITE_WAIT = 30.0  # at a stop, recording every run's end waits at most this in all
DATABASE_CHECK = 1.0  # how often the daemon checks its database file is still the one it opened
PRUNE_EVERY = 86400.0
CLUSTER_EARLY_WAIT = 60.0  # a fire early by the database's clock waits at most this for its slot
HOUSEKEEPING_LEASE = 5.0  # a cluster's housekeeper renews its lease each tick; a dead one's passes in this
FIRST_PRUNE = 60.0
REQUEST_TAKE_WAIT = 5.0  # the CLI waits this long for the daemon to take a request (it ticks every 1 s)
CANCEL_WAIT = 15.0  # `cancel` waits this long for the run's final status
CLI_POLL = 0.05  # how often the CLI looks at the database while it waits
NOTIFY_ATTEMPTS = 3
NOTIFY_BACKOFF = 1.0  # seconds before a notification's 2nd attempt; doubles
NOTIFY_HTTP_TIMEOUT = (5.0, 10.0)  # connect, read
NOTIFY_COMMAND_TIMEOUT = 30.0
# A live run past its deadline is a health problem once the runner should have recorded
# it: abort_grace, plus SIGTERM-to-SIGKILL for a command, plus a tick.
RECORDING_SLACK = KILL_AFTER + 2.0
IMPORT_TIMEOUT = 10.0  # importing job code (start, check-config, reload) takes at most this (SPEC 5)
