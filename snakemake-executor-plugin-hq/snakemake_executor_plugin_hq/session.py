"""The plugin's use of hq's Python API from Snakemake's two threads (submission in the main
one, status checks in the wait thread): a lock around one client, and a second client that
only waits for pushes (ENDED) between status checks."""

import threading
import time


class HqSession:
    def __init__(self, home=None):
        from hq import Client
        self.client = Client(home=home)
        self.watcher = Client(home=home)
        self.lock = threading.Lock()
        self.watching = False

    def submit(self, command, **options):
        with self.lock:
            return self.client.submit(command, **options)

    def states(self, ids):
        """({id: state}, [unknown ids]) in one request (per 10,000 ids)."""
        with self.lock:
            return self.client.states(ids)

    def reason(self, job_id):
        with self.lock:
            try:
                job = self.client.details([job_id], events=False)[0]
            except Exception as exc:
                return str(exc)
        return job.get("reason") or f"exit code {job.get('exit_code')}"

    def cancel(self, ids):
        with self.lock:
            self.client.cancel(ids)

    def watch(self):
        from hq import protocol as p
        try:
            self.watcher.request(p.WATCH)
            self.watching = True
        except Exception:       # an older user-server: status checks at a fixed pace
            self.watching = False

    def wait_for_an_end(self, seconds):
        """Return when hq pushes the end of one of this user's jobs, or after `seconds`."""
        try:
            if not self.watching:
                self.watch()
            if not self.watching:
                raise ConnectionError("no pushes")
            self.watcher.pushes(seconds)
        except Exception:       # no pushes (an older user-server, a lost connection)
            self.watching = False
            self.watcher.close()
            time.sleep(seconds)
