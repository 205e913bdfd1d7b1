# podnet: the two commands a new user needs are `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
INVENTORY ?= inventory/lab
MYPY_SCRIPT_DIRS := tests verify bench
PLAYBOOK := $(BIN)/ansible-playbook -i $(INVENTORY)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(BIN):$(PATH)
# Root only where it is needed: the lab (network namespaces, mounts, containers) and the apt
# packages it and the root-only unit tests use. lint, unit and plan need only the venv, and so
# do converge, verify, shell and exec on real VMs (INVENTORY=...) run as another user.
IS_ROOT := $(filter 0,$(shell id -u))
HOSTS_SETUP := $(if $(IS_ROOT),setup,venv)

.PHONY: help setup venv host-packages lab-image lab-up lab-down lab-status node-off plan converge verify verify-quick conformance report trace shell exec demo test lint unit molecule routed bench clean-cache

help:
	@echo "make demo   - setup + lab-up + converge + verify: the whole demo on the local lab"
	@echo "make test   - lint + unit tests + molecule test + the routed lab (own labs, torn down)"
	@echo "make setup | lab-up | lab-down | lab-status | plan | converge | verify | bench | lint | unit"
	@echo "make lint, unit and plan run as any user (make venv); the lab targets need root"
	@echo "make converge TAGS=workloads - after a manifest change: only pods, Services and DNS"
	@echo "make verify-quick - one proof per principle (tests marked quick), under 2 minutes"
	@echo "make conformance - the [sig-network] conformance tests mirrored on the lab, and their table"
	@echo "make node-off HOST=node3 - pull a lab node's plug (make lab-up boots it again)"
	@echo "make shell HOST=node1 - a shell on a host; make exec POD=ns/name CMD='ip addr' - in a pod"
	@echo "make report - reports/verify.html again from the last make verify; make trace FROM=ns/pod TO=ns/svc:port"
	@echo "INVENTORY=path picks another inventory (default inventory/lab)"

setup: host-packages venv

host-packages:
	@echo "==> host-packages: the apt packages of the lab and of the unit tests that need root"
	@scripts/setup.sh host

# as root the venv comes after the apt packages, as make setup always did it: a fresh Debian
# has no python3-venv; any other user gets the venv alone
venv: $(if $(IS_ROOT),host-packages)
	@echo "==> venv: the Python venv in $(VENV)"
	@scripts/setup.sh venv

# The host images and package mirrors alone (cached; lab-up builds them too when missing)
lab-image: setup
	@echo "==> lab-image: build or reuse the lab's host images and package mirrors"
	$(PLAYBOOK) playbooks/lab-up.yml --tags lab_preflight,lab_image

lab-up: setup
	@echo "==> lab-up: build or reuse the host images and mirrors, boot the VM-shaped lab hosts"
	$(PLAYBOOK) playbooks/lab-up.yml

lab-down: setup
	@echo "==> lab-down: remove every process, mount, namespace, key and file of the lab"
	$(PLAYBOOK) playbooks/lab-down.yml

lab-status: setup
	@echo "==> lab-status: what the lab has on this machine"
	$(PLAYBOOK) playbooks/lab-status.yml

# A node's power cut (docs/node-failure.md): its disk stays, make lab-up boots it again
node-off: setup
	@test -n "$(HOST)" || { echo "make node-off: set HOST, like make node-off HOST=node3" >&2; exit 2; }
	@echo "==> node-off: pull the plug of $(HOST) (make lab-up powers it on)"
	$(BIN)/python -m podnet lab poweroff -i $(INVENTORY) --hard $(HOST)

plan: venv
	@echo "==> plan: validate $(INVENTORY) and its manifests, print the cluster plan"
	$(BIN)/python -m podnet plan -i $(INVENTORY)

converge: $(HOSTS_SETUP)
	@echo "==> converge: playbooks/site.yml on $(INVENTORY)"
	$(PLAYBOOK) playbooks/site.yml $(if $(TAGS),--tags $(TAGS))

# INVENTORY picks the hosts the suites prove (verify/conftest.py reads PODNET_INVENTORY). The run
# ends with its results by principle, and writes reports/verify.xml (JUnit, each test with its
# principle, hosts and evidence), reports/verify.html (podnet/verifyreport.py) and, when a test
# failed, reports/verify-bundle/ (each host's networking state and journals)
verify: $(HOSTS_SETUP)
	@echo "==> verify: the testinfra suites on $(INVENTORY), reports in reports/"
	@mkdir -p reports
	PODNET_INVENTORY=$(INVENTORY) $(BIN)/pytest -c verify/pytest.ini verify \
		--junitxml=reports/verify.xml

# Kubernetes' [sig-network] conformance tests mirrored on the lab (docs/conformance.md), then the
# table with each one's result (python -m podnet conformance reads the run's JUnit XML)
conformance: $(HOSTS_SETUP)
	@echo "==> conformance: the mirrored [sig-network] conformance tests on $(INVENTORY)"
	@mkdir -p reports
	@rm -f reports/conformance.xml
	PODNET_INVENTORY=$(INVENTORY) $(BIN)/pytest -c verify/pytest.ini verify/test_conformance.py \
		--junitxml=reports/conformance.xml; rc=$$?; \
		test -f reports/conformance.xml || exit $$rc; \
		$(BIN)/python -m podnet conformance --junit reports/conformance.xml && exit $$rc

