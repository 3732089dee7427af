"""Batch scripts on the agent's host: a job's script text (from its RUN) written to a private file
that the interpreter of its #! line runs with the job's arguments, removed after the job."""

import logging
import os
import re
import shlex

log = logging.getLogger("hq.runner")

FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


def attach(spec, scripts):
    """A RUN holds each script text once (`scripts`) and each job names its own by index:
    put the text in the job's spec (None when the RUN lacks it: the job cannot start)."""
    if not isinstance(spec, dict) or "script" not in spec:
        return
    index = spec["script"]
    good = isinstance(index, int) and not isinstance(index, bool) and isinstance(scripts, list)
    spec["script"] = scripts[index] if good and 0 <= index < len(scripts) else None


def command_line(path, text, args):
    """The shell line that runs the script at `path` as the kernel would (so its mode bits and
    a noexec file system do not matter): the interpreter of its #! line with that line's
    optional argument, the path, then `args`."""
    first = text.split("\n", 1)[0]
    words = re.split(r"[ \t]+", first[2:].strip(" \t"), maxsplit=1) if first[:2] == "#!" else []
    if not words or not words[0]:
        return shlex.join([path, *args])
    return shlex.join([*words, path, *args])


def slurm_variables(spec):
    """What Slurm sets that scripts written for it read, from a RUN spec."""
    job_env = {"SLURM_JOB_ID": str(spec["id"]), "SLURM_JOB_NAME": spec.get("name") or "",
               "SLURM_CPUS_PER_TASK": str(spec["cores"]), "SLURM_SUBMIT_DIR": spec["cwd"]}
    if spec.get("array_index") is not None:
        job_env["SLURM_ARRAY_TASK_ID"] = str(spec["array_index"])
        job_env["SLURM_ARRAY_JOB_ID"] = str(spec.get("batch", ""))
    return job_env


class ScriptFiles:
    """The scripts of the jobs on this host, one file each (`JOB.ATTEMPT`, mode 0700) in a
    directory only the user can enter."""

    def __init__(self, directory):
        self.directory = os.path.abspath(directory)   # jobs change the agent's directory
        self.present = set()        # (job, attempt) whose file may exist

    def path(self, job_id, attempt):
        return os.path.join(self.directory, f"{job_id}.{attempt}")

    def write(self, job_id, attempt, text):
        """The path of a new file holding `text` (OSError if it cannot be written whole)."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        path = self.path(job_id, attempt)
        self.present.add((job_id, attempt))
        data = memoryview(text.encode())
        fd = os.open(path, FLAGS, 0o700)
        try:
            os.fchmod(fd, 0o700)        # whatever the job's umask took away
            while data:
                data = data[os.write(fd, data):]
        finally:
            os.close(fd)
        return path

    def remove(self, job_id, attempt):
        if (job_id, attempt) not in self.present:
            return
        self.present.discard((job_id, attempt))
        try:
            os.unlink(self.path(job_id, attempt))
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove the script of job %s attempt %s: %s", job_id, attempt,
                        exc)

    def sweep(self, keep):
        """At start: remove the scripts of jobs not in `keep` (job, attempt) pairs (a previous
        agent's, left when it died); the others stay for their jobs, which it adopts."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        for name in names:
            job, _, attempt = name.partition(".")
            pair = (int(job), int(attempt)) if job.isdigit() and attempt.isdigit() else None
            if pair in keep:
                self.present.add(pair)
                continue
            try:
                os.unlink(os.path.join(self.directory, name))
            except OSError:
                pass
