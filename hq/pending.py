"""The pending jobs: a dict by id that also keeps, per user, a heap in placement order, so the
server hands the scheduler only the head of the queue instead of every pending job."""

import heapq


class PendingJobs(dict):
    """id -> Job, like a dict; removals are lazy in the heaps (checked when an entry surfaces)."""

    def __init__(self):
        super().__init__()
        self.heaps = {}          # user -> [(-priority, job id)]
        self.additions = 0       # counts jobs made pending: the scheduler has news

    def __setitem__(self, job_id, job):
        super().__setitem__(job_id, job)
        heapq.heappush(self.heaps.setdefault(job.user, []), (-job.priority, job_id))
        self.additions += 1

    def users(self):
        return [user for user, heap in self.heaps.items() if heap]

    def head(self, count):
        """Up to `count` pending jobs of each user, in order of priority then id."""
        jobs = []
        for user in list(self.heaps):
            heap = self.heaps[user]
            taken, seen = [], set()
            while heap and len(taken) < count:
                entry = heapq.heappop(heap)
                job = self.get(entry[1])
                if job is None or entry[1] in seen or -entry[0] != job.priority:
                    continue            # no longer pending, or a duplicate: drop the entry
                seen.add(entry[1])
                taken.append(entry)
                jobs.append(job)
            for entry in taken:
                heapq.heappush(heap, entry)
            if not heap:
                del self.heaps[user]
        return jobs
