"""What lets a restarted agent adopt the jobs its predecessor started: a journal of started and
ended attempts, and files of exit statuses that the jobs' own shells append to as they end."""

import errno
import json
import logging
import os
from collections import Counter

import psutil

log = logging.getLogger("hq.jobfiles")

# The job's shell appends "KEY STATUS" to an exits file from an EXIT trap set before the command
# runs (the way Slurm's slurmstepd outlives slurmd, without a process of its own). The trap and
# the gate come first on the command's own first line, so the command is the shell's script
# itself, as with `sh -c COMMAND`: `$0` is the shell's name, no positional parameters, errors
# read `sh: 1: nosuchcmd: not found` (no internal file, no `eval:`), line numbers are the
# command's. A job killed by a signal appends nothing: its agent saw the signal. Appending to
# one file avoids creating a file per job, which costs far more. A full disk loses the line
# silently (the job's own stderr stays clean).
TRAP = 'trap {action} EXIT; '
# The journal is rewritten with only its live attempts once it reaches this size, and again
# each time it doubles (amortised: each byte appended is rewritten at most once on average).
COMPACT_BYTES = 1 << 20
# Jobs per exits file. Running jobs append to it, so it is never rewritten: new jobs get the
# next file, and a file goes once every attempt that used it is forgotten.
ROTATE_AFTER = 20000
# A recorded pid is the job's own process if the process was created this close to the time
# the agent created it (a pid reused after that is another process).
SAME_START_S = 2.0


class JournalError(Exception):
    """The journal cannot take a job's record: the job must not run (a restarted agent would
    not know it, and the server would run it again)."""


def default_directory(host_name):
    home = os.path.expanduser(os.environ.get("HQ_HOME") or "~/.hq")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in host_name)
    return os.path.join(home, "run", f"jobs-{safe}")


def create_time(pid):
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def key_of(job_id, attempt, database_id=None):
    return f"{job_id}.{attempt}.{database_id}" if database_id else f"{job_id}.{attempt}"


def safe_database_id(value):
    """`value` if it can name a database in these files (1-64 ASCII letters, digits, '-' or
    '_'), else None."""
    if (isinstance(value, str) and 0 < len(value) <= 64 and value.isascii()
            and all(c.isalnum() or c in "-_" for c in value)):
        return value
    return None


