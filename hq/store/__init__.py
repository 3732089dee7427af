"""Storage of users, hosts, jobs and their history: one interface, SQLite or MySQL behind it.

`open_store(db_config)` picks the backend; see schema.py for the tables.
"""

from hq.errors import DATABASE_ERROR, HQError


def open_store(db_config, create_database=False):
    if db_config.backend == "sqlite":
        from hq.store.sqlite import SqliteStore
        return SqliteStore(db_config.path)
    from hq.store.mysql import MysqlStore
    try:
        return MysqlStore(db_config, create_database=create_database)
    except HQError:
        raise
    except Exception as exc:  # pool construction errors from PyMySQL/DBUtils
        raise HQError(DATABASE_ERROR, f"cannot open {db_config.url}: {exc}") from None
