"""Fixtures: a database per backend (SQLite file, or a MySQL database made for this session)
and a running cluster on it. MySQL tests skip with a reason unless CI=true, where they fail."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.helpers import MYSQL, Cluster, MysqlDatabase  # noqa: E402

BACKENDS = ["sqlite", "mysql"]


@pytest.fixture(scope="session")
def mysql_database():
    try:
        database = MysqlDatabase()
    except Exception as exc:
        reason = f"MySQL at {MYSQL['host']}:{MYSQL['port']} unreachable: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: the MySQL tests must run)", pytrace=False)
        print(f"\nskipping MySQL tests: {reason}")
        pytest.skip(reason)
    yield database
    database.drop()


@pytest.fixture
def mysql_store(mysql_database):
    """A MySQL store with fresh tables (the session's test database)."""
    from hq.config import parse_db_url
    from hq.store import open_store
    store = open_store(parse_db_url(mysql_database.url))
    store.drop_tables()
    store.create_tables()
    yield store
    store.close()


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/hq.sqlite"
    request.applymarker(pytest.mark.mysql)
    return request.getfixturevalue("mysql_database").url


@pytest.fixture
def store(db_url):
    from hq.config import parse_db_url
    from hq.store import open_store
    store = open_store(parse_db_url(db_url))
    store.drop_tables()
    store.create_tables()
    yield store
    store.close()


@pytest.fixture
def cluster(db_url):
    """hq-server running on a fresh database; the user-server and agent start on first use."""
    c = Cluster(db_url)
    with c.running():
        yield c


PROCESS_WORDS = ("Cluster(", "PlayServer(", "subprocess.", "Popen(", ".running()")


def _starts_processes(module, cache={}):
    """Whether a test module starts real processes (read once from its source)."""
    path = getattr(module, "__file__", None)
    if path not in cache:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        cache[path] = any(word in text for word in PROCESS_WORDS)
    return cache[path]


def pytest_collection_modifyitems(config, items):
    """Mark `e2e` every test that starts real processes (a cluster, an agent, a command):
    `make test-fast` leaves them out; `make test` runs everything. Under pytest-xdist
    (`make test`: -n, a module's tests on one worker), the modules with `slow` tests go first,
    each in its order, so that none of them starts last while the other workers are idle."""
    for item in items:
        module = getattr(item, "module", None)
        if "cluster" in getattr(item, "fixturenames", ()) or (
                module is not None and _starts_processes(module)):
            item.add_marker(pytest.mark.e2e)
    if getattr(config.option, "numprocesses", None):
        slow = {item.path for item in items if item.get_closest_marker("slow")}
        items.sort(key=lambda item: item.path not in slow)       # stable: the order otherwise
