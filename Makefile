# The two commands of the README:
#   make demo   set up and run the demo (embedded NATS, pipelines, UI)
#   make test   set up and run the whole test suite
.PHONY: demo test setup setup-test proto proto-check typecheck bench bench-chaos bench-tape bench-replay bench-curves lint clean

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

# The shipped tape through the whole path beside the peers, 2 browser tabs (bench/README.md).
bench-replay: setup-test
	.venv/bin/xypipe bench replay --tabs 2

# Scaling curves: ingest 1k -> 100k ticks/s, clients 10 -> 1,000, gateway workers 1 and 2.
bench-curves: setup-test
	.venv/bin/xypipe bench curves

# Each fault of the chaos suite 20 times: recovery p50/p95/max (long: tens of minutes).
bench-chaos: setup-test
	.venv/bin/python bench/chaos.py

# The tape shipped in bench/data/ (docs/tapes.md): 2 s of the demo market, seed 1. The same
# command writes the same bytes.
BENCH_TAPE = .venv/bin/xypipe tape make --to bench/data/demo-market.tape --seed 1 --rate 4000 \
	--duration 2 --symbols 500 --duplicate 0.001 --reorder 0.001
bench-tape: setup-test
	$(BENCH_TAPE)

lint: setup
	.venv/bin/ruff check xypipe tests bench stages scripts
	.venv/bin/mypy

clean:
	rm -rf .venv node_modules var
