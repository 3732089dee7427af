"""hq-exec-server, the agent that runs jobs on a host. Needs only pyzmq and psutil."""
