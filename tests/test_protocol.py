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


@pytest.mark.parametrize("raw", [
    b'{"a": "\\ud800"}', b'{"a": ["ok", {"b": "\\uDFFF"}]}', b'{"\\udc00": 1}',
    b'{"a": {"b": ["x", "\\ud83d"]}}',
])
def test_a_lone_surrogate_anywhere_is_a_bad_frame(raw):
    """Issue 14: catches a string that cannot be stored (lone surrogate) let through in a
    value, a key, or nested in lists and objects (mutmut found _has_lone_surrogate run by no
    fast test)."""
    assert code_of([b"HQ1", b"SUBMIT", raw]) == BAD_FRAME


def test_valid_unicode_escapes_and_numbers_pass_and_non_finite_ones_do_not():
    """Catches a surrogate pair (a valid character) refused, NaN/Infinity accepted, and a
    float too large for a double accepted as infinity (_no_constant, _finite)."""
    kind, body = p.decode([b"HQ1", b"SUBMIT", b'{"a": "\\ud83d\\ude00", "f": 1.5e300}'])
    assert body == {"a": "\U0001F600", "f": 1.5e300}
    for raw in (b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}', b'{"a": 1e999}'):
        assert code_of([b"HQ1", b"SUBMIT", raw]) == BAD_FRAME, raw
    with pytest.raises(HQError, match="is not a number hq accepts"):
        p.decode([b"HQ1", b"SUBMIT", b'{"a": NaN}'])
    with pytest.raises(HQError, match="too large"):
        p.decode([b"HQ1", b"SUBMIT", b'{"a": 1e999}'])


def test_decode_messages_name_what_is_wrong():
    """Catches the error texts and codes of decode changed or emptied (they reach the peer's
    log), and a peer's tag, kind or number quoted at more than 16, 32 or 20 characters
    (x_decode 14, 20, 39, 43, 50, 60, 61; x__finite 5)."""
    huge = b"1" + b"0" * 400 + b".0"
    cases = (([b"HQ1", b"SUBMIT"], BAD_FRAME, "expected 3 frames, got 2"),
             ([b"HQ2", b"SUBMIT", b"{}"], BAD_FRAME, "unknown protocol tag b'HQ2'"),
             ([b"T" * 40, b"SUBMIT", b"{}"], BAD_FRAME, f"unknown protocol tag {b'T' * 16!r}"),
             ([b"HQ1", b"BOGUS", b"{}"], UNKNOWN_KIND, "unknown message kind b'BOGUS'"),
             ([b"HQ1", b"K" * 60, b"{}"], UNKNOWN_KIND,
              f"unknown message kind {b'K' * 32!r}"),
             ([b"HQ1", b"SUBMIT", b"[1]"], BAD_FRAME, "body must be a JSON object"),
             ([b"HQ1", b"SUBMIT", b'{"a": ' + huge + b"}"], BAD_FRAME,
              "body is not JSON: 10000000000000000000 is too large"),
             ([b"HQ1", b"SUBMIT", b"[" * 100000], BAD_FRAME, "body is nested too deeply"),
             ([b"HQ1", b"SUBMIT", b'{"a":"\\ud800"}'], BAD_FRAME,
              "body has a string that is not valid Unicode (lone surrogate)"))
    for frames, code, text in cases:
        with pytest.raises(HQError) as info:
            p.decode(frames)
        assert (info.value.code, info.value.message) == (code, text), frames[:2]
    with pytest.raises(HQError) as info:
        p.decode([b"HQ1", b"SUBMIT", b"{x"])
    assert info.value.message.startswith("body is not JSON: Expecting property name")
    with pytest.raises(HQError) as info:
        p.decode([b"HQ1", b"SUBMIT", b"{}" + b" " * 10], max_body=11)
    assert "message body of 12 bytes exceeds 11" in str(info.value)
    assert p.decode([b"HQ1", b"SUBMIT", b"{}" + b" " * 9], max_body=11)[1] == {}
