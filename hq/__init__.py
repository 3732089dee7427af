"""hq: a job scheduler for Unix clusters its users do not administer.

`from hq import Client` is the Python API; the rest is imported on demand.
"""

__version__ = "0.1.0"


def __getattr__(name):
    if name == "Client":
        from hq.client.api import Client
        return Client
    raise AttributeError(name)
