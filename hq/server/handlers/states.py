"""STATUS {ids}: the states of many jobs of a user in one request (workflow engines ask for
every job they track at once); live jobs from memory, the others from one query.

The reply names the ids the server does not know (or that are another user's) in `unknown`.
"""

from hq import protocol as p
from hq.errors import BAD_REQUEST, HQError

MAX_IDS = 10000


def job_states(core, user, body):
    ids = p.int_list(body, "ids")
    if len(ids) > MAX_IDS:
        raise HQError(BAD_REQUEST, f"at most {MAX_IDS} ids in one request")
    states, rest = {}, []
    for job_id in ids:
        job = core.jobs.get(job_id)
        if job is not None and job.user == user:
            states[job_id] = job.state
        else:
            rest.append(job_id)
    if rest:
        for row in core.store.get_jobs(sorted(set(rest)), user):
            states[row["id"]] = row["state"]
    unknown = sorted({i for i in ids if i not in states})
    return {"states": {str(i): s for i, s in states.items()}, "unknown": unknown}
