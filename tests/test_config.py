"""Configuration files and environment overrides: good input parses, bad input names the file."""

import pytest

from hq import config
from hq.errors import CONFIG_ERROR, HQError


def write(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    return str(tmp_path)


def test_cluster_tab_columns(tmp_path):
    etc = write(tmp_path, "cluster.tab",
                "# comment\nnode1\t8\tgpu,big\tnode1.lab:2222\nnode2\t-\t-\t-\tinactive\n\n")
    hosts = config.load_cluster(etc)
    assert [(h.name, h.max_slots, h.groups, h.address, h.state) for h in hosts] == [
        ("node1", 8, ("gpu", "big"), "node1.lab:2222", "active"),
        ("node2", 0, (), "node2", "inactive")]


@pytest.mark.parametrize("text, words", [
    ("node1\teight\n", "line 1: max slots"),
    ("a\t1\nb\t2\na\t3\n", "line 3: host 'a' listed twice"),
    ("a\t1\t-\t-\tbroken\n", "state must be active or inactive"),
])
def test_bad_cluster_tab_names_file_and_line(tmp_path, text, words):
    etc = write(tmp_path, "cluster.tab", text)
    with pytest.raises(HQError) as info:
        config.load_cluster(etc)
    assert info.value.code == CONFIG_ERROR
    assert "cluster.tab" in info.value.message and words in info.value.message


def test_users_file(tmp_path):
    etc = write(tmp_path, "users", "alice USER\nbob USER,ADMIN  # boss\ncarol\n")
    assert config.load_users(etc) == [("alice", ["USER"]), ("bob", ["USER", "ADMIN"]),
                                      ("carol", ["USER"])]
    etc = write(tmp_path, "users", "dave ROOT\n")
    with pytest.raises(HQError, match="users line 1: unknown role 'ROOT'"):
        config.load_users(etc)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(HQError, match="cluster.tab: No such file"):
        config.load_cluster(str(tmp_path))


def test_settings_and_server_override(tmp_path, monkeypatch):
    etc = write(tmp_path, "hq.cfg", "[server]\nport = 2000\nheartbeat_s = 0.5\n")
    monkeypatch.delenv("HQ_SERVER", raising=False)
    s = config.load_settings(etc)
    assert (s.port, s.heartbeat_s, s.server_address) == (2000, 0.5, "tcp://localhost:2000")
    monkeypatch.setenv("HQ_SERVER", "tcp://10.1.2.3:4000")
    s = config.load_settings(etc)
    assert (s.server_host, s.port) == ("10.1.2.3", 4000)
    monkeypatch.setenv("HQ_SERVER", "nonsense")
    with pytest.raises(HQError, match="HQ_SERVER"):
        config.load_settings(etc)
    monkeypatch.delenv("HQ_SERVER")
    etc = write(tmp_path, "hq.cfg", "[server]\nport = many\n")
    with pytest.raises(HQError, match=r"hq.cfg: \[server\] port must be a int"):
        config.load_settings(etc)
    etc = write(tmp_path, "hq.cfg", "[server]\ncommit_interval_s = 5\n")
    with pytest.raises(HQError, match=r"commit_interval_s must be between 0 and 1"):
        config.load_settings(etc)
    assert config.load_settings(write(tmp_path, "hq.cfg", "[server]\ncommit_interval_s = 0\n")
                                ).commit_interval_s == 0
    for threads in (0, 65):
        etc = write(tmp_path, "hq.cfg", f"[server]\nio_threads = {threads}\n")
        with pytest.raises(HQError, match=rf"io_threads must be between 1 and 64, not {threads}"):
            config.load_settings(etc)


def test_several_server_addresses_and_standby_settings(tmp_path, monkeypatch):
    """Catches a second address dropped (clients could not follow a standby), and a server
    lease the agents' lease cannot outlast (every takeover would kill the running jobs)."""
    monkeypatch.delenv("HQ_SERVER", raising=False)
    s = config.load_settings(write(tmp_path, "hq.cfg", "[server]\nhost = a, b\nport = 7\n"))
    assert s.server_addresses == ["tcp://a:7", "tcp://b:7"] and not s.standby
    monkeypatch.setenv("HQ_SERVER", "tcp://x:1,tcp://y:2")
    assert config.load_settings(str(tmp_path)).server_addresses == ["tcp://x:1", "tcp://y:2"]
    monkeypatch.setenv("HQ_SERVER", "tcp://x:1,y")
    with pytest.raises(HQError, match="HQ_SERVER"):
        config.load_settings(str(tmp_path))
    monkeypatch.delenv("HQ_SERVER")
    s = config.load_settings(write(tmp_path, "hq.cfg", "[server]\nstandby = yes\n"))
    assert s.standby and s.server_lease_s == 5 and s.agent_lease_s == 11
    with pytest.raises(HQError, match=r"server_lease_s \(9.5s\) must be at least 2 s shorter"):
        config.load_settings(write(tmp_path, "hq.cfg", "[server]\nstandby = yes\n"
                                   "server_lease_s = 9.5\n"))


def test_database_urls(tmp_path, monkeypatch):
    assert config.parse_db_url("sqlite:////tmp/x.db").path == "/tmp/x.db"
    my = config.parse_db_url("mysql://hq:s%40cret@db.lab:3307/jobs")
    assert (my.user, my.password, my.host, my.port, my.database) == \
        ("hq", "s@cret", "db.lab", 3307, "jobs")
    for bad in ("postgres://x/y", "mysql://host:1/", "sqlite://"):
        with pytest.raises(HQError):
            config.parse_db_url(bad)
    monkeypatch.delenv("HQ_DB_URL", raising=False)
    monkeypatch.setenv("HQ_HOME", str(tmp_path / "home"))
    etc = write(tmp_path, "hq-db.cfg", "[database]\nbackend = sqlite\npath = db/hq.sqlite\n")
    assert config.load_db_config(etc).path == str(tmp_path / "home" / "db" / "hq.sqlite")
    etc = write(tmp_path, "hq-db.cfg", "[database]\nbackend = oracle\n")
    with pytest.raises(HQError, match="backend must be sqlite or mysql"):
        config.load_db_config(etc)


def test_local_addresses():
    assert config.is_local_address("localhost") and config.is_local_address("127.0.0.1")
    assert not config.is_local_address("node17.example.org")
