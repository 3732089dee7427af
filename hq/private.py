"""$HQ_HOME's private directories and files (0700, 0600 whatever the umask): a module of its
own, without pyzmq, so that a command line starting the user-server imports little."""

import os

ALWAYS_PRIVATE = ("", "run", "log", "keys")     # made 0700 even if they exist
PRIVATE_WHEN_MADE = ("output",)                 # made 0700 when hq creates it


def private_home(home):
    """$HQ_HOME with run/, log/, keys/ and output/, private (0700) whatever the umask; an
    existing output/ keeps the mode its owner gave it."""
    for name in ALWAYS_PRIVATE + PRIVATE_WHEN_MADE:
        path = os.path.join(home, name) if name else home
        made = _mkdir(path)
        if made or name in ALWAYS_PRIVATE:
            _chmod_own(path, 0o700)
    return home


def open_private(path):
    """`path` opened to append bytes, created 0600 (logs of the user's commands and hosts)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab")


def _mkdir(path):
    """Create `path` (and missing parents) 0700; True if this call created it."""
    if os.path.isdir(path):
        return False
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return False
    return True


def _chmod_own(path, mode):
    """chmod a file or folder of ours (another user's, e.g. root reading a user's: left)."""
    try:
        info = os.stat(path)
        if info.st_uid == os.geteuid() and info.st_mode & 0o7777 != mode:
            os.chmod(path, mode)
    except OSError:
        pass