class JobFiles:
    """The journal (JSON lines: a record per attempt given its slot, an end line once the
    server acknowledged its end) and the exits files, in one directory. Nothing here stops the
    agent: a full or broken disk makes record() refuse (the job fails, loudly) and the rest is
    logged; what was journalled is never lost (compaction writes a new file, then renames)."""

    def __init__(self, directory):
        self.directory = directory
        self.journal_path = os.path.join(directory, "journal")
        self.fd = None
        self.size = 0                 # bytes in the journal
        self.pending_newline = False  # it ends in a line cut short: start on a new one
        self.compact_at = COMPACT_BYTES
        self.failing = None           # why the journal could not be written (logged once)
        self.line_bytes = {}          # key -> length of its record's line
        self.index = {}               # (job, attempt) -> key of its live record
        self.generations = Counter()  # exits file -> live records whose job appends to it
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as exc:
            log.error("cannot make the job directory %s: %s", directory, exc)
        self.live = self._load()
        self.generation = 1 + max([*self.generations, *self._exits_files()], default=0)
        self.jobs_in_generation = 0
        self._compact()               # falls back to appending to the journal as it is
        self._remove_unused_exits()

    # -- journal -----------------------------------------------------------------------------
    def _load(self):
        live = read_journal(self.journal_path)
        for key, entry in live.items():
            self.line_bytes[key] = len(_line(entry)) + 1
            self.index[(entry["spec"]["id"], entry["spec"]["attempt"])] = key
            self.generations[entry.get("x", 0)] += 1
        return live

    def _open(self):
        if self.fd is None:
            self.fd = os.open(self.journal_path, os.O_RDWR | os.O_APPEND | os.O_CREAT
                              | os.O_CLOEXEC, 0o600)
            self.size = os.fstat(self.fd).st_size
            self.pending_newline = self.size > 0 and os.pread(self.fd, 1, self.size - 1) != b"\n"
        return self.fd

    def _append(self, line):
        """Append one line, all of it or nothing (OSError)."""
        data = (("\n" if self.pending_newline else "") + line + "\n").encode()
        fd = self._open()
        written = os.write(fd, data)
        if written != len(data):         # a full disk took part of it: take it back
            try:
                os.ftruncate(fd, self.size)
            except OSError:
                self.pending_newline = True
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.size += written
        self.pending_newline = False
        if self.failing:
            log.warning("the job journal %s can be written again", self.journal_path)
            self.failing = None

    def _compact(self):
        """Rewrite the journal with only the live records (a new file, then renamed over it);
        on failure (a full disk) go on appending to the old one and try again later."""
        temporary = self.journal_path + ".tmp"
        try:
            with open(temporary, "w") as handle:
                handle.write("".join(_line(entry) + "\n" for entry in self.live.values()))
            os.replace(temporary, self.journal_path)
        except OSError as exc:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            self.compact_at = self.size + COMPACT_BYTES
            log.warning("cannot compact the job journal %s: %s; appending to it as it is",
                        self.journal_path, exc)
            try:
                self._open()
            except OSError as open_exc:
                self._trouble(open_exc)
            return
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        try:
            self._open()
        except OSError as exc:
            self._trouble(exc)
        self.compact_at = max(COMPACT_BYTES, 2 * self.size)

    def _trouble(self, exc):
        if self.failing is None:
            log.error("cannot write the job journal %s: %s (jobs cannot start until it can)",
                      self.journal_path, exc.strerror or exc)
        self.failing = exc

    def record(self, spec, pid, started, spawned=None, database_id=None, generation=0):
        """A job given its slot at `started`, whose process was created at `spawned`, of the
        database `database_id`, appending its exit status to exits file `generation`.
        JournalError when it cannot be written: then the job must not run."""
        entry = {"spec": spec, "pid": pid, "started": started, "spawned": spawned or started}
        if database_id:
            entry["db"] = database_id
        if generation:
            entry["x"] = generation
        line = _line(entry)
        try:
            self._append(line)
        except OSError as exc:
            self._trouble(exc)
            raise JournalError(f"journal: {exc.strerror or exc}: {self.journal_path}") from None
        pair = (spec["id"], spec["attempt"])
        if pair in self.index:           # an older record of the same attempt, another database
            self.forget(*pair)
        key = key_of(spec["id"], spec["attempt"], database_id)
        self.live[key] = entry
        self.index[pair] = key
        self.line_bytes[key] = len(line) + 1
        self.generations[generation] += 1

    def forget(self, job_id, attempt):
        """The attempt's end is recorded by the server (or it is another database's): its
        record goes, and the exits file it used once no live record uses it."""
        key = self.index.pop((job_id, attempt), None)
        entry = self.live.pop(key, None)
        if entry is None:
            return
        self.line_bytes.pop(key, None)
        generation = entry.get("x", 0)
        self.generations[generation] -= 1
        if self.generations[generation] <= 0:
            del self.generations[generation]
            if generation != self.generation:
                self._remove_exits(generation)
        try:
            self._append(f'{{"end":"{key}"}}')
        except OSError as exc:       # harmless: the next compaction drops the record
            self._trouble(exc)
        if self.size >= self.compact_at:
            self._compact()

    def records(self):
        """Every attempt started and not yet forgotten: dicts with spec, pid, started, spawned,
        db (its database, if known) and x (its exits file)."""
        return list(self.live.values())

    def database_id(self):
        """The database of the most recent record that names one (None: no such record)."""
        for entry in reversed(self.live.values()):
            if entry.get("db"):
                return entry["db"]
        return None

    # -- exit statuses ---------------------------------------------------------------------------
    def exits_target(self):
        """(generation, path) of the exits file the next job appends its status to."""
        self.jobs_in_generation += 1
        if self.jobs_in_generation > ROTATE_AFTER:
            self.jobs_in_generation = 1
            if not self.generations[self.generation]:    # else it goes with its last record
                self._remove_exits(self.generation)
            self.generation += 1
        return self.generation, self.exits_path(self.generation)

    def exits_path(self, generation):
        name = f"exits.{generation}" if generation else "exits"
        return os.path.join(self.directory, name)

    def read_exits(self, generation):
        statuses = {}
        try:
            with open(self.exits_path(generation), errors="replace") as handle:
                for line in handle:
                    parts = line.split()
                    if len(parts) == 2 and parts[1].isdigit():
                        statuses[parts[0]] = int(parts[1])
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot read %s: %s", self.exits_path(generation), exc)
        return statuses

    def exit_status(self, entry, statuses=None):
        """The exit status the job of record `entry` appended, or None. `statuses`: that
        exits file as read_exits() returned it (saves reading it again)."""
        spec = entry["spec"]
        if statuses is None:
            statuses = self.read_exits(entry.get("x", 0))
        return statuses.get(key_of(spec["id"], spec["attempt"], entry.get("db")))

    def _exits_files(self):
        found = []
        try:
            names = os.listdir(self.directory)
        except OSError:
            return found
        for name in names:
            if name == "exits":
                found.append(0)
            elif name.startswith("exits.") and name[6:].isdigit():
                found.append(int(name[6:]))
        return found

    def _remove_unused_exits(self):
        for generation in self._exits_files():
            if generation not in self.generations and generation != self.generation:
                self._remove_exits(generation)

    def _remove_exits(self, generation):
        try:
            os.unlink(self.exits_path(generation))
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove %s: %s", self.exits_path(generation), exc)


def wrap(shell, command, key, exits_path, prefix=""):
    """argv that runs `command` in `shell` (a POSIX shell) as `sh -c COMMAND` does, after the
    script `prefix`, and appends `KEY STATUS` to `exits_path` when the shell exits. `key` is
    made of letters, digits, '.', '-' and '_' (key_of)."""
    import shlex
    action = shlex.quote(f'echo "{key} $?" >> {shlex.quote(exits_path)} 2>/dev/null')
    return [shell, "-c", prefix + TRAP.format(action=action) + command,
            os.path.basename(shell)]


def _line(entry):
    return json.dumps(entry, separators=(",", ":"))


def read_journal(path):
    """key -> record of every attempt the journal at `path` shows started and not ended."""
    live = {}
    try:
        with open(path, "rb") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue        # a line cut short by a crash
                if not isinstance(entry, dict):
                    continue
                if isinstance(entry.get("end"), str):
                    live.pop(entry["end"], None)
                elif _is_record(entry):
                    spec = entry["spec"]
                    live[key_of(spec["id"], spec["attempt"], entry.get("db"))] = entry
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.error("cannot read the job journal %s: %s", path, exc)
    return live


def _is_record(entry):
    spec = entry.get("spec")
    return (isinstance(spec, dict) and all(isinstance(spec.get(f), int) for f in ("id", "attempt"))
            and isinstance(entry.get("pid"), int) and isinstance(entry.get("started"), (int, float))
            and isinstance(entry.get("db", ""), str) and isinstance(entry.get("x", 0), int))


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
