"""The Runner's dealings with jobs it did not start itself: adopting a crashed predecessor's
jobs from the journal, and dropping jobs of a database that is not the server's any more."""

import logging
import signal
import time

from agents import jobfiles
from agents.running import KILL_GRACE_S, Running, signal_group

log = logging.getLogger("hq.runner")

UNKNOWN_OUTCOME = "unknown outcome"


class Adoption:
    """Mixed into Runner (agents/runner.py), whose state it uses: files, by_pid, by_job,
    adopted, doomed, waiting, ready, database_id."""

    def ours(self, database_id):
        """Whether a job recorded under `database_id` belongs to the server's database (an
        unknown id on either side counts as the same)."""
        return not database_id or not self.database_id or database_id == self.database_id

    def adopt(self):
        """Take over the jobs a previous agent on this host started: the live ones are watched
        until they end; for the ended ones, finished events (exit status from the wrapper, or
        `unknown outcome`: the server must not run the job again unseen). Their events carry
        the `database_id` of their record, so that the agent can hold back another's."""
        if self.files is None:
            return []
        done, statuses = [], {}
        for record in self.files.records():
            spec = record["spec"]
            run = self._adopted_run(record)
            if jobfiles.alive(record):
                self.by_pid[run.pid] = self.adopted[run.pid] = self.by_job[run.key] = run
                self.cores_used += spec.get("cores", 1)
                log.info("job %s attempt %s adopted, pid %s", *run.key, run.pid)
                continue
            generation = record.get("x", 0)
            if generation not in statuses:
                statuses[generation] = self.files.read_exits(generation)
            done.append(self._adopted_finished(run, self.files.exit_status(
                record, statuses[generation])))
        return done

    def _adopted_run(self, record):
        spec = record["spec"]
        run = Running(spec, record["pid"], record["started"], adopted=record,
                      database_id=record.get("db"), generation=record.get("x", 0))
        if isinstance(spec.get("time_limit"), (int, float)) and spec["time_limit"] > 0:
            run.deadline = run.started + spec["time_limit"]
        return run

    def reap_adopted(self):
        """Finished events of the adopted jobs that ended (polled: not our children)."""
        done = []
        for run in [r for r in self.adopted.values() if not jobfiles.alive(r.adopted)]:
            self._forget(run)
            self.leftovers.job_ended(run.spec)
            self.leftovers.scan(run.key, time.time(), [r.pid for r in self.by_job.values()])
            if not run.doomed:
                done.append(self._adopted_finished(run, self.files.exit_status(run.adopted)))
        return done

    def _adopted_finished(self, run, code):
        spec = run.spec
        event = {"type": "finished", "job": spec["id"], "attempt": spec["attempt"],
                 "time": time.time(), "started": run.started, "max_rss": None,
                 "exit_code": code, "signal": None}
        event["database_id"] = run.database_id    # None: recorded before ids (the server's)
        if run.reason:
            event["reason"] = run.reason
        if code is None and not run.reason:   # gone unseen: killed, lost with its host, or
            event["error"] = UNKNOWN_OUTCOME  # its status could not be written (full disk)
        elif code is not None and 128 < code < 160:
            event["exit_code"], event["signal"] = None, code - 128
        log.info("adopted job %s attempt %s ended: %s", spec["id"], spec["attempt"],
                 event.get("error") or run.reason or f"exit {code}")
        return event

    def switch_database(self, database_id):
        """The server's database is `database_id`. What was recorded under another one is
        never reported: its running processes are killed (TERM, KILL after the grace), its
        waiting jobs dropped, its records forgotten. The (job, attempt) pairs dropped."""
        self.database_id = database_id
        dropped = set()
        for run in [r for r in self.by_job.values() if not self.ours(r.database_id)]:
            self._doom(run)
            dropped.add(run.key)
        for key, (_, _, owner) in list(self.waiting.items()):
            if not self.ours(owner):
                del self.waiting[key]
                dropped.add(key)
        for key, run in list(self.ready.items()):
            if not self.ours(run.database_id):
                del self.ready[key]
                run.dropped = True
                self._close_gate(run)
                dropped.add(key)
        if self.files is not None:
            for record in self.files.records():
                if not self.ours(record.get("db")):
                    pair = (record["spec"]["id"], record["spec"]["attempt"])
                    self.files.forget(*pair)
                    dropped.add(pair)
        for job_id, attempt in sorted(dropped):
            log.warning("job %s attempt %s is not of the server's database %s: not reported, "
                        "its processes killed, its record dropped", job_id, attempt,
                        database_id)
        return dropped

    def _doom(self, run):
        """Kill a running job of another database; it holds no slot and is never reported."""
        del self.by_job[run.key]
        self.cores_used -= run.spec.get("cores", 1)
        run.doomed, run.reason, run.deadline = True, "another database", None
        self.doomed[run.pid] = run
        signal_group(run.pid, signal.SIGTERM)
        run.kill_at = time.time() + KILL_GRACE_S
