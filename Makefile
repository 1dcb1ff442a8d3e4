# Every target creates the virtual environment it needs from pyproject.toml.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo run test lint typecheck proto proto-check buf-lint bench-submit bench-audio bench-reconcile buf-breaking clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

## The main job: a local stack (nats-server, gateway, worker) dubs examples/transcript.json.
demo: venv
	$(BIN)/dubbing-stack demo --transcript examples/transcript.json --to fr --output out/demo.wav

## The stack in the foreground; Ctrl-C stops all of it.
run: venv
	$(BIN)/dubbing-stack run

## The test suite (unit, integration over real gRPC + nats-server, end to end, faults).
test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy libs services tests bench

PROTO_INCLUDES := -Iproto -Ithird_party/proto
proto: venv
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m grpc_tools.protoc $(PROTO_INCLUDES) \
	  --python_out=libs --mypy_out=libs --grpc_python_out=libs --mypy_grpc_out=libs \
	  proto/dubbing/v1/*.proto

## Fails when the committed generated code differs from what proto/ generates.
proto-check: proto
	git diff --exit-code -- libs/dubbing/v1 || (echo "generated code drifted from proto/: run make proto" && exit 1)
	@test -z "$$(git status --porcelain -- libs/dubbing/v1)" || (git status --porcelain -- libs/dubbing/v1; echo "untracked generated files: run make proto and commit" && exit 1)

buf-lint: venv
	$(BIN)/buf lint

## Fails when proto/ changes incompatibly (buf's FILE rules) against the published API:
## the commit named in .ci/api-baseline. Move it forward deliberately, and only then.
buf-breaking: venv
	$(BIN)/buf breaking --against ".git#ref=$$(cat .ci/api-baseline)"

bench-submit: venv
	$(BIN)/python -m bench.submit_bench

## The audio path on a generated 90-minute, 1,500-segment transcript against the mp3
## encode-alone floor and a process per segment; peak RSS on 3 hours (~10 minutes).
bench-audio: venv
	$(BIN)/python -m bench.audio_bench

## What one reconciler round costs on an idle and on a busy database (~1 minute).
bench-reconcile: venv
	$(BIN)/python -m bench.reconcile_bench

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
