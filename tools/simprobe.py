"""The `hq-admin status` round trips of tools/simcluster.py, timed in a process of its own, so
that the simulator's own work (encoding users' big submissions) never delays an answer it times.

Usage: simprobe.py ADDRESS INTERVAL TIMEOUT. The server's and the admin's keys (z85: server
public, admin public, admin secret) come as three lines on stdin; the probe runs until stdin
closes, then prints one JSON object: {"rtts": [seconds...], "lost": N, "worst": [[at, rtt]...]}
(`at`: seconds since the probe started; a request unanswered after TIMEOUT counts as lost).
"""

import json
import os
import select
import sys
import time

import zmq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hq import protocol as p, security  # noqa: E402


def main(argv):
    address, interval, timeout = argv[0], float(argv[1]), float(argv[2])
    keys = [sys.stdin.readline().strip().encode() for _ in range(3)]
    sock = zmq.Context().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    security.make_client_socket(sock, *keys)
    sock.connect(address)
    rtts, timed, lost, start, req = [], [], 0, time.monotonic(), 0
    while not select.select([sys.stdin], [], [], 0)[0]:
        req += 1
        sent = time.monotonic()
        sock.send_multipart(p.encode(p.ADMIN, {"req": req, "command": "status", "arg": ""}))
        while True:
            left = sent + timeout - time.monotonic()
            if left <= 0 or not sock.poll(left * 1000):
                lost += 1
                break
            _, body = p.decode(sock.recv_multipart())
            if body.get("req") == req:
                rtts.append(time.monotonic() - sent)
                timed.append((round(sent - start, 2), round(rtts[-1], 4)))
                break
        time.sleep(max(0.0, sent + interval - time.monotonic()))
    worst = sorted(timed, key=lambda item: -item[1])[:5]
    print(json.dumps({"rtts": rtts, "lost": lost, "worst": worst}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
