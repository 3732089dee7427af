"""Hosts as network namespaces on a bridge, for tools/netcluster.py: one namespace, veth pair and
address per host; a host's link cut and restored; every process of a namespace killed. Root only."""

import ipaddress
import json
import os
import signal
import subprocess
import time


class NetError(Exception):
    """An ip(8) command failed; the message says which and why."""


def ip(*args, check=True):
    """Run `ip ARGS`; its stdout. A failure raises NetError unless check is False."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise NetError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result.stdout


def free_subnet():
    """A 10.213.x.0/24 nothing here uses (the starting x varies with the pid: tests of
    parallel workers pick different ones)."""
    for third in range(100 + os.getpid() % 50, 250):
        network = ipaddress.ip_network(f"10.213.{third}.0/24")
        if subnet_in_use(network) is None:
            return str(network)
    raise RuntimeError("no free 10.213.x.0/24 here")


def subnet_in_use(network):
    """A line naming what already uses `network` (an address or a route), else None."""
    for link in json.loads(ip("-j", "addr") or "[]"):
        for addr in link.get("addr_info", []):
            if addr.get("family") != "inet":
                continue
            here = ipaddress.ip_interface(f"{addr['local']}/{addr['prefixlen']}").network
            if here.overlaps(network):
                return f"{link['ifname']} has {addr['local']}/{addr['prefixlen']}"
    for route in json.loads(ip("-j", "route") or "[]"):
        dst = route.get("dst", "")
        if dst and dst != "default" and ipaddress.ip_network(dst, strict=False).overlaps(network):
            return f"a route to {dst} via {route.get('dev', '?')}"
    return None


def link_exists(name, netns=None):
    where = ["-n", netns] if netns else []
    return subprocess.run(["ip", *where, "link", "show", name], capture_output=True).returncode == 0


def create_bridge(bridge, interface):
    """The bridge every host's veth joins; `interface` (an ip_interface) is its address."""
    ip("link", "add", bridge, "type", "bridge")
    ip("addr", "add", str(interface), "dev", bridge)
    ip("link", "set", bridge, "up")


def create_host(netns, veth, interface, bridge):
    """A namespace whose eth0 (the peer of `veth`, on `bridge`) has `interface`."""
    ip("netns", "add", netns)
    ip("-n", netns, "link", "set", "lo", "up")
    ip("link", "add", veth, "type", "veth", "peer", "name", veth + "n")
    ip("link", "set", veth + "n", "netns", netns)
    ip("-n", netns, "link", "set", veth + "n", "name", "eth0")
    ip("-n", netns, "addr", "add", str(interface), "dev", "eth0")
    ip("-n", netns, "link", "set", "eth0", "up")
    ip("link", "set", veth, "master", bridge)
    ip("link", "set", veth, "up")


def set_link(veth, up):
    """Restore (up) or cut (down) a host's link: nothing passes while it is down."""
    ip("link", "set", veth, "up" if up else "down")


def list_netns(prefix):
    """Names of the namespaces whose name starts with `prefix`."""
    names = [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]
    return [n for n in names if n.startswith(prefix)]


def netns_pids(netns):
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def kill_netns(netns, timeout=10.0):
    """Every process of the namespace stopped, then killed, until none is left (new ones
    forked meanwhile are caught by the next round); False if some survive `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        pids = netns_pids(netns)
        if not pids:
            return True
        if time.monotonic() > deadline:
            return False
        for signum in (signal.SIGSTOP, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass
        time.sleep(0.05)


def remove_netns(netns):
    """Kill what runs in the namespace, then delete it (its veth pair goes with it)."""
    kill_netns(netns)
    ip("netns", "del", netns, check=False)


def delete_link(name):
    if link_exists(name):
        ip("link", "del", name, check=False)
