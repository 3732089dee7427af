"""Warns when other users could not run hq from this installation: a Python (or checkout) inside
a home directory closed to them, such as root's /root/.pyenv. Warns only; never fails the build.

Usage: python tools/check_python.py [PATH...]   (checks this Python, its library and PATHs)
"""

import os
import stat
import sys

HINT = ("to install hq for every user: make clean && make PYTHON=/usr/bin/python3, in a "
        "directory they can read (README: \"Installing for every user\")")


def closed_to_others(path):
    """The first part of `path` that users other than its owner cannot pass, or None."""
    path = os.path.realpath(path)
    parts = [path]
    while os.path.dirname(parts[-1]) != parts[-1]:
        parts.append(os.path.dirname(parts[-1]))
    for part in reversed(parts):
        mode = os.stat(part).st_mode
        needed = stat.S_IXOTH | (stat.S_IROTH if part == path else 0)
        if mode & needed != needed:
            return part
    return None


def default_paths():
    return [sys.executable, os.path.dirname(os.__file__)]


def warning(paths):
    """The warning for the first of `paths` closed to other users, or None."""
    for path in paths:
        closed = closed_to_others(path)
        if closed:
            return (f"make: warning: other users cannot use {os.path.realpath(path)} ({closed} "
                    f"is closed to them), so this .venv works for its owner only;\n  {HINT}")
    return None


def main(argv=None):
    message = warning(default_paths() + (sys.argv[1:] if argv is None else argv))
    if message:
        print(message, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
