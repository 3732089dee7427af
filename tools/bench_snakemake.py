"""Wall time of a small Snakemake workflow (a fan-out of 20 two-thread jobs and a gather) on a
one-host hq cluster: through snakemake-executor-plugin-hq, and through Snakemake's generic
cluster executor submitting with hq-submit (status from marker files, the generic way).

Usage: .venv/bin/python tools/bench_snakemake.py [--runs N]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.cluster import BIN, REPO, Cluster  # noqa: E402

PLUGIN = os.path.join(REPO, "snakemake-executor-plugin-hq")
WORKFLOW = """
rule all:
    input: "gathered.txt"

rule square:
    output: "parts/{i}.txt"
    threads: 2
    resources: mem_mb=64
    shell: "echo $(( {wildcards.i} * {wildcards.i} )) > {output}"

rule gather:
    input: expand("parts/{i}.txt", i=range(20))
    output: "gathered.txt"
    resources: mem_mb=64
    shell: "cat {input} > {output}"
"""
SUBMIT = os.path.join(BIN, "hq-submit") + " -c {threads} -m {resources.mem_mb}M"
WAYS = {
    "plugin (--executor hq)": ["--executor", "hq"],
    "cluster-generic, checks every 10 s (default)": [
        "--executor", "cluster-generic", "--cluster-generic-submit-cmd", SUBMIT],
    "cluster-generic, checks every 1 s": [
        "--executor", "cluster-generic", "--cluster-generic-submit-cmd", SUBMIT,
        "--seconds-between-status-checks", "1"],
}


def run(cluster, args):
    workdir = tempfile.mkdtemp(prefix="hqsmk")
    with open(os.path.join(workdir, "Snakefile"), "w") as handle:
        handle.write(WORKFLOW)
    env = dict(cluster.env, PYTHONPATH=os.pathsep.join([REPO, PLUGIN]))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "snakemake", "--jobs", "20", *args],
                          cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    ok = done.returncode == 0 and os.path.exists(os.path.join(workdir, "gathered.txt"))
    if not ok:
        print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
    shutil.rmtree(workdir, ignore_errors=True)
    return wall if ok else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="hqsmkdb")
    cluster = Cluster(f"sqlite:///{tmp}/hq.sqlite", hosts=(("localhost", "16", "local",
                                                            "127.0.0.1"),))
    results = {}
    try:
        cluster.setup_database()
        cluster.start_server()
        subprocess.run([os.path.join(BIN, "hq-submit"), "--wait", "true"], env=cluster.env,
                       check=True, stdout=subprocess.DEVNULL)
        try:
            import snakemake_executor_plugin_cluster_generic  # noqa: F401
        except ImportError:
            print("tools/bench_snakemake.py: the generic cluster executor is not installed: pip "
                  "install snakemake-executor-plugin-cluster-generic==1.0.9", file=sys.stderr)
            return
        for _ in range(args.runs):
            for name, way in WAYS.items():
                results.setdefault(name, []).append(run(cluster, way))
    finally:
        cluster.close()
    print(f"{args.runs} runs each; load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for name, walls in results.items():
        good = [w for w in walls if w is not None]
        shown = f"{statistics.median(good):6.1f} s" if good else "failed"
        print(f"{name:<46} {shown}  ({', '.join(f'{w:.1f}' if w else '-' for w in walls)})")


if __name__ == "__main__":
    main()
