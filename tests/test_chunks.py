"""How a streamed submission is cut into SUBMIT messages (hq-submit - and Client.submit_many):
by jobs and by bytes, so that long lines never make a message the server refuses as too large."""

import os

from hq.client.api import CHUNK_BYTES, chunked
from hq.client.cli.lines import MAX_CHUNK_BYTES, MAX_LINE, LineChunks

SERVER_DEFAULT = 64 << 20       # [server] max_message_bytes by default


def test_long_lines_make_small_chunks_and_every_line_is_kept(tmp_path):
    """Catches chunks cut by line count only: 100 lines of 0.9 MiB (each inside the 1 MiB a
    command may have) made one SUBMIT of 90 MiB, refused whole (TOO_LARGE)."""
    line = "echo " + "x" * (900 << 10)
    path = tmp_path / "input"
    path.write_text("".join(f"{line} {i}\n" for i in range(100)))
    with open(path, "rb") as handle:
        chunks = list(LineChunks(handle.fileno(), lambda text: text))
    assert [job.rsplit(" ", 1)[1] for chunk in chunks for job in chunk] == \
        [str(i) for i in range(100)]
    assert all(sum(map(len, chunk)) <= MAX_CHUNK_BYTES + MAX_LINE for chunk in chunks)
    assert max(sum(map(len, chunk)) for chunk in chunks) < SERVER_DEFAULT // 8


def test_short_lines_still_make_chunks_of_many_jobs(tmp_path):
    path = tmp_path / "input"
    path.write_text("".join(f"echo {i}\n" for i in range(20000)))
    fd = os.open(path, os.O_RDONLY)
    try:
        sizes = [len(chunk) for chunk in LineChunks(fd, lambda text: text)]
    finally:
        os.close(fd)
    assert sum(sizes) == 20000 and max(sizes) == 5000


def test_the_python_api_cuts_by_bytes_too():
    commands = ["x" * (1 << 20)] * 20 + [{"command": "y" * (1 << 20), "entry": "e"}] * 5
    chunks = list(chunked(commands, 5000))
    assert sum(len(c) for c in chunks) == 25
    assert all(len(c) == 1 or sum(len(j if isinstance(j, str) else j["command"])
                                  for j in c) <= CHUNK_BYTES for c in chunks)
    assert [len(c) for c in chunked(["true"] * 12000, 5000)] == [5000, 5000, 2000]
