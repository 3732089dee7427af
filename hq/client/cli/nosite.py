"""Runs a command line module without `site` until an import needs it: `python -S -m
hq.client.cli.nosite MODULE ARGS...` (bin/hq-command). The fast path needs only the standard
library and hq (on PYTHONPATH), and site with its .pth files (an editable install's finder,
coverage, setuptools' shim) costs every process 10 to 40 ms.

The first import that the standard library and hq cannot satisfy (docopt, pyzmq, tqdm...)
runs `site.main()` and is tried again, so every other path works as it always did.
"""

import sys


class LoadSite:
    """The last finder on sys.meta_path: loads site once, then finds the module anew."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if cls not in sys.meta_path:
            return None
        sys.meta_path.remove(cls)
        import importlib.util
        import site
        site.main()
        sys.path_importer_cache.clear()
        return importlib.util.find_spec(name)

    @classmethod
    def invalidate_caches(cls):
        pass


def main():
    import runpy
    if not sys.flags.no_site or len(sys.argv) < 2:
        raise SystemExit("usage: python -S -m hq.client.cli.nosite MODULE [ARGS...]")
    module = sys.argv.pop(1)
    sys.argv[0] = module
    sys.meta_path.append(LoadSite)
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
