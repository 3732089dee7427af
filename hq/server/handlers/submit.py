"""The SUBMIT request in hq-server: validation of a chunk of jobs and its place in a batch.

A submission is one batch; a streamed submission sends chunks, the later ones naming the batch.
"""

import os
from dataclasses import dataclass, field

from hq import protocol as p
from hq.server.handlers import reservations
from hq.errors import BAD_REQUEST, NO_HOST_FITS, UNKNOWN_HOST, UNKNOWN_JOB, HQError
from hq.model import JOB_OPTIONS, script_args
from hq.server.scheduler import can_ever_run
from hq.store.writes import Writes

MAX_COMMAND = 1 << 20
MAX_ENV = 1 << 20
INT32_LIMIT = 1 << 31                 # INT columns
SHORT_TEXT, LONG_TEXT = 255, 65535    # VARCHAR(255) columns; path and text columns
SHORT_OPTIONS = {"name", "host_req", "group_req", "exclude_hosts", "shell", "reservation"}
PER_JOB = frozenset({"command", "entry", "array_index"})  # a job's fields beside the defaults
DEFERRED = object()         # a handler's answer when the reply follows the commit


@dataclass
class Submission:
    """A chunk staged in this turn: its rows go in `writes`; the reply waits for the commit."""
    identity: bytes
    req: object
    batch: int
    env: dict
    jobs: list
    ended: dict                 # states of its --after jobs that are no longer live
    writes: object = field(default=None)


def validate_options(raw, where, settings):
    """The job options of `raw` (JOB_OPTIONS and cwd) checked; a dict with every option set."""
    spec = {}
    for name, default in JOB_OPTIONS.items():
        value = raw.get(name, default)
        if name == "retries" and raw.get(name) is None:
            value = settings.default_retries
        if value is None:
            value = default
        if isinstance(default, int):
            low = -(INT32_LIMIT - 1) if name == "priority" else 0
            limit = p.INT_LIMIT if name == "memory" else INT32_LIMIT
            if not p.is_int(value, low, limit):
                raise HQError(BAD_REQUEST, f"{where}: {name} must be a whole number from {low} "
                              f"to {limit - 1}")
        elif not isinstance(value, str) or "\0" in value:
            raise HQError(BAD_REQUEST, f"{where}: {name} must be a string without NUL")
        elif name != "script" and len(value) > (SHORT_TEXT if name in SHORT_OPTIONS
                                                else LONG_TEXT):
            raise HQError(BAD_REQUEST, f"{where}: {name} is too long")
        spec[name] = value
    if len(spec["script"]) * 4 > p.MAX_SCRIPT and len(spec["script"].encode()) > p.MAX_SCRIPT:
        raise HQError(BAD_REQUEST, f"{where}: script is larger than {p.MAX_SCRIPT} bytes")
    if spec["cores"] < 1:
        raise HQError(BAD_REQUEST, f"{where}: cores must be at least 1")
    deps = [d.strip() for d in spec["depends_on"].split(",") if d.strip()]
    if not all(d.isdigit() and 0 < int(d) < 1 << 62 for d in deps):
        raise HQError(BAD_REQUEST, f"{where}: depends_on must be job ids separated by commas")
    spec["depends_on"] = ",".join(str(int(d)) for d in deps)
    cwd = raw.get("cwd")
    if cwd is not None and not _good_directory(cwd):
        raise HQError(BAD_REQUEST, f"{where}: cwd must be an absolute path")
    spec["cwd"] = cwd
    return spec


def _good_directory(path):
    return (isinstance(path, str) and os.path.isabs(path) and len(path) <= LONG_TEXT
            and "\0" not in path)


def check_text(value, what, where, index, required):
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise HQError(BAD_REQUEST, f"{where}: {what} must be a non-empty string", index)
    if len(value) > MAX_COMMAND:
        raise HQError(BAD_REQUEST, f"{where}: {what} is longer than {MAX_COMMAND} bytes", index)
    if "\0" in value:
        raise HQError(BAD_REQUEST, f"{where}: {what} contains a NUL character", index)
    return value


def validate_spec(raw, index, settings, defaults=None):
    """One job of a chunk: a command string, or an object with command, entry and options."""
    where = f"job {index + 1}"
    if isinstance(raw, str):
        raw = {"command": raw}
    if not isinstance(raw, dict):
        raise HQError(BAD_REQUEST, f"{where}: must be a command string or an object", index)
    if defaults is not None and raw.keys() <= PER_JOB:
        spec = dict(defaults)
    else:
        try:
            spec = validate_options(raw, where, settings)
        except HQError as exc:
            raise HQError(exc.code, exc.message, index) from None
    spec["command"] = check_text(raw.get("command"), "command", where, index, True)
    spec["entry"] = check_text(raw.get("entry"), "entry", where, index, False)
    if len(spec["entry"]) > LONG_TEXT:
        raise HQError(BAD_REQUEST, f"{where}: entry is longer than {LONG_TEXT} characters", index)
    spec["array_index"] = raw.get("array_index")
    if spec["array_index"] is not None and not p.is_int(spec["array_index"], 0, INT32_LIMIT):
        raise HQError(BAD_REQUEST, f"{where}: array_index must be a whole number from 0 to "
                      f"{INT32_LIMIT - 1}", index)
    if spec["script"]:
        _check_script_command(spec["command"], where, index)
    return spec


def _check_script_command(command, where, index):
    """A job with a script runs it with the words of `command` after the first (its name)."""
    try:
        script_args(command)
    except ValueError as exc:
        raise HQError(BAD_REQUEST, f"{where}: the command of a job with a script must be its "
                      f"name and arguments as shell words ({exc})", index) from None


