"""Logging set-up shared by hq's long-running processes: one line per event, level by name,
user text escaped (hq/text.py: control characters and newlines cannot forge lines).

The caller's file and line, thread and process ids are not gathered (the format uses none of
them): the logging HOWTO's optimisations, worth it at one line per job.
"""

import logging

from hq.text import escape_logs

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup(level, filename=None):
    """Log at `level` (DEBUG, INFO, WARNING or ERROR; else INFO) to `filename` or stderr."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), filename=filename,
                        format=FORMAT)
    escape_logs()       # text from users (commands, host names, reasons) stays on one line
