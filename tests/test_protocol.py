"""Protocol encode/decode and field validation (pure, no sockets)."""

import pytest

from hq import protocol as p
from hq.errors import BAD_FRAME, BAD_REQUEST, TOO_LARGE, UNKNOWN_KIND, HQError


def code_of(frames, **kw):
    with pytest.raises(HQError) as info:
        p.decode(frames, **kw)
    return info.value.code


def test_round_trip():
    frames = p.encode(p.SUBMIT, {"req": 7, "jobs": [{"command": "echo ü"}]})
    assert frames[0] == b"HQ1" and frames[1] == b"SUBMIT"
    assert p.decode(frames) == (p.SUBMIT, {"req": 7, "jobs": [{"command": "echo ü"}]})


def test_ok_and_error_replies_echo_the_request_id():
    assert p.decode(p.ok(3, ids=[1]))[1] == {"req": 3, "ids": [1]}
    kind, body = p.decode(p.error(4, "UNKNOWN_JOB", "no job 9"))
    assert kind == p.ERROR and body == {"req": 4, "code": "UNKNOWN_JOB", "message": "no job 9"}


@pytest.mark.parametrize("frames, code", [
    ([b"HQ1", b"SUBMIT"], BAD_FRAME),
    ([b"HQ1", b"SUBMIT", b"{}", b"extra"], BAD_FRAME),
    ([b"HQ2", b"SUBMIT", b"{}"], BAD_FRAME),
    ([b"HQ1", b"BOGUS", b"{}"], UNKNOWN_KIND),
    ([b"HQ1", b"SUBMIT", b"{not json"], BAD_FRAME),
    ([b"HQ1", b"SUBMIT", b"\xff\xfe"], BAD_FRAME),
    ([b"HQ1", b"SUBMIT", b"[1, 2]"], BAD_FRAME),
])
def test_bad_frames_get_stable_codes(frames, code):
    assert code_of(frames) == code


def test_oversize_body_is_refused():
    frames = p.encode(p.SUBMIT, {"req": 1, "pad": "x" * 2000})
    assert code_of(frames, max_body=1000) == TOO_LARGE


def test_kinds_are_restricted_per_receiver():
    assert code_of(p.encode(p.RUN, {"req": 1}), kinds=p.CLIENT_KINDS) == UNKNOWN_KIND


def test_field_checks_types_and_values():
    body = {"n": 3, "flag": True, "name": "x", "ids": [1, 2]}
    assert p.field(body, "n", int) == 3
    assert p.field(body, "missing", int, 5) == 5
    assert p.int_list(body, "ids") == [1, 2]
    for name, kind in (("flag", int), ("name", int), ("n", str), ("missing", int)):
        with pytest.raises(HQError) as info:
            p.field(body, name, kind)
        assert info.value.code == BAD_REQUEST
    with pytest.raises(HQError):
        p.int_list({"ids": [1, "2"]}, "ids")
    with pytest.raises(HQError):
        p.field(body, "n", int, check=lambda v: v > 10)
