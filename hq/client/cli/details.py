"""The text form of `hq-client details` and `lajob:ID`: every field of a job, then its
events; all user text escaped (shared by client.py and words.py)."""

from hq.client.cli.common import print_json
from hq.text import escape


def show_details(jobs, as_json):
    if as_json:
        print_json(jobs)
        return 0
    for job in jobs:
        for key, value in job.items():
            if key != "events":
                print(f"{key:<14} {escape(value)}")
        for event in job.get("events", []):
            print(f"  {event['time']}  {escape(event['state']):<10} attempt {event['attempt']}  "
                  f"{escape(event['host'])}  {escape(event['detail'])}".rstrip())
        print()
    return 0
