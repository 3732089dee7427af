"""A copy of the database in a file while hq-server runs: SQLite's online backup, or mysqldump.

The copy is written beside FILE and renamed when complete (0600: it holds every user's jobs).
"""

import os
import shutil
import sqlite3
import subprocess
import tempfile

from hq.errors import CONFIG_ERROR, DATABASE_ERROR, HQError

DUMP_TOOLS = ("mysqldump", "mariadb-dump")


def backup(store, path):
    """Copy `store` to `path` (which must not exist); returns its size in bytes."""
    path = os.path.abspath(path)
    if os.path.lexists(path):
        raise HQError(DATABASE_ERROR, f"{path} exists: back up to a new file")
    part = f"{path}.part{os.getpid()}"
    try:
        os.close(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        (_sqlite if store.dialect == "sqlite" else _mysql)(store, part)
        os.replace(part, path)
    finally:
        if os.path.exists(part):
            os.unlink(part)
    return os.path.getsize(path)


def _sqlite(store, part):
    """A consistent copy page by page (WAL: the server keeps writing meanwhile), made a
    single file (rollback journal) that opens anywhere; hq-server turns WAL on again."""
    target = sqlite3.connect(part)
    try:
        with store.connection() as conn:
            conn.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.Error as exc:
        raise HQError(DATABASE_ERROR, f"backup of {store.describe()} failed: {exc}") from None
    finally:
        target.close()


def _mysql(store, part):
    """mysqldump --single-transaction: one consistent snapshot without locking InnoDB tables;
    the password goes in an option file of our own, not on the command line."""
    tool = next(filter(None, map(shutil.which, DUMP_TOOLS)), None)
    if tool is None:
        raise HQError(CONFIG_ERROR, "mysqldump not found: install the MySQL/MariaDB client "
                      "(Debian: apt-get install mariadb-client) or back up another way")
    c = store.config
    with tempfile.TemporaryDirectory(prefix="hq-backup") as tmp:
        options = os.path.join(tmp, "client.cnf")
        with open(os.open(options, os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
            handle.write(f"[client]\nuser={_quote(c.user)}\npassword={_quote(c.password)}\n"
                         f"host={_quote(c.host)}\nport={int(c.port)}\n")
        with open(part, "wb") as out:
            result = subprocess.run(
                [tool, f"--defaults-extra-file={options}", "--protocol=TCP",
                 "--single-transaction", "--quick", "--no-tablespaces",
                 "--default-character-set=utf8mb4", c.database],
                stdout=out, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        lines = result.stderr.decode(errors="replace").strip().splitlines() or ["no message"]
        raise HQError(DATABASE_ERROR, f"{os.path.basename(tool)} of {store.describe()} failed "
                      f"(exit {result.returncode}): {lines[-1][:300]}")


def _quote(value):
    """An option-file value: quoted, with backslashes and quotes escaped."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
