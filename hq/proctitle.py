"""The process title that ps and top show for hq's daemons (hq-server, hq-user-server USER,
hq-exec-server USER@HOST) instead of `python -m MODULE ...`."""


def set_title(text):
    """Show `text` as this process's command line (ps -o args) and name (ps -o comm)."""
    import setproctitle
    setproctitle.setproctitle(text)
