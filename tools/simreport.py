"""The figures of a tools/simcluster.py run: from its CPU marks, the workers' counters, the
server log and the database (every job done exactly once, nothing lost), printed as a table and
as one JSON object.
"""

import collections
import json
import resource

from hq.config import parse_db_url
from hq.store import open_store


def count_done(db_url, skip_batches=()):
    store = open_store(parse_db_url(db_url))
    try:
        return store.query("SELECT COUNT(*) AS n FROM jobs WHERE state = 'done'")[0]["n"]
    finally:
        store.close()


def percentile(values, share):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def ms(value):
    return None if value is None else round(value * 1000, 1)


def database_checks(db_url, figures):
    """Every job done exactly once? Lost, requeued, run twice (by the events), cancelled."""
    store = open_store(parse_db_url(db_url))
    try:
        def one(sql, *args):
            return list(store.query(sql, args)[0].values())[0]
        twice = ("SELECT COUNT(*) AS n FROM (SELECT job_id FROM job_events WHERE state = ? "
                 "GROUP BY job_id HAVING COUNT(*) > 1) AS t")
        states = {r["state"]: r["n"] for r in store.query(
            "SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")}
        figures["states"] = states
        figures["jobs_done"] = states.get("done", 0)
        figures["done_twice"] = one(twice, "done")
        figures["run_twice_db"] = one(twice, "running")
        figures["lost"] = states.get("lost", 0)
        figures["cancelled"] = states.get("cancelled", 0)
        figures["last_done"] = one("SELECT MAX(time) AS t FROM job_events WHERE state = 'done'")
        requeues = store.query("SELECT detail FROM job_events WHERE state = 'pending' "
                               "AND detail LIKE ?", ("requeued%",))
        figures["requeued"] = len(requeues)
        for group in ("silenced", "paused"):
            hosts = set(figures.get(group, ()))
            figures[f"{group}_requeued"] = sum(
                1 for r in requeues if any(word.strip(":,") in hosts
                                           for word in r["detail"].split()))
        held_jobs(store, figures)
    finally:
        store.close()


def held_jobs(store, figures):
    """Jobs the paused agents held when cut off are kept (done, same attempt); jobs of the
    silenced hosts are requeued (done with a later attempt)."""
    for group, outcome in (("paused", "kept"), ("silenced", "moved")):
        held = figures.pop(f"{group}_held", [])
        rows = {r["id"]: r for r in store.get_jobs(sorted({job for job, _ in held}))} \
            if held else {}
        same = [job for job, attempt in held if rows[job]["attempt"] == attempt]
        later = [job for job, attempt in held if rows[job]["attempt"] > attempt]
        figures[f"{group}_held"] = len(held)
        figures[f"{group}_{outcome}"] = len(same if outcome == "kept" else later)
        figures[f"{group}_done"] = sum(1 for job, _ in held if rows[job]["state"] == "done")


def cpu_figures(simulation, figures):
    marks = simulation.cpu_marks
    t0, server0, workers0, self0, rss0, done0 = marks["start"]
    t1, server1, workers1, self1, rss1, done1 = marks["end"]
    own = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
    wall = t1 - t0
    figures["wall_s"] = round(wall, 2)
    figures["server_cpu_s"] = round(server1 - server0, 2)
    figures["server_cpu_pct"] = round(100 * (server1 - server0) / wall, 1)
    figures["sim_cpu_s"] = round(workers1 - workers0 + own, 2)
    figures["sim_cpu_pct"] = round(100 * (workers1 - workers0 + own) / wall, 1)
    figures["server_rss_mb_peak"] = round(max(rss1, marks.get("rss_before_restart", 0)), 1)
    done = figures["jobs_done"]
    figures["server_cpu_ms_per_job"] = round(1000 * (server1 - server0) / done, 3) if done \
        else None
    if "accepted" in marks:
        ta, servera, _, _, _, donea = marks["accepted"]
        if done1 > donea and t1 > ta:
            figures["window_jobs_per_s"] = round((done1 - donea) / (t1 - ta), 1)
            figures["window_cpu_ms_per_job"] = round(1000 * (server1 - servera)
                                                     / (done1 - donea), 3)
    place0 = marks.get("placement_accepted" if simulation.opts.window else "placement_start")
    place1 = marks.get("placement_restart") or marks.get("placement_end")
    if place0 and place1 and place1[1] > place0[1]:
        figures["place_us_per_job"] = round(1e6 * (place1[0] - place0[0])
                                            / (place1[1] - place0[1]), 1)
        figures["placed_in_window"] = place1[1] - place0[1]
    last = figures.pop("last_done")
    if done and last and not simulation.opts.window:
        figures["jobs_per_s"] = round(done / (last - t0), 1)
    elif "window_jobs_per_s" in figures:
        figures["jobs_per_s"] = figures["window_jobs_per_s"]
    else:
        figures["jobs_per_s"] = 0.0


