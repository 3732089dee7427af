"""hq-dbadmin: create, fill and drop hq's tables (SQLite by default, or MySQL).

Usage:
  hq-dbadmin [--drop-tables] [--create-tables] [--add-standard-entries] [--yes] [--info]
  hq-dbadmin (-h | --help)

Options:
  --create-tables          Create the schema (harmless when it exists).
  --add-standard-entries   Load users (etc/users) and hosts (etc/cluster.tab); make the
                           server's CURVE keypair and register your key (in $HQ_HOME/keys);
                           publish the server's public key as etc/server.key for all users.
  --drop-tables            Drop every hq table (asks first unless --yes).
  --yes                    Do not ask.
  --info                   Print the database, schema version and row counts.

The database is HQ_DB_URL when set, else etc/hq-db.cfg.
"""

import sys

from hq import config, security
from hq.client.cli.common import main as cli_main, usage_error
from hq.errors import HQError
from hq.store import open_store
from hq.store.schema import TABLE_NAMES


def confirm(store):
    if not sys.stdin.isatty():
        usage_error("--drop-tables needs --yes when not run from a terminal")
    answer = input(f"Drop every hq table in {store.describe()}? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def dbadmin(args):
    if not any(args[k] for k in ("--drop-tables", "--create-tables", "--add-standard-entries",
                                 "--info")):
        usage_error("nothing to do: give --create-tables, --add-standard-entries, "
                    "--drop-tables or --info")
    etc = config.etc_dir()
    store = open_store(config.load_db_config(etc), create_database=args["--create-tables"])
    if args["--drop-tables"]:
        if not args["--yes"] and not confirm(store):
            print("nothing dropped")
            return 1
        store.drop_tables()
        print(f"dropped the hq tables in {store.describe()}")
    if args["--create-tables"]:
        store.create_tables()
        print(f"tables ready in {store.describe()}")
    if args["--add-standard-entries"]:
        store.check_schema()
        users = config.load_users(etc)
        hosts = config.load_cluster(etc)
        store.add_users(users + [(config.current_user(), ["USER", "ADMIN"])])
        store.add_hosts(hosts)
        home = config.home_dir()
        published = security.register_local_user(
            store, home, config.current_user(), etc,
            warn=lambda why: print(f"hq-dbadmin: warning: {why}", file=sys.stderr))
        print(f"{len(users)} users and {len(hosts)} hosts from {etc} loaded; server key "
              f"{published or security.cert_paths(home, security.SERVER_CERT)[0]}")
    if args["--info"]:
        print(f"database        {store.describe()}")
        print(f"schema version  {store.schema_version()}")
        for table in TABLE_NAMES:
            try:
                count = store.query(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"]
            except HQError:
                count = "missing"
            print(f"{table:<15} {count}")
    store.close()
    return 0


def main(argv=None):
    return cli_main("hq-dbadmin", __doc__, dbadmin, argv)


if __name__ == "__main__":
    sys.exit(main())
