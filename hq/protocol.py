"""Wire format of every hq socket: frames, message kinds, encoding and validation.

Pure code (no sockets): a message is `[b"HQ1", KIND, BODY]`, BODY a JSON object with a `req` id.
"""

import json
import math
import re

from hq.errors import BAD_FRAME, BAD_REQUEST, TOO_LARGE, UNKNOWN_KIND, HQError

TAG = b"HQ1"
DEFAULT_MAX_BODY = 64 * 1024 * 1024
INT_LIMIT = 1 << 63                   # every integer must fit a signed 64-bit column
MAX_SCRIPT = 1 << 20                  # bytes of a job's batch script (UTF-8) in a SUBMIT
LONE_SURROGATE = re.compile(rb"\\[uU][dD][89a-fA-F]")   # cheap pre-check of `\uD800`-like

# Replies
OK = b"OK"
ERROR = b"ERROR"

# Client (via user-server) -> server
SUBMIT = b"SUBMIT"
STATUS = b"STATUS"
LIST = b"LIST"
DETAILS = b"DETAILS"
CANCEL = b"CANCEL"
HOLD = b"HOLD"
RELEASE = b"RELEASE"
ADMIN = b"ADMIN"
PING = b"PING"
HELLO = b"HELLO"          # user-server announces itself for its user
AGENTS = b"AGENTS"        # list, start or stop the user's agents (lss, invokeservers, cleanup)
UNREACHABLE = b"UNREACHABLE"  # user-server: the user's agent could not be started on a host
WATCH = b"WATCH"          # client -> user-server (not forwarded): push me ENDED and RECHECK

# Pushes (no req): server -> user-server -> the user's watching clients
ENDED = b"ENDED"          # {jobs: [[id, state, exit_code, batch], ...]}: ended in the last commit
RECHECK = b"RECHECK"      # user-server -> clients: its link to hq-server is (re)made: look again
PUSHES = frozenset({ENDED, RECHECK})

# Agent <-> server
REGISTER = b"REGISTER"    # agent -> server: host facts, jobs it still runs
HEARTBEAT = b"HEARTBEAT"  # agent -> server: metrics and running job ids
FENCED = "fenced"         # how a `finished` report's reason starts when the agent's lease expired
BYE = b"BYE"              # agent -> server: idle, may I exit? (OK {bye: true|false})
EVENTS = b"EVENTS"        # agent -> server: started/finished reports (acked)
RUN = b"RUN"              # server -> agent: assignments
KILL = b"KILL"            # server -> agent: job ids to kill
STOP = b"STOP"            # server -> agent: exit (sent only to agents without jobs)
SPAWN = b"SPAWN"          # server -> user-server: start agents on these hosts

CLIENT_KINDS = frozenset({SUBMIT, STATUS, LIST, DETAILS, CANCEL, HOLD, RELEASE, ADMIN, PING,
                          HELLO, UNREACHABLE, AGENTS})
AGENT_KINDS = frozenset({REGISTER, HEARTBEAT, EVENTS, BYE})
SERVER_KINDS = CLIENT_KINDS | AGENT_KINDS | {OK, ERROR}
ALL_KINDS = SERVER_KINDS | {RUN, KILL, STOP, SPAWN, ENDED}
USER_SERVER_KINDS = CLIENT_KINDS | {WATCH}     # what clients may send their user-server


def encode(kind, body):
    """Frames for one message (without any routing envelope)."""
    return [TAG, kind, _ENCODER.encode(body).encode()]


def encode_with_json(kind, body, **encoded):
    """Frames for a message with extra fields whose values are already JSON text (cached
    encodings of large parts that repeat, such as a batch's environment in every RUN)."""
    text = _ENCODER.encode(body)
    extra = "".join(f',"{name}":{value}' for name, value in encoded.items())
    return [TAG, kind, (text[:-1] + extra + "}" if text != "{}" else "{" + extra[1:] + "}").encode()]


def decode(frames, kinds=SERVER_KINDS, max_body=DEFAULT_MAX_BODY):
    """(kind, body) from frames, or HQError with a stable code. Never raises anything else."""
    if len(frames) != 3:
        raise HQError(BAD_FRAME, f"expected 3 frames, got {len(frames)}")
    tag, kind, raw = (bytes(f) for f in frames)
    if tag != TAG:
        raise HQError(BAD_FRAME, f"unknown protocol tag {tag[:16]!r}")
    if kind not in kinds:
        raise HQError(UNKNOWN_KIND, f"unknown message kind {kind[:32]!r}")
    if len(raw) > max_body:
        raise HQError(TOO_LARGE, f"message body of {len(raw)} bytes exceeds {max_body}")
    try:
        body = _DECODER.decode(raw.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise HQError(BAD_FRAME, f"body is not JSON: {str(exc)[:200]}") from None
    except RecursionError:
        raise HQError(BAD_FRAME, "body is nested too deeply") from None
    if not isinstance(body, dict):
        raise HQError(BAD_FRAME, "body must be a JSON object")
    if LONE_SURROGATE.search(raw) and _has_lone_surrogate(body):
        raise HQError(BAD_FRAME, "body has a string that is not valid Unicode (lone surrogate)")
    return kind, body


def _finite(text):
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:20]} is too large")
    return value


