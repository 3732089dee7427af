"""The user side: hq-user-server (server.py) and the starting of agents, local or over ssh
(launch.py)."""
