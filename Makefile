# The two commands of the README:
#   make demo   set up and run the demo (embedded NATS, pipelines, UI)
#   make test   set up and run the whole test suite
.PHONY: demo test setup setup-test proto proto-check typecheck bench bench-chaos lint clean

# Quiet recipes: the first line `make demo` prints is the address of the page to open.
demo: setup
	@.venv/bin/xypipe demo configs/demo.toml

test: setup-test
	bash scripts/test.sh

setup:
	@bash scripts/setup.sh

setup-test:
	bash scripts/setup.sh --test

proto: setup-test
	.venv/bin/xypipe dev proto

proto-check: setup-test
	.venv/bin/xypipe dev proto --check

# tsc --strict --noEmit over contracts/ts, the browser client and the README example (part of
# `make test`); `.venv/bin/python scripts/typecheck.py --write` refreshes ui-static/types/.
typecheck: setup-test
	.venv/bin/python scripts/typecheck.py

bench: setup-test
	.venv/bin/python bench/bridge.py
	.venv/bin/python bench/aggregator.py
	.venv/bin/python bench/fanout.py

# Each fault of the chaos suite 20 times: recovery p50/p95/max (long: tens of minutes).
bench-chaos: setup-test
	.venv/bin/python bench/chaos.py

lint: setup
	.venv/bin/ruff check xypipe tests bench stages scripts
	.venv/bin/mypy

clean:
	rm -rf .venv node_modules var
