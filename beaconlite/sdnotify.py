"""sd_notify without a dependency: one datagram to $NOTIFY_SOCKET (a no-op elsewhere).

Linux-only in practice (systemd); on macOS NOTIFY_SOCKET is never set, so nothing is sent.
"""

from __future__ import annotations

import os
import socket


def notify(*lines: str) -> bool:
    """Send "READY=1", "WATCHDOG=1", "STATUS=..." etc.; False when there is no socket."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or not hasattr(socket, "AF_UNIX"):
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # the abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # Never block the tick: a reader that is gone or slow loses this datagram, and
            # the next tick sends another.
            sock.setblocking(False)
            sock.sendto("\n".join(lines).encode(), address)
        return True
    except OSError:
        return False


def watchdog_interval() -> float | None:
    """Half of WATCHDOG_USEC in seconds, when systemd asked this process for pings."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid.isdigit() and int(pid) != os.getpid()):
        return None
    return int(usec) / 2e6
