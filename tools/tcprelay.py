"""A TCP relay for tests: `tcprelay.py LISTEN_ADDR TARGET_HOST:PORT` accepts on LISTEN_ADDR (a
free port; it prints `port N`) and joins each connection to the target, two threads each.

tests/test_standby.py uses it so that hq-servers in network namespaces (tools/netcluster.py)
reach a MySQL that listens on loopback only; MySQL sees the relay's loopback address.
"""

import socket
import sys
import threading


def pump(source, target):
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(listen, target):
    server = socket.create_server((listen, 0))
    print(f"port {server.getsockname()[1]}", flush=True)
    while True:
        client, _ = server.accept()
        try:
            upstream = socket.create_connection(target, timeout=5)
        except OSError:
            client.close()
            continue
        upstream.settimeout(None)
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=pump, args=(source, sink), daemon=True).start()


def main(argv):
    if len(argv) != 3 or ":" not in argv[2]:
        print("usage: tcprelay.py LISTEN_ADDR TARGET_HOST:PORT", file=sys.stderr)
        return 2
    host, port = argv[2].rsplit(":", 1)
    try:
        serve(argv[1], (host, int(port)))
    except (OSError, ValueError) as exc:
        print(f"tcprelay: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
