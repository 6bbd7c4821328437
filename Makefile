# iwayfailover: `make run` starts a live and a backup node on loopback from
# conf/; `make test` installs everything and runs every test.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONF ?= conf/iwayfailover.ini
PYTEST_ARGS ?=
# From Debian: ip (network namespaces for the partition test), keepalived (the
# comparison benchmark), stress-ng (CPU saturation for the false-takeover benchmark),
# openssl (conf/make-certs.sh, and its test), chromium and chromium-driver (the
# console's real-browser test), iputils-arping, ndisc6 and procps (the floating
# IP's duplicate address check and announcement: IPv4 arping; IPv6 ndisc6, and
# sysctl for ndisc_notify), libfaketime (steps of a node's wall clock, for the
# test that its heartbeats do not depend on it), nftables (resets and silent
# drops between namespaces, for the partition regression tests), etcd-server
# (etcd and etcdctl: the real etcd clusters of the etcd coordinator's tests;
# Debian starts a system etcd on 2379, which is disabled as keepalived is),
# prometheus (promtool: the alert rules in conf/prometheus are checked and
# tested; its own server is disabled too), systemd (systemd-analyze verify of
# the unit in conf/systemd).
DEBIAN_PACKAGES := iproute2 keepalived stress-ng openssl chromium chromium-driver iputils-arping ndisc6 procps libfaketime nftables etcd-server prometheus systemd

.PHONY: install system-packages run run-group run-tls pair-free group-free test trial bench simulate screenshots docs clean
# One target at a time, even under -j: the guards of run and run-group must
# refuse before the install they would otherwise race.
.NOTPARALLEL:

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# A normal (not editable) install: editable installs of this flat layout can
# hide twisted/plugins from Twisted's plugin scan. Then the plugin cache is
# rebuilt so that twistd finds iway-failover at once.
define INSTALL_PACKAGE
$(BIN)/python -m pip install --quiet ".[test]"
$(BIN)/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
touch $(INSTALLED)
endef

