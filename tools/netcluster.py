"""A real multi-host cluster on one machine (root only): each host a network namespace on a
bridge, with its own address, host name and OpenSSH sshd; hosts can crash and be cut off.

  netcluster.py up [--hosts=N] [--json]   N hosts; the last stdout line with --json:
      {"server_address", "hosts": [{"name", "address"}], "cluster_tab"}
  netcluster.py crash HOST      its link cut, then every process of the host killed at once
  netcluster.py partition HOST  its link cut (nothing killed); heal HOST restores it
  netcluster.py boot HOST       link up and its sshd started again (after a crash)
  netcluster.py status | down   down removes everything up made; harmless when run again
All take --prefix (default hqnet: names of namespaces, links, state) and up takes --subnet
(a free private /24, default 10.213.7.0/24), --slots (cluster.tab max slots, default '-').
"""

import argparse
import ipaddress
import json
import os
import re
import shutil
import sys

if __package__ in (None, ""):     # run as a script: tools/ is not a package on sys.path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools import netns_hosts as net, netns_sshd as sshd  # noqa: E402

STATE_ROOT = "/run/hq-netcluster"
DEFAULT_PREFIX, DEFAULT_SUBNET = "hqnet", "10.213.7.0/24"


class Failed(Exception):
    """The command cannot do what was asked; the message says why."""


def state_dir(prefix):
    return os.path.join(STATE_ROOT, prefix)


def load_state(prefix):
    try:
        with open(os.path.join(state_dir(prefix), "state.json")) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def save_state(state):
    path = os.path.join(state_dir(state["prefix"]), "state.json")
    with open(path + ".tmp", "w") as handle:
        json.dump(state, handle, indent=1)
    os.replace(path + ".tmp", path)


def plan(prefix, subnet, count, slots):
    """What `up` makes: the bridge's address (the server's) and each host's name, address,
    namespace and veth; written down before anything is made, so `down` finds it all."""
    network = ipaddress.ip_network(subnet)
    addresses = list(network.hosts())
    if count < 1 or count > len(addresses) - 1:
        raise Failed(f"--hosts must be between 1 and {len(addresses) - 1} for {subnet}")
    hosts = [{"name": f"node{i}", "address": str(addresses[i]), "netns": f"{prefix}-node{i}",
              "veth": f"{prefix}v{i}"} for i in range(1, count + 1)]
    tab = "".join(f"{h['name']}\t{slots}\tnet\t{h['address']}\tactive\n" for h in hosts)
    return {"prefix": prefix, "subnet": subnet, "bridge": f"{prefix}br",
            "server_address": str(addresses[0]), "prefixlen": network.prefixlen,
            "hosts": hosts, "cluster_tab": tab, "known_hosts": sshd.User().known_hosts}


def up(args):
    prefix = args.prefix
    if load_state(prefix) or net.link_exists(f"{prefix}br") or net.list_netns(prefix + "-"):
        raise Failed(f"cluster {prefix} is up (or half made): run 'netcluster.py down' first")
    state = plan(prefix, args.subnet, args.hosts, args.slots)
    used = net.subnet_in_use(ipaddress.ip_network(args.subnet))
    if used:
        raise Failed(f"{args.subnet} is in use here ({used}): choose another with --subnet")
    os.makedirs(state_dir(prefix), mode=0o700, exist_ok=True)
    save_state(state)
    try:
        build(state)
    except BaseException:
        teardown(prefix)
        raise
    return state


def build(state):
    """The bridge, then each host: namespace, link, address, host key, sshd; known_hosts."""
    user, home = sshd.User(), state_dir(state["prefix"])
    authorized = os.path.join(home, "authorized_keys")
    with open(authorized, "w") as handle:
        handle.write("\n".join(sshd.user_public_keys(user)) + "\n")
    net.create_bridge(state["bridge"], f"{state['server_address']}/{state['prefixlen']}")
    keys = []
    for host in state["hosts"]:
        net.create_host(host["netns"], host["veth"], f"{host['address']}/{state['prefixlen']}",
                        state["bridge"])
        host_dir = os.path.join(home, host["name"])
        keys.append((host["address"], *sshd.write_host_files(host_dir, host["address"],
                                                             authorized)))
        sshd.start_sshd(host["netns"], host["name"], host_dir)
    for host in state["hosts"]:
        if not sshd.wait_listening(host["address"]):
            raise Failed(f"sshd of {host['name']} does not answer on {host['address']}:22 "
                         f"(see {os.path.join(home, host['name'], 'sshd.log')})")
    sshd.add_known_hosts(user, keys, state["prefix"])