def finish(install, simulation, figures):
    """Every figure, once the server and the workers have stopped."""
    workers = simulation.workers
    for group in ("paused_held", "silenced_held"):
        figures[group] = [pair for stats in workers.latest.values()
                          for pair in stats.get(group, [])]
    database_checks(install.db_url, figures)
    cpu_figures(simulation, figures)
    status = figures.pop("status_rtts")
    figures["status_p50_ms"] = ms(percentile(status, 0.5))
    figures["status_p99_ms"] = ms(percentile(status, 0.99))
    figures["status_count"] = len(status)
    queries = figures.pop("sim_user_rtts")
    figures["query_p50_ms"] = ms(percentile(queries, 0.5))
    figures["query_p99_ms"] = ms(percentile(queries, 0.99))
    downs, gone = install.downs()
    faulty = simulation.faulty
    figures["false_down"] = len(downs - faulty)
    figures["false_gone"] = len({(u, h) for u, h in gone if h not in faulty})
    figures["down"] = len(downs)
    figures["agents_expected"] = workers.expected
    for name in ("reregisters", "link_registers", "gave_way", "resent", "fenced", "gave_up",
                 "refused", "started", "done_acked"):
        figures[name] = workers.total(name)
    started = collections.Counter(workers.started_ids())
    figures["run_twice_sim"] = sum(1 for n in started.values() if n > 1)
    figures["user_timeouts"] = sum(u.conn.timeouts for u in simulation.users)
    figures["refused_submissions"] = sum(len(u.refused) for u in simulation.users)
    figures["db_url"] = install.db_url
    figures["sim_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return figures


ROWS = [("jobs done / jobs", lambda f: f"{f['jobs_done']} / {f['jobs']}"),
        ("jobs/s (first submit to last done)", lambda f: f["jobs_per_s"]),
        ("server CPU ms per job", lambda f: f["server_cpu_ms_per_job"]),
        ("server CPU % of one core / simulator's", lambda f: f"{f['server_cpu_pct']} / "
                                                           f"{f['sim_cpu_pct']}"),
        ("server RSS peak MB", lambda f: f["server_rss_mb_peak"]),
        ("hq-admin status p50 / p99 ms", lambda f: f"{f['status_p50_ms']} / {f['status_p99_ms']}"),
        ("agents held / expected", lambda f: f"{f['agents']} / {f['agents_expected']}"),
        ("false down (hosts) / false gone (agents)",
         lambda f: f"{f['false_down']} / {f['false_gone']}"),
        ("done twice / run twice / lost", lambda f: f"{f['done_twice']} / {f['run_twice_sim']} / "
                                                    f"{f['lost']}")]


def show(figures, as_json):
    width = max(len(name) for name, _ in ROWS)
    for name, value in ROWS:
        try:
            print(f"{name:<{width}}  {value(figures)}")
        except KeyError:
            pass
    for key in ("heartbeat_cpu_pct", "idle_window", "window_cpu_ms_per_job", "restart",
                "place_us_per_job"):
        if key in figures:
            print(f"{key:<{width}}  {figures[key]}")
    if as_json:
        print(json.dumps(figures, sort_keys=True))
