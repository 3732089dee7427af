"""Bounded queues on hq-server's socket: a client that sends requests and never reads the replies
cannot make the server hold them all; it loses replies, and everybody else is served."""

import time

import psutil
import pytest

from hq import protocol as p
from tests.helpers import Cluster, user_socket, wait_until

REQUESTS = 500          # listings of 2,000 jobs of 500 bytes: about 1 MB each


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(f"sqlite:///{tmp_path}/hq.sqlite", users="hog USER\n")
    with c.running():
        yield c


@pytest.mark.slow
def test_a_client_that_never_reads_cannot_grow_the_server(cluster):
    """Catches unbounded queues (SNDHWM 0): hq-server kept every unread reply, here about
    500 MB for 500 listings; with 50 messages a connection it keeps about 50 MB and drops
    the rest, and another user's request is answered meanwhile."""
    hog = user_socket(cluster, "hog", RCVHWM=1)    # it reads nothing: the server's queue fills
    hog.send_multipart(p.encode(p.SUBMIT, {"req": "s", "jobs": ["x" * 500] * 2000,
                                           "hold": True, "cwd": "/tmp", "env": {}}))
    assert hog.poll(30000) and p.decode(hog.recv_multipart())[0] == p.OK
    server = psutil.Process(cluster.server.pid)
    before = server.memory_info().rss
    for n in range(REQUESTS):
        hog.send_multipart(p.encode(p.LIST, {"req": n, "limit": 2000}))
    started = time.monotonic()

    def grown():
        return (server.memory_info().rss - before) >> 20
    wait_until(lambda: cluster.server_log().count("cannot send OK") >= REQUESTS // 2
               or grown() >= 250, 120, message="the server to drop replies the hog does not read")
    grown = grown()
    result = cluster.run("hq-client", "list", timeout=30)
    assert result.returncode == 0, result.stderr
    assert grown < 250, f"hq-server grew {grown} MB holding unread replies"
    print(f"{REQUESTS} unread listings: server grew {grown} MB; "
          f"{time.monotonic() - started:.1f} s")
    hog.close()
