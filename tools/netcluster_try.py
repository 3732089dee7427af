"""`make cluster`: a 3-host cluster in a box to try hq across hosts: netcluster hosts, an etc/ and
HQ_HOME for them in .cluster/, hq-server on the bridge in the foreground; Ctrl-C removes it all."""

import os
import shutil
import signal
import subprocess
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools import netcluster  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = 10101


def write_installation(state, root):
    """etc/ (this repository's, with the hosts' cluster.tab and the server on the bridge),
    HQ_HOME and an rc file to source: the environment of the try."""
    shutil.rmtree(root, ignore_errors=True)
    etc, home = os.path.join(root, "etc"), os.path.join(root, "home")
    shutil.copytree(os.path.join(REPO, "etc"), etc)
    os.makedirs(home, mode=0o700)
    with open(os.path.join(etc, "cluster.tab"), "w") as handle:
        handle.write(state["cluster_tab"])
    cfg = os.path.join(etc, "hq.cfg")      # every host sees the whole machine's load: the
    with open(cfg) as handle:               # other hosts' jobs are not outside load
        text = handle.read().replace("outside_load = yes", "outside_load = no")
    with open(cfg, "w") as handle:
        handle.write(text)
    address = state["server_address"]
    env = {"HQ_CONF": etc, "HQ_HOME": home, "HQ_SERVER": f"tcp://{address}:{PORT}"}
    with open(os.path.join(root, "hqrc"), "w") as handle:
        handle.write("# source this file: hq commands for the cluster in a box\n")
        handle.writelines(f"export {k}={v}\n" for k, v in env.items())
        handle.write(f'case ":$PATH:" in *":{REPO}/bin:"*) ;; *) export PATH="{REPO}/bin:$PATH";;'
                     " esac\n")
    return dict(os.environ, **env), address


def stop_user_side(home):
    """The user-server (this machine) lives outside the hosts: stop it by its pidfile."""
    try:
        with open(os.path.join(home, "run", "user-server.pid")) as handle:
            os.kill(int(handle.read().strip()), signal.SIGTERM)
    except (OSError, ValueError):
        pass


def main():
    if os.geteuid() != 0:
        print("make cluster: needs root (network namespaces and an sshd per host): "
              "run 'sudo make cluster'", file=sys.stderr)
        return 2
    root = os.path.join(REPO, ".cluster")
    for signum in (signal.SIGTERM, signal.SIGHUP):     # removed on these too, as on Ctrl-C
        signal.signal(signum, signal.default_int_handler)
    args = netcluster.parser().parse_args(["up", "--hosts=3"])
    try:
        state = netcluster.up(args)
    except (netcluster.Failed, OSError, RuntimeError) as exc:
        print(f"make cluster: {exc}", file=sys.stderr)
        return 1
    try:
        env, address = write_installation(state, root)
        bin_dir = os.path.join(REPO, "bin")
        subprocess.run([f"{bin_dir}/hq-dbadmin", "--create-tables", "--add-standard-entries"],
                       env=env, check=True)
        netcluster.print_state(state, False)
        print(f"\nhq-server on {address}:{PORT} (Ctrl-C stops it and removes the hosts). "
              f"In another shell:\n  source {root}/hqrc\n"
              "  hq-submit --host node2 --wait hostname; hq-admin lscluster\n"
              "  seq 6 | sed 's/^/sleep 5; hostname #/' | hq-submit -; hq-client list\n"
              f"  sudo {sys.executable} {REPO}/tools/netcluster.py crash node2   "
              "# or partition / heal / boot\n", flush=True)
        server = subprocess.Popen([f"{bin_dir}/hq-server", f"--bind={address}"], env=env)
        try:
            server.wait()
        except KeyboardInterrupt:
            server.send_signal(signal.SIGINT)
            server.wait()
    finally:
        stop_user_side(os.path.join(root, "home"))
        netcluster.teardown(state["prefix"])
        print("cluster in a box removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