# reports/verify.html rendered again from the last run's reports/verify.xml and
# reports/verify.state.json (JUNIT= another run's, e.g. reports/molecule-verify.xml)
JUNIT ?= reports/verify.xml
report: venv
	@echo "==> report: render $(basename $(JUNIT)).html from $(JUNIT)"
	$(BIN)/python -m podnet report --junit $(JUNIT)

# One packet's path on the live cluster: the rules, routes and NAT it meets (podnet/trace.py)
trace: $(HOSTS_SETUP)
	@test -n "$(FROM)" -a -n "$(TO)" || { echo "make trace: set FROM and TO, like make trace FROM=other/client TO=demo/web:http" >&2; exit 2; }
	@$(BIN)/python -m podnet trace -i $(INVENTORY) --from $(FROM) --to $(TO)

# One proof per principle (the tests marked quick in verify/), never a suite that changes the
# lab (the lifecycle suites). pytest -c verify/pytest.ini verify -m <principle> runs one principle.
verify-quick: $(HOSTS_SETUP)
	@echo "==> verify-quick: one proof per principle on the lab, report in reports/verify-quick.xml"
	@mkdir -p reports
	PODNET_INVENTORY=$(INVENTORY) $(BIN)/pytest -c verify/pytest.ini verify \
		-m "quick and not changes_lab" --junitxml=reports/verify-quick.xml

# A way in like kubectl's: ssh exactly as Ansible does (PODNET_LAB picks the lab), and a
# command in a pod's network namespace on its node (podnet/access.py)
shell: $(HOSTS_SETUP)
	@$(BIN)/python -m podnet shell -i $(INVENTORY) $(HOST)

exec: $(HOSTS_SETUP)
	@$(BIN)/python -m podnet exec -i $(INVENTORY) $(POD) -- $(CMD)

demo: setup lab-up converge verify
	@echo "==> demo: done; 'make lab-down' removes the lab"

lint: venv
	@echo "==> lint: yamllint, ansible-lint (production profile), ruff, mypy"
	$(BIN)/yamllint -s .
	$(BIN)/ansible-lint
	$(BIN)/ruff check .
	$(BIN)/mypy
	@# tests/, verify/ and bench/ import their helpers as top-level modules, and tests/ and
	@# verify/ both have a conftest: one mypy run per folder, with the folder on mypy's path
	for d in $(MYPY_SCRIPT_DIRS); do MYPYPATH=$$d $(BIN)/mypy $$d || exit 1; done

# As root every test must run (PODNET_NO_SKIPS makes a skip a failure) over the 90% coverage
# floor. As another user the tests that need root (network namespaces, the lab) skip, pytest
# lists each as SKIPPED with its reason, and the run says it was not the whole suite.
# The tests run on UNIT_WORKERS pytest-xdist workers (auto: one per CPU; 0 runs them in this
# one process), each test file whole on one worker, so the tests of a file that share something
# fixed (test_lab_lifecycle's lab podnet-t) never run at once; tests/conftest.py puts the lab
# tests, the slowest file, first. Coverage adds up every worker and the node tools they run.
UNIT_WORKERS ?= auto
UNIT_PYTEST = PYTHONPATH=$(CURDIR)/tests/coverage_hook$(if $(PYTHONPATH),:$(PYTHONPATH)) \
	PODNET_COVERAGE_SITE="$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
	$(BIN)/pytest tests -ra -n $(UNIT_WORKERS) --dist loadfile --no-loadscope-reorder \
	--cov --cov-report=term
unit: venv
ifeq ($(IS_ROOT),)
	@echo "==> unit: pytest tests/ as $$(id -un), not root: tests that need root skip (SKIPPED below)"
	$(UNIT_PYTEST)
	@echo "==> unit: passed, but not every test ran: the SKIPPED ones above need root; make unit"
	@echo "    as root runs all of them, fails on any skip and holds the 90% coverage floor"
else
	@echo "==> unit: pytest tests/"
	PODNET_NO_SKIPS=1 $(UNIT_PYTEST) --cov-fail-under=90
endif

# then its verify report, looked at in headless Chromium: no console error, nothing fetched, the
# cluster picture drawn, every principle's row (podnet/browser.py; screenshot next to it)
molecule: setup
	@echo "==> molecule test -s vms: create VM-shaped hosts, converge, idempotence, verify, reset, destroy"
	@rm -rf reports/molecule-verify*
	$(BIN)/molecule test -s vms
	$(BIN)/python -m podnet report --junit reports/molecule-verify.xml --check

# the routed lab (a node behind a router) with the backends that cross it: vxlan, then bgp
routed: setup
	@echo "==> routed: inventory/lab-routed with vxlan and bgp: converge, idempotence, suites"
	@scripts/routed-suites.sh

test: lint unit molecule routed
	@echo "==> test: lint, unit tests, molecule test and the routed lab all passed"

bench: setup
	@echo "==> bench: benchmarks in bench/ (later issues add to it)"
	@for b in bench/*.py; do [ -e "$$b" ] || continue; echo "--- $$b"; $(BIN)/python "$$b"; done

clean-cache:
	@echo "==> clean-cache: remove the cached lab images and package mirrors in /var/cache/podnet"
	rm -rf /var/cache/podnet/images /var/cache/podnet/mirrors
