"""Snakemake executor plugin for hq (`snakemake --executor hq`): each job is submitted through
hq's Python API with its threads, memory and runtime; all active jobs are checked in one bulk
request, woken by hq's pushes instead of a fixed pause; Ctrl-C cancels the running hq jobs."""

import threading
from dataclasses import dataclass, field
from typing import Generator, List, Optional

from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface
from snakemake_interface_executor_plugins.settings import CommonSettings, ExecutorSettingsBase

from snakemake_executor_plugin_hq.mapping import job_options, log_paths
from snakemake_executor_plugin_hq.session import HqSession


@dataclass
class ExecutorSettings(ExecutorSettingsBase):
    home: Optional[str] = field(default=None, metadata={
        "help": "hq's per-user directory (default: $HQ_HOME, else ~/.hq)", "env_var": False})
    group: Optional[str] = field(default=None, metadata={
        "help": "Run the jobs on hosts of this hq group", "env_var": False})
    priority: Optional[int] = field(default=None, metadata={
        "help": "hq priority of the jobs (higher runs first)", "env_var": False})


common_settings = CommonSettings(
    non_local_exec=True,
    implies_no_shared_fs=False,
    job_deploy_sources=False,
    pass_default_storage_provider_args=True,
    pass_default_resources_args=True,
    pass_envvar_declarations_to_cmd=True,
    auto_deploy_default_storage_provider=False,
    init_seconds_before_status_checks=0,
)


SESSION_LOCK = threading.Lock()


class Executor(RemoteExecutor):
    def __post_init__(self):
        settings = self.workflow.executor_settings
        self.extra = {"group_req": getattr(settings, "group", None),
                      "priority": getattr(settings, "priority", None)}

    @property
    def hq(self):
        """The hq session, made by whichever thread needs it first: Snakemake starts the wait
        thread (status checks) before __post_init__ runs."""
        with SESSION_LOCK:
            if getattr(self, "_hq", None) is None:
                settings = self.workflow.executor_settings
                self._hq = HqSession(getattr(settings, "home", None))
                self._hq.watch()     # from now on, an end pushed by hq wakes the status check
            return self._hq

    def run_job(self, job: JobExecutorInterface):
        stdout, stderr = log_paths(self.workflow.workdir_init, job)
        options = dict(job_options(job), stdout=stdout, stderr=stderr,
                       **{k: v for k, v in self.extra.items() if v is not None})
        command = self.format_job_exec(job)
        try:
            hq_id = self.hq.submit(command, **options)
        except Exception as exc:      # HQError, or hq-user-server not reachable
            self.report_job_error(SubmittedJobInfo(job), msg=f"hq refused the job: {exc}")
            return
        log = stdout.replace("%j", str(hq_id))
        self.logger.info(f"Job {job.jobid} submitted to hq as job {hq_id} (output: {log}).")
        self.report_job_submission(SubmittedJobInfo(job, external_jobid=str(hq_id),
                                                    aux={"log": log}))

    async def check_active_jobs(
        self, active_jobs: List[SubmittedJobInfo]
    ) -> Generator[SubmittedJobInfo, None, None]:
        try:
            states, unknown = self.hq.states([int(j.external_jobid) for j in active_jobs])
        except Exception as exc:   # hq-server restarting, a slow answer: look again later
            self.logger.warning(f"hq status check failed, trying again: {exc}")
            for info in active_jobs:
                yield info
            return
        for info in active_jobs:
            hq_id = int(info.external_jobid)
            state = states.get(hq_id)
            if state == "done":
                self.report_job_success(info)
            elif state in ("failed", "cancelled", "lost") or hq_id in unknown:
                why = self.hq.reason(hq_id) if hq_id not in unknown else "unknown to hq"
                self.report_job_error(info, msg=f"hq job {hq_id} {state or 'missing'}: {why} "
                                      f"(output: {info.aux['log']}). ")
            else:
                yield info

    def cancel_jobs(self, active_jobs: List[SubmittedJobInfo]):
        ids = [int(j.external_jobid) for j in active_jobs]
        if ids:
            self.hq.cancel(ids)
            self.logger.info(f"Cancelled hq jobs {', '.join(map(str, ids))}.")

    async def sleep(self):
        """Until hq pushes the end of a job of ours, at most the usual pause (an exception
        here would end Snakemake's wait thread, and the workflow would wait for ever)."""
        import asyncio
        seconds = self.next_seconds_between_status_checks
        try:
            await asyncio.to_thread(self.hq.wait_for_an_end, seconds)
        except Exception as exc:
            self.logger.warning(f"waiting for hq's pushes failed: {exc}")
            await asyncio.sleep(seconds)
