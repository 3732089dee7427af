"""Writes: the changes of one server loop turn, applied by a store in one transaction.

Group commit: the server collects every change of a turn here, commits once, then replies.
"""

from dataclasses import dataclass, field


@dataclass
class Writes:
    batches: list = field(default_factory=list)      # dict rows for `batches`
    batch_growth: list = field(default_factory=list)  # (jobs added, batch id): later chunks
    jobs: list = field(default_factory=list)         # dict rows for `jobs` (new)
    job_updates: dict = field(default_factory=dict)  # job id -> {column: value}
    events: list = field(default_factory=list)       # (job_id, time, state, attempt, host, detail)
    host_updates: dict = field(default_factory=dict)  # host name -> {column: value}
    metrics: list = field(default_factory=list)      # (host, time, load1, ..., nprocs, foreign_load)
    settings: dict = field(default_factory=dict)     # name -> value
    user_updates: dict = field(default_factory=dict)  # user name -> {column: value}
    parked_cancels: list = field(default_factory=list)  # (user, batch, from id, time)
    prune_metrics_before: float = None               # delete host_metrics rows older than this
    reservations: list = field(default_factory=list)  # dict rows for `reservations` (new)
    reservations_deleted: list = field(default_factory=list)  # codes whose rows go

    def update_job(self, job_id, **columns):
        self.job_updates.setdefault(job_id, {}).update(columns)

    def update_host(self, name, **columns):
        self.host_updates.setdefault(name, {}).update(columns)

    def event(self, job_id, time, state, attempt=0, host=None, detail=""):
        self.events.append((job_id, time, state, attempt, host, detail))

    def __bool__(self):
        return any((self.batches, self.batch_growth, self.jobs, self.job_updates, self.events,
                    self.host_updates, self.metrics, self.settings, self.user_updates,
                    self.prune_metrics_before is not None, self.reservations,
                    self.reservations_deleted, self.parked_cancels))
