"""A scheduling pass in hq-server: the pure scheduler places pending jobs, the core records each
attempt, and one RUN per agent carries its assignments (sent after the commit).

A second pass may give short jobs' hosts extra slots, so the next jobs wait at their agents.
"""

import logging
import time

from hq import protocol as p
from hq.model import script_args
from hq.server.core import job_path
from hq.server.scheduler import place

log = logging.getLogger("hq.dispatch")

SCRIPT_CHARS_PER_RUN = 8 << 20     # script text in one RUN before the next RUN starts


def schedule(core):
    """Place what can run now and dispatch it (plus jobs ahead on hosts of short jobs); the
    time it takes and the jobs it places are added up (`hq-admin info`: placement cost)."""
    if not len(core.pending) or not core.cluster_active:
        return
    start = time.process_time()     # CPU time: the machine may be shared
    before = len(core.unsent)
    _schedule(core)
    core.placement_s += time.process_time() - start
    core.placed += len(core.unsent) - before


def _schedule(core):
    core.pending.tidy()
    disabled = {name for name, user in core.users.items() if not user["enabled"]}
    result = _place(core, core.hosts.values(), disabled)
    for job_id, host_name in result.claims.items():
        if core.claims.get(job_id) != host_name:
            log.info("job %s waited %.0fs: host %s reserved for it", job_id,
                     core.now - core.jobs[job_id].submitted, host_name)
            core.writes.event(job_id, core.now, "reserved", 0, host_name,
                              f"host {host_name} reserved for this job")
    core.claims = result.claims
    core.largest_pass = max(core.largest_pass, len(result.assignments))
    limit = core.settings.placement_limit
    if limit and len(result.assignments) >= limit:
        core.changed = True                     # more may fit: another pass next turn
    send_runs(core, result.assignments)
    if len(core.pending):
        send_runs(core, _ahead(core, disabled))


def _place(core, hosts, disabled):
    return place(core.pending, hosts, core.user_slots, core.now, core.claims, disabled,
                 reserve_after_s=core.settings.reserve_after_s,
                 outside_load=core.settings.outside_load,
                 limit=core.settings.placement_limit)


def _ahead(core, disabled):
    """A second pass over hosts whose jobs are short, seen with extra slots (ahead.py); of its
    assignments only jobs of a batch that already runs on the host are kept, so jobs ahead
    are the next of the same stream and no priority or user is passed over."""
    views = core.ahead.views(core.hosts.values())
    if all(view is host for view, host in zip(views, core.hosts.values())):
        return []
    batches, kept = {}, []
    for job, host_name in _place(core, views, disabled).assignments:
        if host_name not in batches:
            batches[host_name] = {core.jobs[key[0]].batch for key in
                                  core.on_host.get(host_name, ()) if key[0] in core.jobs}
        if job.batch in batches[host_name]:
            kept.append((job, host_name))
    return kept


def send_runs(core, assignments):
    """Record each attempt and queue RUNs, one per agent (each batch's environment and each
    script text once in it; another RUN for the same agent once its scripts reach
    SCRIPT_CHARS_PER_RUN, so no message grows past the agent's limit)."""
    runs = {}
    for job, host_name in assignments:
        core.dispatch(job, host_name, core.now)
        host = core.hosts[host_name]
        identity = host.agents[job.user]
        messages = runs.setdefault(identity, [])
        if not messages or messages[-1].script_chars >= SCRIPT_CHARS_PER_RUN:
            messages.append(_Run(host.slots, core.database_id))
        messages[-1].add(core, job)
    for identity, messages in runs.items():
        for run in messages:
            core.outbox.send_frames(identity, p.RUN, run.frames())


class _Run:
    """One RUN message being filled: its jobs, their batches' environments, their scripts."""

    def __init__(self, slots, database_id):
        self.body = {"jobs": [], "slots": slots, "database_id": database_id}
        self.envs = {}
        self.scripts = {}           # script text -> its index in the RUN's `scripts`
        self.script_chars = 0

    def add(self, core, job):
        spec = run_spec(job, core.umasks.get(job.batch), core.settings.slurm_env)
        if job.script:
            spec["script"] = self.scripts.get(job.script)
            if spec["script"] is None:
                spec["script"] = self.scripts[job.script] = len(self.scripts)
                self.script_chars += len(job.script)
        self.body["jobs"].append(spec)
        if job.batch not in self.envs:
            self.envs[job.batch] = core.env_json(job.batch)

    def frames(self):
        if self.scripts:
            self.body["scripts"] = list(self.scripts)
        text = "{" + ",".join(f'"{batch}":{env}' for batch, env in self.envs.items()) + "}"
        return p.encode_with_json(p.RUN, self.body, envs=text)


def run_spec(job, umask=None, slurm_env=False):
    """What an agent needs to run one attempt (see RUN in docs/architecture.md); a job with a
    script also gets its `args` (and `script`, its text's index in the RUN: see _Run)."""
    spec = {"id": job.id, "attempt": job.attempt, "command": job.command, "shell": job.shell,
            "cwd": job.cwd, "stdout": job_path(job, "stdout"),
            "stderr": job_path(job, "stderr"), "logfile": job_path(job, "logfile"),
            "cores": job.cores, "time_limit": job.time_limit, "batch": job.batch,
            "name": job.name, "host": job.host, "entry": job.entry, "umask": umask,
            "slurm_env": slurm_env}
    if job.script:
        spec["args"] = list(script_args(job.command))
    if job.array_index is not None:
        spec["array_index"] = job.array_index
    return spec
