"""A TCP port for a server under test, chosen as tests/support/mqd_process.h's free_port() chooses
it (keep the three in step): outside the kernel's ephemeral range, from which any test's outgoing
connection could take it before the server binds it (where the range leaves fewer than 2,000 ports
outside it, the kernel picks them, and a warning says so); reserved against every other test process
by holding the same UDP port (which therefore cannot serve UDP) for the rest of this one; bindable
now. Random first candidate, so that tests running in parallel rarely try the same ones."""

import random
import socket
import sys

_tried = set()
_reservations = []  # the UDP sockets held: closed when the process ends, or by free_port() if the TCP check fails


def _server_port_range():
    """None when both gaps beside the ephemeral range are under 2,000 ports (e.g. 1024-65535)."""
    wanted, enough = 20000, 2000
    low, high = 32768, 60999
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(word) for word in f.read().split())
    except OSError:
        pass  # not Linux: the defaults
    below, above = low - 1024, 65535 - high
    if max(below, above) < enough:
        return None
    if below >= above:
        return max(1024, low - wanted), low - 1
    return high + 1, min(65535, high + wanted)


def _reserve_among_test_processes(port):
    """Holds UDP `port` (the server's TCP bind is not hindered) until this process ends, unless
    free_port() gives it up (its TCP check failed)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # not inherited by children (PEP 446)
    try:
        s.bind(("0.0.0.0", port))
    except OSError:
        s.close()
        return None
    _reservations.append(s)
    return s


def _bind_and_close(port):
    """The port bound (0: one the kernel picks), or 0. Without SO_REUSEADDR: a port with connections
    in TIME_WAIT is refused by servers that do not set it, so it is not handed out."""
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
            return s.getsockname()[1]
        except OSError:
            return 0


def free_port():
    port_range = _server_port_range()
    if port_range is None:
        if not _tried:
            print("free_port: net.ipv4.ip_local_port_range leaves fewer than 2,000 ports above 1023 outside "
                  "it: test servers take ports the kernel picks, which outgoing connections may take first",
                  file=sys.stderr)
        for _ in range(1000):
            port = _bind_and_close(0)
            if port == 0:
                raise RuntimeError("free_port: cannot bind a TCP port")
            if port not in _tried:
                _tried.add(port)
                if _reserve_among_test_processes(port):
                    return port
        raise RuntimeError("free_port: the kernel keeps picking ports held already")
    low, high = port_range
    count = high - low + 1
    first = random.randrange(count)
    for i in range(count):
        port = low + (first + i) % count
        if port in _tried:
            continue
        _tried.add(port)
        reservation = _reserve_among_test_processes(port)
        if reservation is None:
            continue
        if _bind_and_close(port) == port:
            return port
        _reservations.remove(reservation)
        reservation.close()
    raise RuntimeError(f"free_port: no free port between {low} and {high}")
