"""A port for a server under test, as tests/support/mqd_process.h chooses it: free a moment ago and
outside the kernel's ephemeral range, from which any test's outgoing connection could take it
before the server binds it. Random first candidate, so tests running in parallel rarely meet."""

import random
import socket

_handed_out = set()


def _server_port_range():
    low, high = 32768, 60999
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(word) for word in f.read().split())
    except OSError:
        pass  # not Linux: the defaults
    if low - 1 >= 10000:
        return max(1024, low - 20000), low - 1
    return min(high + 1, 65535), 65535


def _bindable(port):
    # Without SO_REUSEADDR: a port with connections in TIME_WAIT is refused by servers that do not
    # set it, so it is not handed out.
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


def free_port():
    low, high = _server_port_range()
    count = high - low + 1
    first = random.randrange(count)
    for i in range(count):
        port = low + (first + i) % count
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"free_port: no free port between {low} and {high}")
