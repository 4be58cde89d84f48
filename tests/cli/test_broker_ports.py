"""free_port: ports for child processes come from below the ephemeral range.

A port the kernel hands out as ephemeral can be taken as the source port of an
outgoing connection before the child binds it (a worker then died with
"Address already in use" in CI); below the range only listeners compete.
"""

import socket

from voicetone.broker import _ephemeral_range, free_port


def test_free_ports_are_below_the_ephemeral_range_and_bindable():
    low, high = _ephemeral_range()
    assert 1024 <= low <= high
    ports = {free_port() for _ in range(20)}
    assert len(ports) > 1  # random, not the same port every time
    for port in ports:
        assert port < low
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", ports.pop()))
        s.listen(1)


def test_a_port_in_use_is_not_handed_out():
    held = []
    try:
        for _ in range(30):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", free_port()))
            s.listen(1)
            held.append(s)
        in_use = {s.getsockname()[1] for s in held}
        assert len(in_use) == len(held)
        assert all(free_port() not in in_use for _ in range(50))
    finally:
        for s in held:
            s.close()