def _no_constant(name):
    raise ValueError(f"{name} is not a number hq accepts")


_ENCODER = json.JSONEncoder(separators=(",", ":"))          # made once: json.dumps and
_DECODER = json.JSONDecoder(parse_constant=_no_constant,    # json.loads with options make
                            parse_float=_finite)            # one a call


def _has_lone_surrogate(value):
    """True when a string inside `value` cannot be encoded as UTF-8 (the database needs it)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def ok(req, **fields):
    return encode(OK, {"req": req, **fields})


def request_number(body):
    """An agent's REGISTER or HEARTBEAT number `n`, as its OK repeats it (agents/lease.py
    matches each answer to its own request): {} when there is none or it is not one."""
    n = body.get("n")
    return {"n": n} if is_int(n, 0, 1 << 53) else {}


def error(req, code, message, index=None):
    body = {"req": req, "code": code, "message": message}
    if index is not None:
        body["index"] = index
    return encode(ERROR, body)


def field(body, name, kind, default=..., check=None):
    """body[name] checked to be of type `kind` (and pass `check`), else HQError BAD_REQUEST."""
    if name not in body or body[name] is None:
        if default is ...:
            raise HQError(BAD_REQUEST, f"missing field '{name}'")
        return default
    value = body[name]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise HQError(BAD_REQUEST, f"field '{name}' must be {names}")
    if isinstance(value, int) and not -INT_LIMIT <= value < INT_LIMIT:
        raise HQError(BAD_REQUEST, f"field '{name}' is out of range")
    if check is not None and not check(value):
        raise HQError(BAD_REQUEST, f"field '{name}' has a bad value: {value!r}"[:200])
    return value


def int_list(body, name, default=...):
    values = field(body, name, list, default)
    if any(not is_int(v) for v in values):
        raise HQError(BAD_REQUEST, f"field '{name}' must be a list of integers")
    return values


def is_int(value, low=-INT_LIMIT, high=INT_LIMIT):
    """An int (not a bool) with low <= value < high."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value < high


def is_number(value):
    return is_int(value) or isinstance(value, float)


# -- typed bodies ---------------------------------------------------------------------------------
INT32_LIMIT = 1 << 31
REPORT_TYPES = ("started", "finished")


class Report:
    """One event of an agent's EVENTS message: an attempt of a job started or finished.
    (A plain class: a dataclass would cost every command line the import of dataclasses.)"""
    __slots__ = ("type", "job", "attempt", "time", "started", "pid", "exit_code", "signal",
                 "max_rss", "error", "reason")
    # time: when it happened (the agent's clock); started (finished): when the attempt started;
    # error: finished without running, why ("cannot start: ..."); reason: why it ended

    def __init__(self, type, job, attempt, time=None, started=None, pid=None, exit_code=None,
                 signal=None, max_rss=None, error=None, reason=None):
        self.type, self.job, self.attempt, self.time = type, job, attempt, time
        self.started, self.pid, self.exit_code, self.signal = started, pid, exit_code, signal
        self.max_rss, self.error, self.reason = max_rss, error, reason

    def __eq__(self, other):
        return type(other) is Report and all(getattr(self, n) == getattr(other, n)
                                             for n in self.__slots__)

    def __repr__(self):
        return "Report(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__) + ")"

    @classmethod
    def parse(cls, event):
        """A report checked field by field (the database takes nothing else), or HQError."""
        if not isinstance(event, dict):
            raise HQError(BAD_REQUEST, "events must be objects")
        kind = field(event, "type", str)
        if kind not in REPORT_TYPES:
            raise HQError(BAD_REQUEST, f"unknown event type {kind[:40]!r}")
        report = cls(kind, field(event, "job", int), field(event, "attempt", int))
        for name, valid in _REPORT_FIELDS.items():
            value = event.get(name)
            if value is None:
                continue
            if not valid(value):
                raise HQError(BAD_REQUEST, f"event field '{name}' has a bad value")
            setattr(report, name, value[:255] if isinstance(value, str) else value)
        return report


def _int32(value):
    return is_int(value, -INT32_LIMIT, INT32_LIMIT)


_REPORT_FIELDS = {"time": is_number, "started": is_number, "pid": is_int, "exit_code": _int32,
                  "signal": _int32, "max_rss": is_int, "error": lambda v: isinstance(v, str),
                  "reason": lambda v: isinstance(v, str)}
