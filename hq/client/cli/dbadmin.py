"""hq-dbadmin: create, fill, upgrade, back up, prune and drop hq's tables (SQLite or MySQL).

Usage:
  hq-dbadmin [--drop-tables] [--create-tables] [--add-standard-entries] [--yes] [--info]
  hq-dbadmin --upgrade [--backup=FILE] [--yes]
  hq-dbadmin --backup=FILE
  hq-dbadmin --prune-before=DATE [--yes]
  hq-dbadmin (-h | --help)

Options:
  --create-tables          Create the schema (harmless when it exists).
  --add-standard-entries   Load users (etc/users) and hosts (etc/cluster.tab); make the
                           server's CURVE keypair and register your key (in $HQ_HOME/keys);
                           publish the server's public key as etc/server.key for all users.
  --drop-tables            Drop every hq table (asks first unless --yes).
  --upgrade                Bring an older hq schema (1, 2 or 3) to this hq's, in place,
                           keeping every row. Stop hq-server first. With --backup=FILE the
                           database is copied to FILE first (recommended); without it,
                           asks first unless --yes.
  --backup=FILE            Copy the database to FILE, a new file, while hq-server may run.
                           SQLite: a database file (SQLite's online backup); use it by
                           copying it back or pointing HQ_DB_URL at it. MySQL: SQL from
                           mysqldump --single-transaction; restore with mysql DB < FILE.
  --prune-before=DATE      Delete finished jobs (done, failed, cancelled, lost) that ended
                           before DATE (YYYY-MM-DD or ISO 8601, UTC unless it says), with
                           their events and the batches they leave empty, 10,000 jobs a
                           transaction (asks first unless --yes). Jobs a live job depends on
                           stay.
  --yes                    Do not ask.
  --info                   Print the database, its id, schema version and row counts.

The database is HQ_DB_URL when set, else etc/hq-db.cfg.
"""

import sys

from hq import config, security
from hq.client.cli.common import main as cli_main, usage_error
from hq.errors import HQError
from hq.store import backup, migrations, open_store
from hq.store.schema import SCHEMA_VERSION, TABLE_NAMES

PRUNE_BATCH = 10000


def confirm(question, option):
    if not sys.stdin.isatty():
        usage_error(f"{option} needs --yes when not run from a terminal")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def dbadmin(args):
    if not any(args[k] for k in ("--drop-tables", "--create-tables", "--add-standard-entries",
                                 "--info", "--upgrade", "--backup", "--prune-before")):
        usage_error("nothing to do: give --create-tables, --add-standard-entries, "
                    "--drop-tables, --upgrade, --backup, --prune-before or --info")
    before = parse_date(args["--prune-before"]) if args["--prune-before"] else None
    etc = config.etc_dir()
    store = open_store(config.load_db_config(etc), create_database=args["--create-tables"])
    try:
        if args["--upgrade"]:
            return upgrade(store, args["--backup"], args["--yes"])
        if args["--backup"]:
            make_backup(store, args["--backup"])
        if before is not None:
            return prune(store, before, args["--yes"])
        return tables(store, args, etc)
    finally:
        store.close()


def tables(store, args, etc):
    if args["--drop-tables"]:
        if not args["--yes"] and not confirm(f"Drop every hq table in {store.describe()}?",
                                             "--drop-tables"):
            print("nothing dropped")
            return 1
        store.drop_tables()
        print(f"dropped the hq tables in {store.describe()}")
    if args["--create-tables"]:
        store.create_tables()
        print(f"tables ready in {store.describe()}")
    if args["--add-standard-entries"]:
        add_standard_entries(store, etc)
    if args["--info"]:
        info(store)
    return 0


def add_standard_entries(store, etc):
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


def info(store):
    version = store.schema_version()
    print(f"database        {store.describe()}")
    print(f"database id     {store.database_id() if version else None}")
    print(f"schema version  {version} (this hq: {SCHEMA_VERSION})")
    for table in TABLE_NAMES:
        try:
            count = store.query(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"]
        except HQError:
            count = "missing"
        print(f"{table:<15} {count}")


def upgrade(store, backup_file, yes):
    version = store.schema_version()
    problem = migrations.version_problem(version, store.describe(), upgrading=True)
    if problem:
        raise problem
    if version == SCHEMA_VERSION:
        print(f"schema version {version} in {store.describe()} is current: nothing to upgrade")
        return 0
    if backup_file:
        make_backup(store, backup_file)
    elif not yes and not confirm(f"Upgrade {store.describe()} from schema {version} to "
                                 f"{SCHEMA_VERSION} without a backup (see --backup)?",
                                 "--upgrade without --backup=FILE"):
        print("nothing upgraded")
        return 1
    start, end = migrations.upgrade(store, say=lambda text: print(text, flush=True))
    print(f"upgraded {store.describe()} from schema {start} to {end}")
    return 0


def make_backup(store, path):
    size = backup.backup(store, path)
    print(f"backed up {store.describe()} to {path} ({size:,} bytes)", flush=True)


def prune(store, before, yes):
    from hq.jobview import iso
    store.check_schema()
    if not yes and not confirm(f"Delete the jobs of {store.describe()} that ended before "
                               f"{iso(before)}?", "--prune-before"):
        print("nothing deleted")
        return 1
    total = {"jobs": 0, "job_events": 0, "batches": 0, "kept": 0}
    after = 0
    while True:
        counts = store.prune_finished(before, PRUNE_BATCH, after_id=after)
        for key in total:
            total[key] += counts[key]
        after = counts["last_id"]
        if counts["scanned"] < PRUNE_BATCH:
            break
        print(f"... {total['jobs']:,} jobs deleted so far", flush=True)
    print(f"deleted {total['jobs']:,} jobs, {total['job_events']:,} job events and "
          f"{total['batches']:,} batches that ended before {iso(before)}"
          + (f"; kept {total['kept']:,} that live jobs depend on" if total["kept"] else ""))
    return 0


def parse_date(text):
    """Seconds since the epoch from YYYY-MM-DD or ISO 8601 (UTC unless an offset is given)."""
    from datetime import datetime, timezone
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        usage_error(f"--prune-before: {text!r} is not a date (YYYY-MM-DD or ISO 8601)")
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def main(argv=None):
    return cli_main("hq-dbadmin", __doc__, dbadmin, argv)


if __name__ == "__main__":
    sys.exit(main())
