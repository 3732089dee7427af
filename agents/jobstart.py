"""How a job's process is started (os.posix_spawn): its environment, its shell's wrapper script,
its file actions (stdin, output files, the gate).

The gate: every job's shell first reads a line from fd 3, a pipe whose write end the runner holds,
so a job can be started ahead, while it waits for a slot, and given the slot with one write. A
gate closed without that line (the job was dropped, or its agent died) ends the shell at once.
"""

import os
import signal

from agents import jobfiles, leftovers, scripts

GATE_FD = 3
GATE = f'read g <&{GATE_FD} || exit 0; exec {GATE_FD}<&-; '
OPEN = b"go\n"
OUTPUT_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND
# Output files are truncated when the job starts, as Slurm's are, unless the submission asked
# to append (`hq-submit --append`: HQ_OPEN_MODE=append in the job's environment, as Slurm's
# --open-mode and SLURM_OPEN_MODE).
TRUNCATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
# Python ignores these; a job must not inherit that (`yes | head` would report EPIPE).
DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


class JobStarter:
    def __init__(self, host_name, script_files=None):
        self.host_name = host_name
        self.scripts = script_files or scripts.ScriptFiles(
            os.path.join(jobfiles.default_directory(host_name), "scripts"))
        self.directories = set()        # output directories known to exist
        self.directory = self.cwd = os.getcwd()
        self.own_umask = self.umask = os.umask(0o022)
        os.umask(self.own_umask)

    def start(self, spec, env, gate, exits=None):
        """Start a job's shell in its own session, waiting on the pipe read end `gate`: its
        pid. `exits`: (key, exits file) to which its shell appends `KEY STATUS` as it ends.
        StartError says in one line what is wrong (directory, output file, shell,
        environment, script...)."""
        self._set_umask(spec.get("umask"))     # before the output directories are made
        command = self._command(spec)
        try:
            return self._spawn(spec, command, env, gate, exits)
        except StartError:
            self.scripts.remove(spec["id"], spec["attempt"])
            raise

    def _spawn(self, spec, command, env, gate, exits):
        try:
            shell, argv, actions = self._arguments(spec, command, gate, exits,
                                                   env.get("HQ_OPEN_MODE") == "append")
            job_env = dict(env)
            job_env.update(self._variables(spec))
        except OSError as exc:      # an output directory that cannot be made
            raise StartError(f"output: {_os_error(exc)}") from None
        except Exception as exc:
            raise StartError(_malformed(spec, env, exc)) from None
        spawn = os.posix_spawn if os.path.isabs(shell) else os.posix_spawnp
        try:
            if spec["cwd"] != self.cwd:   # only this thread uses relative paths or the cwd
                self._enter(spec["cwd"])
            return spawn(argv[0], argv, job_env, file_actions=actions, setsid=True,
                         setsigdef=DEFAULT_SIGNALS)
        except StartError:
            raise
        except OSError as exc:
            raise StartError(_culprit(shell, spec, exc)) from None
        except Exception as exc:
            raise StartError(_malformed(spec, env, exc)) from None

    def _command(self, spec):
        """The job's command line: its command, or for a job with a script the line that runs
        a private copy of it, written now (the spec keeps its path, `script_file`, instead of
        its text, so the journal stays small)."""
        if "script" not in spec:
            return spec.get("command")
        text, args = spec.pop("script"), spec.get("args", [])
        if not isinstance(text, str) or not text:
            raise StartError("script: missing from the RUN message")
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise StartError("args: not a list of strings")
        try:
            spec["script_file"] = self.scripts.write(spec["id"], spec["attempt"], text)
        except (OSError, UnicodeError) as exc:
            self.scripts.remove(spec["id"], spec["attempt"])
            raise StartError(f"script: {_os_error(exc)}") from None
        return scripts.command_line(spec["script_file"], text, args)

    def _enter(self, directory):
        try:
            os.chdir(directory)
        except OSError as exc:
            raise StartError(_os_error(exc)) from None
        self.cwd = directory

    def leave(self):
        """Back to the agent's own directory and umask (starts change into each job's)."""
        if self.cwd != self.directory:
            os.chdir(self.directory)
            self.cwd = self.directory
        if self.umask != self.own_umask:
            os.umask(self.own_umask)
            self.umask = self.own_umask

    def _set_umask(self, umask):
        """The job's umask (spec `umask`: 0..0o777, None: the agent's own), inherited by its
        process, its output files and their directories; set only when it changes."""
        if umask is None:
            umask = self.own_umask
        elif isinstance(umask, bool) or not isinstance(umask, int) or not 0 <= umask <= 0o777:
            raise StartError(f"umask: {umask!r:.40} is not an integer from 0 to 0o777")
        if umask != self.umask:
            os.umask(umask)
            self.umask = umask

    def _variables(self, spec):
        job_env = {"HQ_JOB_ID": str(spec["id"]), "HQ_HOST": self.host_name,
                   "HQ_CORES": str(spec["cores"]), "HQ_ATTEMPT": str(spec["attempt"]),
                   "HQ_JOB_NAME": spec.get("name") or "",
                   "HQ_BATCH_ID": str(spec.get("batch", "")),
                   "HQ_AGENT_HOME": leftovers.AGENT_HOME}
        if spec.get("entry"):
            job_env["HQ_ENTRY"] = spec["entry"]
        if spec.get("array_index") is not None:
            job_env["HQ_ARRAY_INDEX"] = str(spec["array_index"])
        if spec.get("slurm_env"):
            job_env.update(scripts.slurm_variables(spec))
        return job_env

    def _arguments(self, spec, command, gate, exits, append=False):
        """(shell, argv, file actions) of a job; the child opens its output files itself."""
        stdout, stderr = spec["stdout"], spec["stderr"]
        flags = OUTPUT_FLAGS if append else TRUNCATE_FLAGS
        actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                   (os.POSIX_SPAWN_OPEN, 1, stdout, flags, 0o666)]
        if stderr == stdout:
            actions.append((os.POSIX_SPAWN_DUP2, 1, 2))
        else:
            actions.append((os.POSIX_SPAWN_OPEN, 2, stderr, flags, 0o666))
        actions.append((os.POSIX_SPAWN_DUP2, gate, GATE_FD))
        for path in (stdout, stderr):
            if os.path.isabs(path):
                self._make_directory(os.path.dirname(path))
        shell = spec.get("shell") or "/bin/sh"
        if exits is not None:
            argv = jobfiles.wrap(shell, command, *exits, GATE)
        else:
            argv = [shell, "-c", GATE + command, os.path.basename(shell)]
        return shell, argv, actions

    def _make_directory(self, directory):
        if directory and directory not in self.directories:
            os.makedirs(directory, exist_ok=True)
            if len(self.directories) > 1000:
                self.directories.clear()
            self.directories.add(directory)


