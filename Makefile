# iwayfailover: `make run` starts a live and a backup node on loopback from
# conf/; `make test` installs everything and runs every test.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONF ?= conf/iwayfailover.ini
PYTEST_ARGS ?=

.PHONY: install run test trial clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# A normal (not editable) install: editable installs of this flat layout can
# hide twisted/plugins from Twisted's plugin scan. Then the plugin cache is
# rebuilt so that twistd finds iway-failover at once.
install: $(BIN)/python
	$(BIN)/python -m pip install --quiet ".[test]"
	$(BIN)/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"

run: install
	@mkdir -p .run
	@echo "serv_a (live):   console http://127.0.0.1:8081/api/status"
	@echo "serv_b (backup): console http://127.0.0.1:8082/api/status"
	@echo "the web channel: http://127.0.0.1:8080/ (served by whichever node is live)"
	@echo "Ctrl-C stops both."
	@trap 'kill $$A $$B 2>/dev/null; wait' INT TERM; \
	$(BIN)/iwsrv --config $(CONF) --name serv_a --state-dir .run/serv_a & A=$$!; \
	$(BIN)/iwsrv -b --config $(CONF) --name serv_b --state-dir .run/serv_b & B=$$!; \
	wait

# Run from tests/ against the installed copy, never the source folder.
test: install
	cd tests && ../$(BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS) .

# The same tests under Twisted's trial.
trial: install
	cd tests && PYTHONPATH=. ../$(BIN)/trial $(patsubst %.py,%,$(notdir $(wildcard tests/test_*.py)))

clean:
	rm -rf $(VENV) .run build *.egg-info
