"""The optional per-job log file (hq-submit -l): command, host, times, exit status, then the
tails of the job's stdout and stderr, written by the agent when the job ends."""

import logging
import os
import time

log = logging.getLogger("hq.runner")

LOG_TAIL_BYTES = 1 << 20


def write_logfile(run, event, host_name):
    spec = run.spec
    lines = [f"# hq job {spec['id']} attempt {spec['attempt']}", f"# command: {spec['command']}",
             f"# host: {host_name}", f"# directory: {spec['cwd']}",
             f"# started: {time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(run.started))}Z",
             f"# finished: {time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(event['time']))}Z",
             f"# exit code: {event['exit_code']}  signal: {event['signal']}"]
    try:
        with open(spec["logfile"], "w", encoding="utf-8", errors="replace") as log_out:
            log_out.write("\n".join(lines) + "\n")
            for title, path in (("stdout", spec["stdout"]), ("stderr", spec["stderr"])):
                log_out.write(f"# --- {title} ({path}) ---\n")
                log_out.write(_tail(path))
                if title == "stdout" and spec["stderr"] == spec["stdout"]:
                    break
    except (OSError, ValueError, TypeError) as exc:   # a NUL byte in the name, a full disk...
        log.warning("job %s attempt %s: cannot write log file %.200r: %s", spec["id"],
                    spec["attempt"], spec["logfile"], exc)


def _tail(path):
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - LOG_TAIL_BYTES))
            return handle.read().decode(errors="replace")
    except OSError as exc:
        return f"(cannot read: {exc.strerror})\n"
