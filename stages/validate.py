"""validate: check the whole resolved configuration before any other stage runs.

Every stage checks params.yaml when it starts, but DVC runs a stage's command through a shell with the arm names
pasted in (`--arm <name>`), and a stage whose inputs did not change never starts. This stage depends on every key of
params.yaml, so any change runs it first, and `prepare` (upstream of every other stage) depends on its output: bad
params stop the run here, before any work and before a stage command with an unchecked name reaches the shell.

It also checks what the params ask of this environment: vLLM installed when rollout.engine=vllm.

Reads: params.yaml (every key). Writes: data/validated.json, always the same bytes, so a passing check reruns nothing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from twogrpo.config import VLLM_MISSING
from twogrpo.io import write_json
from twogrpo.run import start_stage

OUT = Path("data/validated.json")


def main() -> None:
    params = start_stage("validate")  # twogrpo.config.load_params: every rule, naming the key and value
    if params.rollout.engine == "vllm" and importlib.util.find_spec("vllm") is None:
        raise RuntimeError(VLLM_MISSING)
    write_json({"params.yaml": "valid"}, OUT)


if __name__ == "__main__":
    main()
