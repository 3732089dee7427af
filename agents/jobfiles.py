"""Per-job files that let a restarted agent adopt the jobs its predecessor started: a record
(spec, pid, start) per attempt, and the exit status the job's wrapper shell writes at its end."""

import json
import logging
import os

import psutil

log = logging.getLogger("hq.jobfiles")

# The job's own shell writes its exit status where the next agent finds it, from an EXIT trap
# set before the command is evaluated (the way Slurm's slurmstepd outlives slurmd, without a
# process of its own). `$0` names the status file; the command is `$1`, shifted away so it sees
# no positional parameters. A job killed by a signal writes nothing: its agent saw the signal.
TRAP = 'trap \'echo $? > "$0"\' EXIT; c=$1; shift; eval "$c"'


def default_directory(host_name):
    home = os.path.expanduser(os.environ.get("HQ_HOME") or "~/.hq")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in host_name)
    return os.path.join(home, "run", f"jobs-{safe}")


def create_time(pid):
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


class JobFiles:
    def __init__(self, directory):
        self.directory = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)

    def _path(self, job_id, attempt, suffix):
        return os.path.join(self.directory, f"{job_id}.{attempt}.{suffix}")

    def status_path(self, job_id, attempt):
        return self._path(job_id, attempt, "exit")

    def wrap(self, shell, command, job_id, attempt):
        """argv that runs `command` in `shell` (a POSIX shell) and leaves its exit status."""
        return [shell, "-c", TRAP, self.status_path(job_id, attempt), command]

    def record(self, spec, pid, started):
        path = self._path(spec["id"], spec["attempt"], "json")
        body = {"spec": spec, "pid": pid, "started": started, "ctime": create_time(pid)}
        try:
            with open(path + ".tmp", "w") as handle:
                json.dump(body, handle)
            os.replace(path + ".tmp", path)
        except OSError as exc:   # the job runs anyway; only adoption after a crash is lost
            log.warning("job %s: cannot record it for adoption: %s", spec["id"], exc)

    def forget(self, job_id, attempt):
        for suffix in ("json", "exit"):
            try:
                os.unlink(self._path(job_id, attempt, suffix))
            except FileNotFoundError:
                pass

    def exit_status(self, job_id, attempt):
        """The exit status the wrapper wrote, or None."""
        try:
            with open(self.status_path(job_id, attempt)) as handle:
                return int(handle.read().strip())
        except (OSError, ValueError):
            return None

    def records(self):
        """Every recorded attempt: dicts with spec, pid, started, ctime."""
        found = []
        for name in sorted(os.listdir(self.directory)):
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(self.directory, name)) as handle:
                    found.append(json.load(handle))
            except (OSError, ValueError) as exc:
                log.warning("unreadable job record %s: %s", name, exc)
        return found


def alive(record):
    """Whether the recorded process still runs (and is the same process, not a reused pid)."""
    ctime = create_time(record["pid"])
    if ctime is None:
        return False
    try:
        if psutil.Process(record["pid"]).status() == psutil.STATUS_ZOMBIE:
            return False
    except psutil.Error:
        return False
    return record.get("ctime") is None or abs(ctime - record["ctime"]) < 0.01
