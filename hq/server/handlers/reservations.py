"""Slot reservations (hq-reservation): slots on hosts held back for jobs that carry a code
(`hq-submit --reservation CODE`). Admin handlers in hq-server and the state changes they make.
"""

import logging
import secrets

from hq import protocol as p
from hq.errors import BAD_REQUEST, UNKNOWN_HOST, HQError
from hq.model import FAILED, HELD, PENDING

log = logging.getLogger("hq.server.handlers.reservations")


def _add(server, arg, body):
    """Reserve slots: body `hosts` [[name, slots], ...]; replies with the new code."""
    state = server.state
    wanted = {}
    for entry in p.field(body, "hosts", list):
        if (not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[0], str)
                or not p.is_int(entry[1], 1, 1 << 31)):
            raise HQError(BAD_REQUEST, "hosts must be [name, slots >= 1] pairs")
        name, slots = entry
        host = state.hosts.get(name)
        if host is None or not host.in_config:
            raise HQError(UNKNOWN_HOST, f"no host {name!r} in the cluster")
        wanted[name] = wanted.get(name, 0) + slots
        held = sum(host.reserved.values())
        if host.slots and held + wanted[name] > host.slots:
            raise HQError(BAD_REQUEST, f"host {name} has {host.slots} slots, {held} already "
                          f"reserved: cannot reserve {wanted[name]} more")
    if not wanted:
        raise HQError(BAD_REQUEST, "no hosts to reserve: give HOST:SLOTS")
    code = arg or secrets.token_hex(4)
    if len(code) > 64 or not all(c.isalnum() or c in "._-" for c in code):
        raise HQError(BAD_REQUEST, "a reservation code is up to 64 letters, digits, '.', '_', '-'")
    if code in state.slot_reservations:
        raise HQError(BAD_REQUEST, f"reservation {code} exists")
    user = body.get("user", "")
    state.slot_reservations[code] = {"user": user, "created": server.now, "hosts": wanted}
    state.changed = True
    for name, slots in wanted.items():
        state.hosts[name].reserved[code] = slots
        state.writes.reservations.append({"code": code, "host": name, "slots": slots,
                                          "user": user, "created": server.now})
    log.info("reservation %s by %s: %s", code, user,
             ", ".join(f"{h}:{s}" for h, s in wanted.items()))
    return {"code": code, "hosts": wanted}


def _delete(server, code, body):
    """Drop a reservation; its waiting jobs fail (their slots are gone), running ones finish."""
    state = server.state
    if state.slot_reservations.pop(code, None) is None:
        raise HQError(BAD_REQUEST, f"no reservation {code!r} (see 'hq-reservation -s')")
    for host in state.hosts.values():
        host.reserved.pop(code, None)
    state.writes.reservations_deleted.append(code)
    state.changed = True
    failed = [job for job in state.jobs.values()
              if job.reservation == code and job.state in (HELD, PENDING)]
    for job in failed:
        state.set_state(job, FAILED, server.now, f"reservation {code} deleted",
                        reason="reservation deleted", finished=server.now)
    log.info("reservation %s deleted; %d waiting jobs failed", code, len(failed))
    return {"code": code, "failed_jobs": [job.id for job in failed]}


def _show(server, arg, body):
    out = []
    for code, entry in sorted(server.state.slot_reservations.items()):
        for name, slots in sorted(entry["hosts"].items()):
            host = server.state.hosts.get(name)
            used = host.reserved_used.get(code, 0) if host else 0
            out.append({"code": code, "host": name, "slots": slots, "used": used,
                        "user": entry["user"], "created": entry["created"]})
    return {"reservations": out}


def check_code(server, code):
    """HQError unless `code` names a reservation (for SUBMIT)."""
    if code not in server.state.slot_reservations:
        raise HQError(BAD_REQUEST, f"no reservation {code!r} (see 'hq-reservation -s')")
    return server.state.slot_reservations[code]["hosts"]


COMMANDS = {"reserve": _add, "unreserve": _delete, "reservations": _show}
