"""The JSON form of a job: a stable contract for scripts (`hq-client details --json`).

Times are ISO 8601 in UTC; the database keeps them as seconds since the epoch.
"""

from datetime import datetime, timezone

TIME_FIELDS = ("submitted", "started", "finished")
PUBLIC_FIELDS = ("id", "name", "state", "host", "command", "submitted", "started", "finished",
                 "exit_code", "stdout", "stderr", "user", "batch", "cores", "memory", "priority",
                 "signal", "max_rss", "reason", "attempt", "retries", "cwd", "info_text",
                 "logfile", "host_req", "group_req", "exclude_hosts", "time_limit", "shell",
                 "array_index", "depends_on", "reservation", "entry")
SCRIPT_BUDGET = 16 << 20    # script text in one reply; later jobs show `script` null


def iso(seconds):
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def job_json(row):
    """Public dict of a job row (a dict from the store)."""
    out = {}
    for name in PUBLIC_FIELDS:
        value = row.get("term_signal") if name == "signal" else row.get(name)
        out[name] = iso(value) if name in TIME_FIELDS else value
    return out


def add_scripts(jobs, rows, budget=SCRIPT_BUDGET):
    """Put each row's `script` (its batch script's text, '' for none) into its job's dict
    (same order), while the reply's scripts stay within `budget` characters; null after."""
    for job, row in zip(jobs, rows):
        script = row.get("script") or ""
        budget -= len(script)
        job["script"] = script if budget >= 0 else None


def event_json(row):
    return {"time": iso(row["time"]), "state": row["state"], "attempt": row["attempt"],
            "host": row["host"], "detail": row["detail"]}
