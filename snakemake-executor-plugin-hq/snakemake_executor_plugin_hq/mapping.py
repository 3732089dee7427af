"""What a Snakemake job asks of hq: threads -> slots (`--slots`), mem_mb -> memory (`--mem`),
runtime (minutes) -> time limit (`-t`, seconds); and where its output goes."""

import os


def job_options(job):
    """Keyword options of hq.Client.submit for a Snakemake job."""
    options = {"cores": max(1, int(job.threads or 1)), "name": f"smk-{job.name}"}
    resources = job.resources
    mem_mb = resources.get("mem_mb")
    if isinstance(mem_mb, (int, float)) and mem_mb > 0:
        options["memory"] = int(mem_mb) << 20
    runtime = resources.get("runtime")
    if isinstance(runtime, (int, float)) and runtime > 0:
        options["time_limit"] = int(runtime * 60)
    return options


def log_paths(workdir, job):
    """stdout and stderr files of a job (%j: hq's job id), under .snakemake/hq_logs/RULE/."""
    where = os.path.join(workdir, ".snakemake", "hq_logs", f"rule_{job.name}")
    os.makedirs(where, exist_ok=True)
    return os.path.join(where, "%j.out"), os.path.join(where, "%j.err")
