"""The client side: the Python API (api.py, `hq.Client`) and the command lines (cli/)."""
