"""Command lines of hq (docopt), each a thin layer over hq.client."""
