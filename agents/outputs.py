"""Why a failed job's output could not be written: its output file's file system is full.
Looked at only for jobs that failed, so a job that ends well costs nothing here."""

import os

FULL_BYTES = 1 << 20     # less free space than this (or a thousandth of the file system) is full


def output_trouble(spec):
    """`output: <cause>: <path>` when an output file of the job is on a full file system."""
    for field in ("stdout", "stderr"):
        path = os.path.join(spec["cwd"], spec[field])
        if path.startswith("/dev/"):
            continue
        try:
            fs = os.statvfs(path)
        except (OSError, ValueError, TypeError):
            continue
        free = (fs.f_bfree if os.geteuid() == 0 else fs.f_bavail) * fs.f_frsize
        if free < max(fs.f_frsize, min(FULL_BYTES, fs.f_blocks * fs.f_frsize // 1000)):
            return f"output: No space left on device: {path}"
    return None
