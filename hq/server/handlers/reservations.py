"""hq-reservation's admin commands: slots on hosts held back for the jobs of chosen users that
carry a code (`hq-submit --reservation CODE`). The owner is the requester's CURVE user.
"""

import secrets

from hq import protocol as p
from hq.errors import BAD_REQUEST, PERMISSION_DENIED, UNKNOWN_HOST, HQError

NAME_CHARS = "._-"


def _good_name(text, longest=64):
    return 0 < len(text) <= longest and all(c.isalnum() or c in NAME_CHARS for c in text)


def _add(core, peer, arg, body):
    """Reserve slots: body `hosts` [[name, slots], ...] and `users` (who may use the code,
    default the requester); replies with the new code."""
    wanted = {}
    for entry in p.field(body, "hosts", list):
        if (not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[0], str)
                or not p.is_int(entry[1], 1, 1 << 31)):
            raise HQError(BAD_REQUEST, "hosts must be [name, slots >= 1] pairs")
        name, slots = entry
        host = core.hosts.get(name)
        if host is None or not host.in_config:
            raise HQError(UNKNOWN_HOST, f"no host {name[:64]!r} in the cluster")
        wanted[name] = wanted.get(name, 0) + slots
        held = sum(host.reserved.values())
        if host.slots and held + wanted[name] > host.slots:
            raise HQError(BAD_REQUEST, f"host {name} has {host.slots} slots, {held} already "
                          f"reserved: cannot reserve {wanted[name]} more")
    if not wanted:
        raise HQError(BAD_REQUEST, "no hosts to reserve: give HOST:SLOTS")
    users = p.field(body, "users", list, []) or [peer.user]
    unknown = [u for u in users if not isinstance(u, str) or u not in core.users]
    if unknown:
        raise HQError(BAD_REQUEST, f"no user {str(unknown[0])[:64]!r} (see 'hq-admin lsusers')")
    code = arg or secrets.token_hex(4)
    if not _good_name(code):
        raise HQError(BAD_REQUEST, "a reservation code is up to 64 letters, digits, '.', '_', '-'")
    if code in core.reservations:
        raise HQError(BAD_REQUEST, f"reservation {code} exists")
    core.add_reservation(code, peer.user, users, wanted, core.now)
    return {"code": code, "hosts": wanted, "users": sorted(users)}


def _delete(core, peer, code, body):
    """Drop a reservation; its waiting jobs fail (their slots are gone), running ones finish."""
    if code not in core.reservations:
        raise HQError(BAD_REQUEST, f"no reservation {code[:64]!r} (see 'hq-reservation -s')")
    failed = core.drop_reservation(code, core.now)
    return {"code": code, "failed_jobs": [job.id for job in failed]}


def _show(core, peer, arg, body):
    """Reservations: all of them for an admin, else those the requester may use."""
    admin = "ADMIN" in core.users[peer.user]["roles"]
    out = []
    for code, entry in sorted(core.reservations.items()):
        if not admin and peer.user not in entry["users"]:
            continue
        for name, slots in sorted(entry["hosts"].items()):
            host = core.hosts.get(name)
            used = host.reserved_used.get(code, 0) if host else 0
            out.append({"code": code, "host": name, "slots": slots, "used": used,
                        "user": entry["user"], "users": sorted(entry["users"]),
                        "created": entry["created"]})
    return {"reservations": out}


def check_code(core, user, code):
    """The hosts of reservation `code` (for SUBMIT), if `user` may use it; else HQError."""
    entry = core.reservations.get(code)
    if entry is None:
        raise HQError(BAD_REQUEST, f"no reservation {code!r} (see 'hq-reservation -s')")
    if user not in entry["users"]:
        raise HQError(PERMISSION_DENIED, f"reservation {code} is not for user {user}")
    return entry["hosts"]


COMMANDS = {"reserve": _add, "unreserve": _delete, "reservations": _show}
