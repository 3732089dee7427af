"""The process tree from /proc: a process's children (the kernel's list, no scan of every
process), its CPU time, its descendants."""

import os


def stat(pid):
    """(utime + stime + cutime + cstime in ticks, threads; 0 for a zombie) of a process, or
    None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    used = sum(int(v) for v in fields[11:15])
    return used, 0 if fields[0] in (b"Z", b"X") else int(fields[17])   # a zombie: no children


def children(pid, threads=1):
    """Child pids of a process (of its main thread only, if it has one thread)."""
    if threads < 1:
        return []
    tasks = [str(pid)]
    if threads > 1:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return []
    found = []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", "rb") as handle:
                found.extend(int(v) for v in handle.read().split())
        except OSError:
            pass
    return found


def descendants(pid):
    """Every live process descended from `pid` (parents before their children)."""
    found, pending, seen = [], children(pid, _threads(pid)), {pid}
    while pending:
        child = pending.pop()
        if child in seen:
            continue
        seen.add(child)
        found.append(child)
        pending.extend(children(child, _threads(child)))
    return found


def _threads(pid):
    info = stat(pid)
    return info[1] if info else 0
