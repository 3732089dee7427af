"""Reads the input of a streamed submission (standard input or a file) as chunks of jobs,
one per line, remembering each chunk's line numbers so that an error can name its line."""

import os
import select

from hq.errors import BAD_REQUEST, HQError

FIRST_CHUNK = 256         # small, so that the first jobs start at once
MAX_CHUNK = 5000
MAX_CHUNK_BYTES = 4 << 20 # and at most this much text: long lines make smaller chunks, each far
                          # below the server's max_message_bytes (64 MiB by default)
IDLE_S = 0.2              # a chunk is sent when the input pauses this long
MAX_LINE = 1 << 20        # the server's limit on a command
READ_BYTES = 1 << 16


class LineChunks:
    """Iterate over lists of jobs made by `make_job(text)` from the non-blank lines of `fd`
    that do not start with '#'. `lines[n]` holds the line numbers of chunk n until `forget(n)`."""

    def __init__(self, fd, make_job, idle_s=IDLE_S):
        self.fd = fd
        self.make_job = make_job
        self.idle_s = idle_s
        self.lines = {}
        self.count = 0            # chunks made
        self.line_number = 0

    def __iter__(self):
        size, jobs, numbers, volume = FIRST_CHUNK, [], [], 0
        for number, raw in self._raw_lines():
            text = self._check(number, raw)
            if text is not None and jobs and volume + len(text) > MAX_CHUNK_BYTES:
                yield self._chunk(jobs, numbers)
                jobs, numbers, volume = [], [], 0
            if text is not None:
                jobs.append(self.make_job(text))
                numbers.append(number)
                volume += len(text)
            if jobs and (len(jobs) >= size or (number is None)):
                yield self._chunk(jobs, numbers)
                size, jobs, numbers, volume = min(MAX_CHUNK, size * 4), [], [], 0
        if jobs:
            yield self._chunk(jobs, numbers)

    def _chunk(self, jobs, numbers):
        self.lines[self.count] = numbers
        self.count += 1
        return jobs

    def forget(self, chunk):
        self.lines.pop(chunk, None)

    def _raw_lines(self):
        """(line number, bytes) of each line; (None, None) when the input pauses."""
        pending = b""
        while True:
            if not _readable(self.fd, self.idle_s):
                yield None, None
                _readable(self.fd, None)
            data = os.read(self.fd, READ_BYTES)
            if not data:
                break
            pending += data
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                self.line_number += 1
                yield self.line_number, raw
            if len(pending) > MAX_LINE:
                self.line_number += 1
                self._fail(self.line_number, f"longer than {MAX_LINE} bytes")
        if pending:
            self.line_number += 1
            yield self.line_number, pending

    def _check(self, number, raw):
        """The line's text, or None for blank and comment lines (and pauses)."""
        if raw is None:
            return None
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            self._fail(number, "not valid UTF-8")
        if not text or text.startswith("#"):
            return None
        if "\0" in text:
            self._fail(number, "contains a NUL character")
        if len(text) > MAX_LINE:
            self._fail(number, f"longer than {MAX_LINE} bytes")
        return text

    def _fail(self, number, why):
        raise HQError(BAD_REQUEST, f"line {number}: {why}")


def _readable(fd, timeout):
    ready, _, _ = select.select([fd], [], [], timeout)
    return bool(ready)