class StartError(Exception):
    """A job that cannot start; the message says why in one line."""


def _os_error(exc):
    return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")


def _culprit(shell, spec, exc):
    """What a failed posix_spawn could not use: an output file, else the shell."""
    cwd = spec["cwd"]
    for path in (os.path.join(cwd, spec["stdout"]), os.path.join(cwd, spec["stderr"])):
        try:
            os.close(os.open(path, OUTPUT_FLAGS, 0o666))
        except OSError as output_exc:
            return f"output: {output_exc.strerror}: {path}"
    return f"{exc.strerror}: {shell}"


def _malformed(spec, env, exc):
    """What in a job's spec or environment cannot be passed to a process (a NUL byte, a name
    with '=', a value that is not a string...), in one line."""
    for name, value in env.items():
        where = f"environment variable {_short(name)}"
        if not isinstance(name, str) or not isinstance(value, str):
            return f"{where}: not a string"
        if "\0" in name or "\0" in value:
            return f"{where}: embedded null byte"
        if not name or "=" in name:
            return f"{where}: illegal name"
    for field in ("command", "shell", "cwd", "stdout", "stderr"):
        value = spec.get(field)
        if field == "shell" and not value:
            continue
        if not isinstance(value, str):
            return f"{field}: missing or not a string"
        if "\0" in value:
            return f"{field}: embedded null byte"
    return f"{type(exc).__name__}: {exc}"


def _short(value, limit=40):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
