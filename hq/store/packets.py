"""A MySQL group commit's statements, gathered and sent joined (multi-statements) in packets
that each fit the server's max_allowed_packet; a row too large for any packet is refused first.
"""

import re

from hq.errors import DATABASE_ERROR, HQError

ROWS_PER_STATEMENT = 500    # rows per multi-row INSERT or UPDATE ... CASE statement
BATCH_BYTES = 1 << 20       # statements joined into one round trip, up to about this size
PACKET_MARGIN = 16 << 10    # kept free below max_allowed_packet (command byte, headers)
_TABLE = re.compile(r"\b(?:INTO|UPDATE|FROM)\s+(\w+)", re.IGNORECASE)


class StatementTooLarge(HQError):
    """A statement over the packet bound; raised before anything of the commit is sent."""

    def __init__(self, statement, size, limit):
        match = _TABLE.search(statement[:200])
        self.table = match.group(1) if match else "?"
        super().__init__(DATABASE_ERROR, f"a row of {self.table} takes {size} bytes, more "
                         f"than MySQL's max_allowed_packet ({limit + PACKET_MARGIN} bytes) "
                         "lets one statement carry: it cannot be stored")


def text_bytes(text):
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogateescape"))


class StatementBatch:
    """A cursor for SqlStore._apply that renders each statement (PyMySQL escapes the values,
    as it does for every query) and sends them joined, in packets of at most `limit` bytes."""

    def __init__(self, cursor, max_allowed_packet):
        self.cursor = cursor
        self.limit = max_allowed_packet - PACKET_MARGIN
        self.statements = []        # (text, bytes)

    def execute(self, statement, args=()):
        self._add(self.cursor.mogrify(statement, args))

    def _add(self, text, size=None):
        size = text_bytes(text) if size is None else size
        if size > self.limit:
            raise StatementTooLarge(text, size, self.limit)
        self.statements.append((text, size))

    def executemany(self, statement, rows):
        """Multi-row INSERTs (as PyMySQL's executemany makes) cut to fit, else a statement
        a row."""
        head, values = statement.split(" VALUES ", 1) if statement.startswith(
            "INSERT") else (None, None)
        if head is None or not values.startswith("(") or not values.endswith(")"):
            for row in rows:
                self.execute(statement, row)
            return
        if values == "(" + ", ".join(["%s"] * len(rows[0])) + ")":
            rendered = self._render_rows(rows)
        else:
            rendered = [self.cursor.mogrify(values, row) for row in rows]
        self._add_inserts(f"{head} VALUES ", rendered)

    def _add_inserts(self, head, rendered):
        base = text_bytes(head)
        part, size = [], base
        for row in rendered:
            more = text_bytes(row) + 1
            if base + more > self.limit:
                raise StatementTooLarge(head, base + more, self.limit)
            if part and (len(part) == ROWS_PER_STATEMENT or size + more > self.limit):
                self._add(head + ",".join(part), size - 1)
                part, size = [], base
            part.append(row)
            size += more
        if part:
            self._add(head + ",".join(part), size - 1)

    def _render_rows(self, rows):
        """Rows as SQL tuples, each distinct value escaped once: the rows of one submission
        share most of their values (options, paths, user)."""
        mogrify, memo = self.cursor.mogrify, {}
        rendered = []
        for row in rows:
            texts = []
            for value in row:
                key = (type(value), value)
                text = memo.get(key)
                if text is None:
                    text = memo[key] = mogrify("%s", (value,))
                texts.append(text)
            rendered.append(f"({','.join(texts)})")
        return rendered

    def send(self):
        """The statements joined by ';\\n', about BATCH_BYTES a round trip, never more than
        the packet bound."""
        budget = min(BATCH_BYTES, self.limit)
        chunk, size = [], 0
        for text, length in self.statements:
            if chunk and size + length + 2 > budget:
                self._send(chunk)
                chunk, size = [], 0
            chunk.append(text)
            size += length + 2
        if chunk:
            self._send(chunk)
        self.statements = []

    def _send(self, chunk):
        self.cursor.execute(";\n".join(chunk))
        while self.cursor.nextset():
            pass
