"""Stable error codes shared by every hq process, and the exception that carries one.

A code never changes meaning once released; scripts may match on it.
"""

BAD_FRAME = "BAD_FRAME"              # wrong frame count, wrong protocol tag, bad JSON
TOO_LARGE = "TOO_LARGE"              # message body over the configured limit
UNKNOWN_KIND = "UNKNOWN_KIND"        # message kind this process does not serve
BAD_REQUEST = "BAD_REQUEST"          # a field is missing or has the wrong type/value
UNKNOWN_USER = "UNKNOWN_USER"        # user not in etc/users, or disabled
PERMISSION_DENIED = "PERMISSION_DENIED"  # e.g. admin command without the ADMIN role
UNKNOWN_JOB = "UNKNOWN_JOB"          # no such job id (or not yours)
UNKNOWN_HOST = "UNKNOWN_HOST"        # host not in cluster.tab / database
NO_HOST_FITS = "NO_HOST_FITS"        # the job can never run on any known host
SERVER_UNREACHABLE = "SERVER_UNREACHABLE"  # hq-server did not answer in time
USER_SERVER_UNREACHABLE = "USER_SERVER_UNREACHABLE"
DATABASE_ERROR = "DATABASE_ERROR"    # the database refused or is unreachable
CONFIG_ERROR = "CONFIG_ERROR"        # bad or missing configuration file
TIMEOUT = "TIMEOUT"                  # a wait reached its deadline
NOT_ACTIVE = "NOT_ACTIVE"            # a standby hq-server: ask the other address
BAD_USAGE = "BAD_USAGE"              # a command line a command does not accept (CLIs only)
INTERNAL = "INTERNAL"                # a bug: logged with a traceback on the server


class HQError(Exception):
    """An error with a stable code and a one-line human message."""

    def __init__(self, code, message, index=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.index = index      # for a SUBMIT: 0-based position of the job that was refused

    def __str__(self):
        return f"{self.message} [{self.code}]"
