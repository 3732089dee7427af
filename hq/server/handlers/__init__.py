"""Handlers of hq-server messages: functions of (core, peer, body) that change the core and return
the reply fields (or DEFERRED: the reply follows the commit); every other send goes through the
core's outbox. `handle` routes one decoded message; nothing here touches a socket.
"""

from dataclasses import dataclass

from hq import protocol as p
from hq.errors import PERMISSION_DENIED, UNKNOWN_USER, HQError
from hq.server.handlers import admin, agent, submit, user

DEFERRED = submit.DEFERRED
READ_KINDS = frozenset({p.STATUS, p.LIST, p.DETAILS, p.PING, p.HELLO, p.AGENTS})  # record nothing

USER_REQUESTS = {
    p.SUBMIT: submit.submit, p.STATUS: user.status, p.LIST: user.list_jobs,
    p.DETAILS: user.details, p.CANCEL: user.cancel, p.HOLD: user.hold, p.RELEASE: user.release,
    p.ADMIN: admin.admin, p.AGENTS: user.agents, p.UNREACHABLE: user.unreachable,
    p.HELLO: user.hello, p.PING: user.ping,
}
AGENT_REQUESTS = {p.REGISTER: agent.register, p.HEARTBEAT: agent.heartbeat,
                  p.EVENTS: agent.events, p.BYE: agent.bye}


@dataclass(frozen=True, slots=True)
class Peer:
    """Who sent a message: its routing identity and the user of its CURVE key."""
    identity: bytes
    user: str


def handle(core, peer, kind, body):
    """Handle one message; the reply goes to the outbox (sent after the commit). A reply that
    records nothing (a heartbeat's, a read's) leaves at once: it waits for no commit, renews an
    agent's lease (fencing) even while the database is out, and answers a status query while a
    long turn is still reading."""
    req = body.get("req")
    if kind in AGENT_REQUESTS:
        reply = AGENT_REQUESTS[kind](core, peer, body)
        if kind == p.HEARTBEAT:
            core.outbox.send_now(peer.identity, p.ok(req, **reply))
        else:
            core.outbox.send_frames(peer.identity, p.OK, p.ok(req, **reply))
        return
    if kind in (p.OK, p.ERROR):
        return
    known = core.users.get(peer.user)
    if known is None:
        raise HQError(UNKNOWN_USER, f"user {peer.user!r} is not registered in etc/users")
    if kind == p.SUBMIT and not known["enabled"]:
        raise HQError(PERMISSION_DENIED, f"user {peer.user!r} is disabled: no new jobs "
                      "(an admin can 'hq-admin enableuser:NAME')")
    reply = USER_REQUESTS[kind](core, peer, body)
    if reply is DEFERRED:
        return
    if kind in READ_KINDS or (kind == p.ADMIN and admin.is_read_only(body)):
        core.outbox.send_now(peer.identity, p.ok(req, **reply))   # waits for no commit
    else:
        core.outbox.reply(peer.identity, req, reply)