# The targets that use the venv depend on this stamp: the package is installed
# again only when the stamp is older than setup.cfg or a file of the package
# (so a `make run` never rewrites the copy a running pair was started from
# unless the source changed). `make install` installs in any case.
INSTALLED := $(VENV)/.installed
PACKAGE_FILES := $(wildcard setup.cfg pyproject.toml twisted/plugins/*.py) \
	$(shell find iwayfailover -type f ! -path '*/__pycache__/*' ! -name '*.pyc' 2>/dev/null)
$(INSTALLED): $(BIN)/python $(PACKAGE_FILES)
	$(INSTALL_PACKAGE)

install: $(BIN)/python
	$(INSTALL_PACKAGE)

# Installed when missing, as root with apt-get (as on CI); elsewhere the tests
# that need them say why they skip.
system-packages:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		missing=""; \
		for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
		if [ -n "$$missing" ]; then \
			echo "installing Debian packages:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
			systemctl disable --now keepalived >/dev/null 2>&1 || true; \
			systemctl disable --now etcd >/dev/null 2>&1 || true; \
			systemctl disable --now prometheus >/dev/null 2>&1 || true; \
		fi; \
	else \
		echo "not root or no apt-get: not installing $(DEBIAN_PACKAGES)"; \
	fi

# The heartbeat key of the example pair: made once, never committed.
conf/failover.key: | $(INSTALLED)
	$(BIN)/iwsrv keygen $@

# The example consoles' user: ops, with a random password kept in
# conf/console-password (mode 0600); made once, never committed.
conf/console-users: | $(INSTALLED)
	@umask 077; password=$$($(BIN)/python -c "import secrets; print(secrets.token_urlsafe(12))"); \
	printf '%s\n' "$$password" > conf/console-password; \
	printf '%s\n' "$$password" | $(BIN)/iwsrv adduser $@ ops --password-stdin >/dev/null; \
	echo "made the console user ops; its password is in conf/console-password"

# Certificates of the example TLS pair (conf/tls.ini): made once, never committed.
conf/tls/serv_a.crt:
	conf/make-certs.sh conf/tls serv_a=DNS:localhost,IP:127.0.0.1 serv_b=DNS:localhost,IP:127.0.0.1

# The example pair with mutual-TLS heartbeat links.
run-tls: conf/tls/serv_a.crt
	$(MAKE) -f $(firstword $(MAKEFILE_LIST)) run CONF=conf/tls.ini

# Before anything is installed or started, `make run` refuses (one line, exit 1)
# when a pair already runs: a .run/NAME.pid naming a running process of NAME, or
# a port of $(CONF) taken (each server's heartbeat port and console, each plugin
# listener's --listen/--port), named with what holds it. A run removes only the
# pid files it wrote.
run: pair-free $(INSTALLED) conf/failover.key conf/console-users
	@$(BIN)/python -c "$(PAIR_PORTS_FREE)" '$(CONF)'
	@echo "serv_a (live):   console http://127.0.0.1:8081/ (status API: /api/status)"
	@echo "serv_b (backup): console http://127.0.0.1:8082/"
	@echo "console login:   ops / $$(cat conf/console-password)"
	@echo "the web channel: http://127.0.0.1:8080/ (served by whichever node is live)"
	@echo "a killed node comes back, as the backup (-b), its pid in .run/NAME.pid, with:"
	@$(call bring_back,serv_a,$(CONF))
	@$(call bring_back,serv_b,$(CONF))
	@echo "Ctrl-C stops both (not a node brought back by hand)."
	@trap 'kill $$A $$B 2>/dev/null; wait $$A $$B 2>/dev/null; $(call pid_forget,serv_a,$$A); $(call pid_forget,serv_b,$$B); exit 0' INT TERM; \
	$(BIN)/iwsrv --config $(CONF) --name serv_a --state-dir .run/serv_a & A=$$!; echo $$A > .run/serv_a.pid; \
	$(BIN)/iwsrv -b --config $(CONF) --name serv_b --state-dir .run/serv_b & B=$$!; echo $$B > .run/serv_b.pid; \
	status=0; wait $$A || status=$$?; wait $$B || status=$$?; \
	$(call pid_forget,serv_a,$$A); $(call pid_forget,serv_b,$$B); exit $$status

# run's guard, before the install: the pid files, and the ports when the venv
# is installed (its parser reads them; with no venv, no pair runs from it, and
# run checks the ports once it is installed).
pair-free:
	@mkdir -p .run
	@$(call pids_free,serv_a serv_b,run)
	@if [ -e $(INSTALLED) ]; then $(BIN)/python -c "$(PAIR_PORTS_FREE)" '$(CONF)' guard; fi

# $(call pids_free,NAMES,TARGET): exit 1 with one line when .run/NAME.pid names a
# running process whose command line mentions NAME (a pid reused since by
# another program does not count).
pids_free = for n in $(1); do \
	pid=$$(cat .run/$$n.pid 2>/dev/null); \
	if [ -n "$$pid" ] && kill -0 "$$pid" 2>/dev/null \
		&& { [ ! -r /proc/$$pid/cmdline ] || tr '\0' ' ' </proc/$$pid/cmdline | grep -q -e "$$n"; }; then \
		echo "make $(2): $$n runs already (pid $$pid, in .run/$$n.pid): stop it first (Ctrl-C in the terminal of its make $(2), or kill $$pid)" >&2; \
		exit 1; \
	fi; \
	done
# $(call pid_forget,NAME,PID): remove .run/NAME.pid if it still holds PID (this run wrote it).
pid_forget = if [ "$$(cat .run/$(1).pid 2>/dev/null)" = "$(2)" ]; then rm -f .run/$(1).pid; fi
# $(call bring_back,NAME,CONFIG): print the line that starts NAME again as a backup,
# in the foreground (Ctrl-C stops it), its pid in .run/NAME.pid (sh's, which becomes the node).
bring_back = echo "  sh -c 'echo \$$\$$ > .run/$(1).pid; exec $(BIN)/iwsrv -b --config $(2) --name $(1) --state-dir .run/$(1)'"
# Python: busy(PORTS) names those of the (host, port) pairs something listens
# on, each with the process that holds it where ss (iproute2) can tell.
PORTS_BUSY = import re, shutil, socket, subprocess, sys; \
held = lambda p: re.findall(r'\"([^\"]*)\",pid=([0-9]+)', subprocess.run(['ss', '-Hltnp', f'sport = :{p}'], capture_output=True, text=True).stdout) if shutil.which('ss') else []; \
busy = lambda ports: [f'{h} port {p}' + ''.join(f' (held by {n}, pid {i})' for n, i in held(p)[:1]) for h, p in ports if socket.socket().connect_ex((h, p)) == 0]
# The ports of the pair in the file given as argument, read by iwayfailover's parser;
# exit 1 naming those something already listens on. With a second argument, guard,
# a file that does not read (its key not made yet, say) passes: run's own check,
# after the key is made, names what is wrong with it.
PAIR_PORTS_FREE = $(PORTS_BUSY); import os; \
sys.excepthook = lambda kind, e, tb: os._exit(0) if sys.argv[2:] == ['guard'] else print(f'make run: {e}', file=sys.stderr); \
from iwayfailover.config import read_config, endpoint_port, endpoint_interface, console_endpoint_string; \
c = read_config(sys.argv[1]); \
ends = [s.heartbeat_endpoint for s in c.servers.values()] + [console_endpoint_string(s.console) for s in c.servers.values() if s.console]; \
ends += [b for l in c.listeners.values() for a, b in zip(l.args, l.args[1:]) if a in ('--listen', '--port', '-p')]; \
found = busy(sorted({(endpoint_interface(e) or '127.0.0.1', endpoint_port(e)) for e in ends if endpoint_port(e)})); \
found and sys.exit('make run: something already listens on ' + ', '.join(found) + ' (from ' + sys.argv[1] + '): is a pair (or a node started by hand) running already? Stop it first')

# The example group of three on a one-member etcd on loopback (conf/group.ini):
# etcd's data in .run/etcd, each member's state in .run/NAME. Refused first, as run is.
# The etcd port conf/group.ini names.
ETCD_PORT := 23790
GROUP_PIDS_FORGET = $(call pid_forget,alpha,$$A); $(call pid_forget,beta,$$B); $(call pid_forget,gamma,$$G); $(call pid_forget,etcd,$$E)
run-group: group-free $(INSTALLED) conf/console-users
	@command -v etcd >/dev/null || $(MAKE) --no-print-directory -f $(firstword $(MAKEFILE_LIST)) system-packages DEBIAN_PACKAGES=etcd-server
	@command -v etcd >/dev/null || { echo "run-group needs etcd (Debian: apt-get install etcd-server)"; exit 1; }
	@echo "etcd:               http://127.0.0.1:$(ETCD_PORT) (data in .run/etcd, log in .run/etcd.log)"
	@echo "alpha, beta, gamma: consoles http://127.0.0.1:8091/, :8092/, :8093/ (status API: /api/status); pids in .run/NAME.pid"
	@echo "console login:      ops / $$(cat conf/console-password)"
	@echo "the web channel:    http://127.0.0.1:8090/ (served by whichever member is live)"
	@echo "a killed member comes back, as a backup (-b), its pid in .run/NAME.pid, with:"
	@$(call bring_back,alpha,conf/group.ini)
	@$(call bring_back,beta,conf/group.ini)
	@$(call bring_back,gamma,conf/group.ini)
	@echo "Ctrl-C stops them all (not a member brought back by hand)."
	@trap 'kill $$A $$B $$G 2>/dev/null; wait $$A $$B $$G 2>/dev/null; kill $$E 2>/dev/null; wait $$E 2>/dev/null; $(GROUP_PIDS_FORGET); exit 0' INT TERM; \
	setsid etcd --name run-group --data-dir .run/etcd --listen-client-urls http://127.0.0.1:$(ETCD_PORT) \
		--advertise-client-urls http://127.0.0.1:$(ETCD_PORT) --listen-peer-urls http://127.0.0.1:$$(($(ETCD_PORT)+1)) \
		--initial-advertise-peer-urls http://127.0.0.1:$$(($(ETCD_PORT)+1)) \
		--initial-cluster run-group=http://127.0.0.1:$$(($(ETCD_PORT)+1)) --log-level warn >.run/etcd.log 2>&1 & E=$$!; echo $$E > .run/etcd.pid; \
	for i in $$(seq 50); do $(BIN)/python -c "import socket, sys; sys.exit(socket.socket().connect_ex(('127.0.0.1', $(ETCD_PORT))))" && break; sleep 0.2; done; \
	$(BIN)/iwsrv --config conf/group.ini --name alpha --state-dir .run/alpha & A=$$!; echo $$A > .run/alpha.pid; \
	$(BIN)/iwsrv -b --config conf/group.ini --name beta --state-dir .run/beta & B=$$!; echo $$B > .run/beta.pid; \
	$(BIN)/iwsrv -b --config conf/group.ini --name gamma --state-dir .run/gamma & G=$$!; echo $$G > .run/gamma.pid; \
	status=0; wait $$A || status=$$?; wait $$B || status=$$?; wait $$G || status=$$?; \
	kill $$E 2>/dev/null; wait $$E 2>/dev/null; $(GROUP_PIDS_FORGET); exit $$status

# run-group's guard, before the install (only Python's standard library needed).
group-free:
	@mkdir -p .run
	@$(call pids_free,etcd alpha beta gamma,run-group)
	@$(PYTHON) -c "$(PORTS_BUSY); found = busy([('127.0.0.1', p) for p in ($(ETCD_PORT), 8090, 8091, 8092, 8093)]); found and sys.exit('make run-group: something already listens on ' + ', '.join(found) + ': is a group (or a member started by hand) running already? Stop it first')"

# Run from tests/ against the installed copy, never the source folder.
test: $(INSTALLED) system-packages
	cd tests && ../$(BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS) .

# Every benchmark in its quick mode (a few minutes); see docs/benchmarks.md for the full runs.
bench: $(INSTALLED) system-packages
	$(BIN)/python bench/takeover.py --quick
	$(BIN)/python bench/false_takeover.py --quick --pulses on --steady on
	$(BIN)/python bench/cost.py --quick
	$(BIN)/python bench/keepalived.py --quick
	$(BIN)/python bench/group_takeover.py --quick

# The decision core of two nodes in simulated time, invariants checked after
# every event: make simulate [SEEDS=N] [SEED=S] [PLANT=NAME]; GROUP=1 [MEMBERS=3..5]
# for a group on a simulated etcd (see docs/safety.md).
SEEDS ?= 2000
simulate: $(INSTALLED)
	cd tests && ../$(BIN)/python -m sim --seeds $(SEEDS) $(if $(SEED),--seed $(SEED)) $(if $(PLANT),--plant $(PLANT)) $(if $(GROUP),--group) $(if $(MEMBERS),--members $(MEMBERS))

# The console's screenshots in docs/, taken by the real-browser test.
screenshots: $(INSTALLED) system-packages
	cd tests && IWAY_CONSOLE_SCREENSHOTS=$(CURDIR)/docs ../$(BIN)/python -m pytest -p no:cacheprovider -q test_browser.py

# The key reference docs/configuration.md, written from the table of keys
# (iwayfailover/config/schema.py); a test fails while it is out of date.
docs: $(INSTALLED)
	$(BIN)/python -m iwayfailover.config.reference > docs/configuration.md

# The same tests under Twisted's trial.
trial: $(INSTALLED)
	cd tests && PYTHONPATH=. ../$(BIN)/trial $(patsubst %.py,%,$(notdir $(wildcard tests/test_*.py)))

clean:
	rm -rf $(VENV) .run build *.egg-info
