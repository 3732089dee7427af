# hq: `make` sets up .venv (hq installed in it) and .hqrc, `make run` starts a one-host cluster,
# `make test` tests, `make doc` builds docs/_build/html, `make sql` starts a private MariaDB,
# `sudo make cluster` a 3-host cluster in a box (network namespaces, an sshd each).
PYTHON ?= python3
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
HQ_HOME ?= $(HOME)/.hq

.PHONY: all run test test-fast mutate doc sql sql-stop sql-status cluster clean

all: $(VENV)/.installed .hqrc

# hq itself is installed editable (its console scripts land in .venv/bin); bin/ works as well.
$(VENV)/.installed: requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) tools/check_python.py $(VENV) $(CURDIR)/bin/hq-command
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -e .
	@touch $@

.hqrc: Makefile
	@printf '%s\n' '# source this file: hq commands on PATH' \
	  'export HQPATH=$(CURDIR)' 'export HQ_VE_PATH=$(VENV)' \
	  'case ":$$PATH:" in *":$(CURDIR)/bin:"*) ;; *) export PATH="$(CURDIR)/bin:$$PATH" ;; esac' > $@
	@echo "wrote .hqrc: 'source .hqrc' puts hq-submit and friends on your PATH"

run: all
	@bin/hq-dbadmin --create-tables --add-standard-entries
	@echo "hq-server starts now (Ctrl-C stops it). In another shell:"
	@echo "  source $(CURDIR)/.hqrc && hq-submit --wait echo hello && hq-client list"
	@exec bin/hq-server

# The tests run in TEST_JOBS pytest-xdist workers: most of their time is spent waiting on
# processes (heartbeats, leases, timeouts), not on the CPU. `--dist loadfile` keeps a module's
# tests on one worker: its module-scoped installation is made once, and the modules that make
# system-wide things (Unix users, network namespaces) never run twice at once.
TEST_JOBS ?= 3
test: all
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadfile

# serial: these tests use the CPU (workers would only add their start-up)
test-fast: all
	$(PY) -m pytest -m "not slow and not e2e"

# Mutation testing (mutmut, configured in pyproject.toml [tool.mutmut]) of the modules that hold
# hq's invariants, driven by their fast unit tests only; then the score per module (see
# docs/mutation.md). MUTANTS chooses (mutmut's names, globs allowed), JOBS the workers. Results
# stay in mutants/ (the run's output in mutants.log); each run checks every mutant MUTANTS names
# again (mutmut re-runs the names it is given). Needs mutmut (requirements.txt).
MUTANTS ?= 'hq.model.*' 'hq.server.scheduler.*' 'hq.server.core.*' 'hq.server.fleet.*' \
	'hq.server.handlers.x_*' 'hq.server.handlers.agent.*' 'hq.protocol.x_decode_*' \
	'hq.protocol.x__finite_*' 'hq.protocol.x__no_constant_*' 'hq.protocol.x__has_lone_surrogate_*'
JOBS ?= 2
mutate:
	@test -x $(VENV)/bin/mutmut || $(MAKE) all
	HQ_HYPOTHESIS_SCALE=0.1 $(VENV)/bin/mutmut run --max-children $(JOBS) $(MUTANTS) > mutants.log 2>&1 || (tail -20 mutants.log; false)
	@$(PY) tests/mutation_score.py

doc: all
	$(PY) -m sphinx -q -b html docs docs/_build/html
	@echo "documentation: $(CURDIR)/docs/_build/html/index.html"

# A private MariaDB in $(HQ_HOME)/mysql; SQL_ARGS="--dir DIR --port N" to choose.
sql: all
	@$(PY) tools/private_mysql.py start --dir $(HQ_HOME)/mysql $(SQL_ARGS)

sql-stop: all
	@$(PY) tools/private_mysql.py stop --dir $(HQ_HOME)/mysql $(SQL_ARGS)

sql-status: all
	@$(PY) tools/private_mysql.py status --dir $(HQ_HOME)/mysql $(SQL_ARGS)

# Three hosts (network namespaces with their own address, name and sshd) and hq-server on their
# bridge, in the foreground; Ctrl-C removes them (tools/netcluster.py down does it too).
cluster: all
	@$(PY) tools/netcluster_try.py

clean:
	rm -rf $(VENV) .hqrc .pytest_cache docs/_build