def teardown(prefix):
    """Remove whatever `up` made for `prefix`, found by name as well as in the state file:
    also after an `up` that crashed half way. Running it again does nothing."""
    state = load_state(prefix) or {}
    for netns in net.list_netns(prefix + "-"):
        net.remove_netns(netns)
    for link in re.findall(rf"^\d+: ({re.escape(prefix)}(?:v\d+|br))[@:]", net.ip("-o", "link"),
                           re.M):
        net.delete_link(link)
    for path in {state.get("known_hosts"), sshd.User().known_hosts} - {None}:
        sshd.remove_known_hosts(path, prefix)
    shutil.rmtree(state_dir(prefix), ignore_errors=True)


def find_host(prefix, name):
    state = load_state(prefix)
    if state is None:
        raise Failed(f"no cluster {prefix} is up ('netcluster.py up' first)")
    for host in state["hosts"]:
        if host["name"] == name:
            return state, host
    raise Failed(f"no host {name!r} in cluster {prefix} "
                 f"(hosts: {', '.join(h['name'] for h in state['hosts'])})")


def crash(args):
    """The host dies at once: its link is cut first, so not even a TCP reset leaves it."""
    _, host = find_host(args.prefix, args.host)
    net.set_link(host["veth"], False)
    if not net.kill_netns(host["netns"]):
        raise Failed(f"processes of {args.host} survive SIGKILL: {net.netns_pids(host['netns'])}")


def partition(args):
    net.set_link(find_host(args.prefix, args.host)[1]["veth"], False)


def heal(args):
    net.set_link(find_host(args.prefix, args.host)[1]["veth"], True)


def boot(args):
    """A crashed host comes back: link up, its sshd started again (if it does not run)."""
    state, host = find_host(args.prefix, args.host)
    net.set_link(host["veth"], True)
    if not net.netns_pids(host["netns"]):
        sshd.start_sshd(host["netns"], host["name"], os.path.join(state_dir(args.prefix),
                                                                  host["name"]))
    if not sshd.wait_listening(host["address"]):
        raise Failed(f"sshd of {args.host} does not answer on {host['address']}:22")


def status(args):
    state = load_state(args.prefix)
    if state is None:
        raise Failed(f"no cluster {args.prefix} is up")
    for host in state["hosts"]:
        link = "up" if "state UP" in net.ip("link", "show", host["veth"], check=False) else "down"
        host["link"], host["processes"] = link, len(net.netns_pids(host["netns"]))
    return state


def print_state(state, as_json):
    if as_json:
        print(json.dumps({k: state[k] for k in ("server_address", "cluster_tab", "prefix",
                                                "subnet")}
                         | {"hosts": [{k: h[k] for k in ("name", "address", *(
                             ("link", "processes") if "link" in h else ()))}
                                      for h in state["hosts"]]}))
        return
    print(f"cluster {state['prefix']}: hq-server binds to {state['server_address']} "
          f"(bridge {state['bridge']}, {state['subnet']})")
    for h in state["hosts"]:
        extra = f"  link {h['link']}, {h['processes']} processes" if "link" in h else ""
        print(f"  {h['name']:8} {h['address']:15} ssh {h['address']}{extra}")
    print("etc/cluster.tab:\n" + state["cluster_tab"], end="")


def parser():
    top = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--prefix", default=DEFAULT_PREFIX,
                     type=lambda v: v if re.fullmatch(r"[a-z][a-z0-9]{0,7}", v) else
                     _bad("--prefix: 1 to 8 lower-case letters and digits, a letter first"))
    commands = top.add_subparsers(dest="command", required=True)
    make = commands.add_parser("up", help="create the hosts")
    make.add_argument("--hosts", type=int, default=3)
    make.add_argument("--subnet", default=DEFAULT_SUBNET)
    make.add_argument("--slots", default="-")
    make.add_argument("--json", action="store_true")
    commands.add_parser("down", help="remove everything (idempotent)")
    look = commands.add_parser("status", help="the hosts, their links and processes")
    look.add_argument("--json", action="store_true")
    for name in ("crash", "partition", "heal", "boot"):
        commands.add_parser(name, help=f"{name} one host").add_argument("host")
    return top


def _bad(message):
    raise argparse.ArgumentTypeError(message)


def main(argv=None):
    args = parser().parse_args(argv)
    if os.geteuid() != 0:
        print("netcluster: needs root (network namespaces, a bridge, an sshd per host): "
              "run it with sudo", file=sys.stderr)
        return 2
    try:
        if args.command == "up":
            print_state(up(args), args.json)
        elif args.command == "status":
            print_state(status(args), args.json)
        elif args.command == "down":
            teardown(args.prefix)
        else:
            globals()[args.command](args)
    except (Failed, net.NetError, RuntimeError, OSError) as exc:
        print(f"netcluster {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
