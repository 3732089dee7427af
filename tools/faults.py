"""Real faults for tests and chaos: a small tmpfs mounted as root, filled to the last byte and
freed again, and the ledger that jobs append their ids to (how many times each job ran)."""

import collections
import contextlib
import os
import subprocess
import tempfile

FILLER = ".filler"


class FaultError(Exception):
    """A fault could not be set up (no root, mount refused)."""


def can_mount():
    """None if this process may mount a tmpfs, else why not."""
    return None if os.geteuid() == 0 else "needs root to mount a small tmpfs"


@contextlib.contextmanager
def tmpfs(size="8m", path=None):
    """A tmpfs of `size` mounted at `path` (a new temporary directory by default) for the `with`
    body; unmounted (lazily if busy) and the directory removed after, even on failure."""
    why = can_mount()
    if why:
        raise FaultError(why)
    made = path is None
    path = path or tempfile.mkdtemp(prefix="hqfs")
    os.makedirs(path, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", path],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise FaultError(f"cannot mount a tmpfs at {path}: {done.stderr.strip()}")
    try:
        yield path
    finally:
        unmount(path)
        if made:
            with contextlib.suppress(OSError):
                os.rmdir(path)


def unmount(path):
    if subprocess.run(["umount", path], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", path], capture_output=True)


def fill(directory):
    """Fill the file system of `directory` to the last byte (with its file FILLER); the bytes
    that were free."""
    path = os.path.join(directory, FILLER)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    written = 0
    try:
        for chunk in (b"x" * 65536, b"x" * 4096, b"x" * 512, b"x"):
            with contextlib.suppress(OSError):
                while True:
                    n = os.write(fd, chunk)
                    if not n:
                        break
                    written += n
    finally:
        os.close(fd)
    return written


def free(directory):
    """Give back what fill() took."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(directory, FILLER))


def ledger_lines(path):
    """(job id, pid of its shell) for each line of the ledger at `path`."""
    try:
        with open(path) as handle:
            lines = [line.split() for line in handle]
    except FileNotFoundError:
        return []
    return [(int(parts[0]), int(parts[1])) for parts in lines if len(parts) == 2]


def ledger_counts(path):
    """job id -> how many times the job appended its line to the ledger at `path`."""
    return collections.Counter(job for job, _ in ledger_lines(path))


def ledger_command(ledger, command=""):
    """A job command that appends "ID PID" (its id, its shell's pid) to `ledger`, then runs
    `command`."""
    tail = f"; {command}" if command else ""
    return f"echo $HQ_JOB_ID $$ >> {ledger}{tail}"
