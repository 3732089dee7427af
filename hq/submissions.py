"""The SUBMIT request in hq-server: validation of a chunk of jobs and its place in a batch.

A submission is one batch; a streamed submission sends chunks, the later ones naming the batch.
"""

import os

from hq import protocol as p
from hq.errors import BAD_REQUEST, NO_HOST_FITS, UNKNOWN_JOB, HQError
from hq.model import JOB_OPTIONS
from hq.scheduler import can_ever_run

MAX_COMMAND = 1 << 20
MAX_ENV = 1 << 20
INT32_LIMIT = 1 << 31                 # INT columns
SHORT_TEXT, LONG_TEXT = 255, 65535    # VARCHAR(255) columns; path and text columns
SHORT_OPTIONS = {"name", "host_req", "group_req", "exclude_hosts", "shell"}
PER_JOB = frozenset({"command", "entry"})     # fields a job of a chunk has beside the defaults


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
            limit = p.INT_LIMIT if name == "memory" else INT32_LIMIT
            if not p.is_int(value, 0, limit):
                raise HQError(BAD_REQUEST, f"{where}: {name} must be a whole number from 0 "
                              f"to {limit - 1}")
        elif not isinstance(value, str) or "\0" in value:
            raise HQError(BAD_REQUEST, f"{where}: {name} must be a string without NUL")
        elif len(value) > (SHORT_TEXT if name in SHORT_OPTIONS else LONG_TEXT):
            raise HQError(BAD_REQUEST, f"{where}: {name} is too long")
        spec[name] = value
    if spec["cores"] < 1:
        raise HQError(BAD_REQUEST, f"{where}: cores must be at least 1")
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
        spec["own_options"] = True
    spec["command"] = check_text(raw.get("command"), "command", where, index, True)
    spec["entry"] = check_text(raw.get("entry"), "entry", where, index, False)
    if len(spec["entry"]) > LONG_TEXT:
        raise HQError(BAD_REQUEST, f"{where}: entry is longer than {LONG_TEXT} characters", index)
    return spec


def check_fits(spec, hosts, where, index=None):
    if not can_ever_run(_Probe(spec), hosts):
        raise HQError(NO_HOST_FITS, f"{where}: no host can ever run it ({spec['cores']} cores"
                      + (f", host {spec['host_req']}" if spec["host_req"] else "")
                      + (f", group {spec['group_req']}" if spec["group_req"] else "") + ")", index)


class _Probe:
    """A job-like view of a spec for `can_ever_run`."""
    def __init__(self, spec):
        self.__dict__.update(spec)


def validate_chunk(server, body):
    """Clean specs of a SUBMIT body: `jobs` (strings or objects) over shared `defaults`."""
    specs = p.field(body, "jobs", list)
    if not specs:
        raise HQError(BAD_REQUEST, "no jobs in submission")
    defaults = validate_options(p.field(body, "defaults", dict, {}), "defaults", server.settings)
    clean = [validate_spec(raw, i, server.settings, defaults) for i, raw in enumerate(specs)]
    hosts = list(server.state.hosts.values())
    if hosts and all(h.slots for h in hosts):
        if any(not s.get("own_options") for s in clean):
            check_fits(defaults, hosts, "every job")
        for i, spec in enumerate(clean):
            if spec.pop("own_options", False):
                check_fits(spec, hosts, f"job {i + 1}", i)
    return clean


def submit(server, user, body):
    """Validate and stage a chunk; the reply (ids, batch) is sent once it is committed."""
    batch = p.field(body, "batch", int, None)
    env = p.field(body, "env", dict, {})
    if any(not isinstance(k, str) or not isinstance(v, str) for k, v in env.items()):
        raise HQError(BAD_REQUEST, "env must map strings to strings")
    if sum(len(k) + len(v) for k, v in env.items()) > MAX_ENV:
        raise HQError(BAD_REQUEST, f"env is larger than {MAX_ENV} characters")
    cwd = p.field(body, "cwd", str, "/", check=_good_directory)
    hold = p.field(body, "hold", bool, False)
    if batch is not None:
        check_batch(server, user, batch)
    try:
        clean = validate_chunk(server, body)
    except HQError:
        if batch is not None:
            server.broken_batches.add(batch)
        raise
    return server.stage_submission(user, clean, env, cwd, hold, batch)


def check_batch(server, user, batch):
    """A later chunk may only extend a batch of the same user that no error has stopped."""
    if batch in server.broken_batches:
        raise HQError(BAD_REQUEST, f"batch {batch} was stopped by an error in an earlier chunk")
    if server.store.batch_owner(batch) != user:
        raise HQError(UNKNOWN_JOB, f"no batch {batch} of user {user}")
