"""What lets a restarted agent adopt the jobs its predecessor started: a journal of started and
ended attempts, and a file of exit statuses that the jobs' own shells append to as they end."""

import json
import logging
import os

import psutil

log = logging.getLogger("hq.jobfiles")

# The job's shell appends "JOB.ATTEMPT STATUS" to the exits file from an EXIT trap set before the
# command is evaluated (the way Slurm's slurmstepd outlives slurmd, without a process of its own).
# `$0` is the exits file, `$1` the attempt's key, `$2` the command; both are shifted away so the
# command sees no positional parameters. A job killed by a signal appends nothing: its agent saw
# the signal. Appending to one file avoids creating a file per job, which costs far more.
TRAP = 'trap \'echo "$k $?" >> "$0"\' EXIT; k=$1; c=$2; shift 2; eval "$c"'
COMPACT_AFTER = 20000      # ended attempts in the journal before it is rewritten
# A recorded pid is the job's own process if the process was created this close to the time
# the agent created it (a pid reused after that is another process).
SAME_START_S = 2.0


def default_directory(host_name):
    home = os.path.expanduser(os.environ.get("HQ_HOME") or "~/.hq")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in host_name)
    return os.path.join(home, "run", f"jobs-{safe}")


def create_time(pid):
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def key_of(job_id, attempt):
    return f"{job_id}.{attempt}"


class JobFiles:
    def __init__(self, directory):
        self.directory = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.journal_path = os.path.join(directory, "journal")
        self.exits_path = os.path.join(directory, "exits")
        self.live = self._read_journal()      # key -> record of attempts not yet ended
        self.ended = 0
        self._rewrite(exits=False)            # adopted jobs may still append to the exits file

    # -- journal -----------------------------------------------------------------------------
    def _read_journal(self):
        return read_journal(self.journal_path)

    def _rewrite(self, exits=True):
        """The journal, and with `exits` the exits file (only while no job runs, as jobs
        append to it), holding only live attempts."""
        files = [(self.journal_path, [json.dumps(r) for r in self.live.values()])]
        if exits:
            files.append((self.exits_path, [f"{k} {v}" for k, v in self._read_exits().items()
                                            if k in self.live]))
        for path, lines in files:
            with open(path + ".tmp", "w") as handle:
                handle.write("".join(line + "\n" for line in lines))
            os.replace(path + ".tmp", path)
        self.fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self.ended = 0

    def _append(self, entry):
        try:
            os.write(self.fd, (json.dumps(entry, separators=(",", ":")) + "\n").encode())
        except OSError as exc:   # the job runs anyway; only adoption after a crash is lost
            log.warning("cannot write the job journal %s: %s", self.journal_path, exc)

    def wrap(self, shell, command, job_id, attempt, prefix=""):
        """argv that runs `command` in `shell` (a POSIX shell) after the script `prefix` and
        leaves its exit status."""
        return [shell, "-c", prefix + TRAP, self.exits_path, key_of(job_id, attempt), command]

    def record(self, spec, pid, started, spawned=None):
        """A job given its slot at `started`, whose process was created at `spawned`."""
        entry = {"spec": spec, "pid": pid, "started": started, "spawned": spawned or started}
        self.live[key_of(spec["id"], spec["attempt"])] = entry
        self._append(entry)

    def forget(self, job_id, attempt, idle=False):
        """The attempt's end is recorded by the server. `idle`: no job runs, so both files may
        be compacted."""
        key = key_of(job_id, attempt)
        if self.live.pop(key, None) is not None:
            self._append({"end": key})
            self.ended += 1
        if idle and self.ended >= COMPACT_AFTER:
            os.close(self.fd)
            self._rewrite()

    # -- exit statuses ---------------------------------------------------------------------------
    def _read_exits(self):
        statuses = {}
        try:
            with open(self.exits_path) as handle:
                for line in handle:
                    parts = line.split()
                    if len(parts) == 2 and parts[1].isdigit():
                        statuses[parts[0]] = int(parts[1])
        except FileNotFoundError:
            pass
        return statuses

    def exit_status(self, job_id, attempt):
        """The exit status the job's shell appended, or None."""
        return self._read_exits().get(key_of(job_id, attempt))

    def records(self):
        """Every attempt started and not yet ended: dicts with spec, pid, started."""
        return list(self.live.values())


def read_journal(path):
    """key -> record of every attempt the journal at `path` shows started and not ended."""
    live = {}
    try:
        with open(path) as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue        # a line cut short by a crash
                if entry.get("end"):
                    live.pop(entry["end"], None)
                elif "spec" in entry:
                    live[key_of(entry["spec"]["id"], entry["spec"]["attempt"])] = entry
    except FileNotFoundError:
        pass
    return live


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
    return abs(ctime - record.get("spawned", record["started"])) < SAME_START_S