def check_fits(core, user, specs):
    """Refuse a job that no host can ever run (too many cores, unknown host or group); each
    shape of job is checked once."""
    hosts = [h for h in core.hosts.values() if h.in_config]
    shapes = set()
    for i, spec in enumerate(specs):
        key = tuple(spec[k] for k in ("cores", "memory", "host_req", "group_req",
                                       "exclude_hosts", "reservation"))
        if key in shapes:
            continue
        shapes.add(key)
        try:
            _check_shape(core, user, spec, hosts, f"job {i + 1}")
        except HQError as exc:
            raise HQError(exc.code, exc.message, i) from None


def _check_shape(core, user, spec, hosts, where):
    if spec["reservation"]:
        reserved = reservations.check_code(core, user, spec["reservation"])
        if spec["cores"] > max(reserved.values()):
            raise HQError(NO_HOST_FITS, f"{where}: reservation {spec['reservation']} has at "
                          f"most {max(reserved.values())} slots on one host")
    known = core.hosts.get(spec["host_req"])
    if spec["host_req"] and (known is None or not known.in_config):
        raise HQError(UNKNOWN_HOST, f"{where}: no host {spec['host_req']!r} in the cluster "
                      "(see 'hq-admin lscluster')")
    if spec["group_req"] and not any(spec["group_req"] in h.groups for h in hosts):
        raise HQError(NO_HOST_FITS, f"{where}: no host in group {spec['group_req']!r}")
    known = [h for h in hosts if h.slots]
    if hosts and len(known) == len(hosts) and not can_ever_run(_Probe(spec), known):
        raise HQError(NO_HOST_FITS, f"{where}: no host can ever run it ({spec['cores']} cores"
                      + (f", {spec['memory'] >> 20} MB" if spec["memory"] else "")
                      + (f", host {spec['host_req']}" if spec["host_req"] else "")
                      + (f", group {spec['group_req']}" if spec["group_req"] else "")
                      + "; see 'hq-admin lscluster')")


class _Probe:
    """A job-like view of a spec for `can_ever_run`."""
    def __init__(self, spec):
        self.__dict__.update(spec)


def ended_dependencies(core, user, specs):
    """States of the --after jobs that are no longer live; HQError for unknown ids. Another
    user's job is unknown too (the same answer: nobody learns whether it exists or how it
    ended)."""
    wanted = {int(d) for spec in specs for d in spec["depends_on"].split(",") if d}
    theirs = [d for d in wanted if d in core.jobs and core.jobs[d].user != user]
    gone = sorted(d for d in wanted if d not in core.jobs)
    ended = {r["id"]: r["state"] for r in core.store.get_jobs(gone, user)} if gone else {}
    missing = sorted(theirs + [d for d in gone if d not in ended])
    if missing:
        raise HQError(UNKNOWN_JOB, f"--after: no job {', '.join(map(str, missing))}")
    return ended


def validate_chunk(core, user, body):
    """Clean specs of a SUBMIT body: `jobs` (strings or objects) over shared `defaults`."""
    specs = p.field(body, "jobs", list)
    if not specs:
        raise HQError(BAD_REQUEST, "no jobs in submission")
    defaults = validate_options(p.field(body, "defaults", dict, {}), "defaults", core.settings)
    clean = [validate_spec(raw, i, core.settings, defaults) for i, raw in enumerate(specs)]
    check_fits(core, user, clean)
    return clean


def validate_env(body):
    """The submission's environment: names and values are strings without NUL (the agent
    could not pass them to a process), in all at most MAX_ENV characters."""
    env = p.field(body, "env", dict, {})
    for name, value in env.items():
        if not isinstance(value, str) or not name or "\0" in name or "=" in name \
                or "\0" in value:
            raise HQError(BAD_REQUEST, f"env: {name[:64]!r} must be a name without NUL or '=' "
                          "and a string value without NUL")
    if sum(len(k) + len(v) for k, v in env.items()) > MAX_ENV:
        raise HQError(BAD_REQUEST, f"env is larger than {MAX_ENV} characters")
    return env


def submit(core, peer, body):
    """Validate and stage a chunk; the reply (ids, batch) is sent once it is committed."""
    batch = p.field(body, "batch", int, None)
    env = validate_env(body)
    cwd = p.field(body, "cwd", str, "/", check=_good_directory)
    hold = p.field(body, "hold", bool, False)
    umask = p.field(body, "umask", int, None, check=lambda v: 0 <= v <= 0o777)
    if batch is not None:
        check_batch(core, peer.user, batch)
    try:
        clean = validate_chunk(core, peer.user, body)
        ended = ended_dependencies(core, peer.user, clean)
    except HQError:
        if batch is not None:
            core.broken_batches.add(batch)
        raise
    writes = Writes()
    batch, jobs = core.stage_batch(writes, peer.user, clean, env, cwd, core.now, hold, batch,
                                   umask)
    core.staged.append(Submission(peer.identity, body.get("req"), batch, env, jobs, ended,
                                  writes))
    return DEFERRED


def check_batch(core, user, batch):
    """A later chunk may only extend a batch of the same user that no error has stopped."""
    if batch in core.broken_batches:
        raise HQError(BAD_REQUEST, f"batch {batch} was stopped by an error in an earlier chunk")
    if core.store.batch_owner(batch) != user:
        raise HQError(UNKNOWN_JOB, f"no batch {batch} of user {user}")
