"""What a database holds, read from its catalogue: tables, columns, indexes (SQLite or MySQL).

Migrations ask before they change anything, so a step re-run after a crash skips what is done.
"""


def tables(cur, dialect):
    if dialect == "sqlite":
        cur.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        cur.execute("SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = DATABASE()")
    return {row[0] for row in cur.fetchall()}


def columns(cur, dialect, table):
    """{column: (type, not null)} of a table ({} when there is no such table)."""
    if dialect == "sqlite":
        cur.execute(f"PRAGMA table_info({table})")
        return {row[1]: (row[2].upper(), bool(row[3] or row[5])) for row in cur.fetchall()}
    cur.execute("SELECT column_name, column_type, is_nullable FROM information_schema.columns "
                "WHERE table_schema = DATABASE() AND table_name = %s", (table,))
    return {row[0]: (_mysql_type(row[1]), row[2] == "NO") for row in cur.fetchall()}


def indexes(cur, dialect, table):
    """{index name: columns} of a table, primary keys left out."""
    if dialect == "sqlite":
        cur.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
                    "AND sql IS NOT NULL", (table,))
        names = [row[0] for row in cur.fetchall()]
        found = {}
        for name in names:
            cur.execute(f"PRAGMA index_info({name})")
            found[name] = tuple(row[2] for row in sorted(cur.fetchall()))
        return found
    cur.execute("SELECT index_name, column_name FROM information_schema.statistics "
                "WHERE table_schema = DATABASE() AND table_name = %s AND index_name <> 'PRIMARY' "
                "ORDER BY index_name, seq_in_index", (table,))
    found = {}
    for name, column in cur.fetchall():
        found[name] = found.get(name, ()) + (column,)
    return found


def shape(cur, dialect):
    """{table: (columns, indexes)} of every table: what two databases compare on."""
    return {t: (columns(cur, dialect, t), indexes(cur, dialect, t))
            for t in sorted(tables(cur, dialect)) if not t.startswith("sqlite_")}


def _mysql_type(column_type):
    """'int(11)' and 'int' alike (MySQL 8 dropped display widths)."""
    base = column_type.split("(")[0] if column_type.startswith(("int", "bigint")) else column_type
    return base.upper()
