"""The study's setups, composed with Hydra from conf/ exactly as `dvc exp run -S setup=<name>` composes params.yaml.

`python -m tools.setups <name> [override ...] [--gpus N --gpu-memory GiB]` prints a setup's resolved params and what
follows from them (prompts per mini-batch and learning rate of each arm, steps, rollouts) and, for a GPU setup, its
plan (twogrpo.plan: memory per GPU and phase, hours per arm), without running anything.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import yaml

from twogrpo import plan
from twogrpo.config import Params, load_params

CONF = Path(__file__).resolve().parents[1] / "conf"


def setup_names() -> list[str]:
    return sorted(p.stem for p in (CONF / "setup").glob("*.yaml"))


def compose_to(path: Path, overrides: list[str] = ()) -> None:
    """Write the params.yaml that `dvc exp run -S <override> ...` would write to `path` (DVC's own composition and
    format)."""
    from dvc.utils.hydra import compose_and_dump

    with tempfile.TemporaryDirectory() as plugins, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The version_base parameter is deprecated")
        compose_and_dump(path, str(CONF), None, "config", plugins, list(overrides))


def compose(overrides: list[str] = ()) -> tuple[dict, Params]:
    """The params.yaml that `dvc exp run -S <override> ...` would write, as a mapping and as validated Params."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "params.yaml"
        compose_to(out, overrides)
        return yaml.safe_load(out.read_text()), load_params(out)


def describe(params: Params) -> str:
    """What the params imply, arm by arm (the paper's v2 App. C.1: mini-batch, updates per step and lr of each arm)."""
    t = params.train
    lines = [f"base model {params.base.model}; train set {params.prepare.train_set} ({params.prepare.train_size}); "
             f"benchmarks {', '.join(params.prepare.benchmarks)}",
             f"{t.steps_per_epoch} generation steps of {t.generation_batch_prompts} prompts per epoch (of "
             f"{t.prompts} problems, reshuffled every epoch) x {t.epochs} "
             f"epochs; responses up to {params.task.max_new_tokens} tokens "
             f"(evaluation {params.evaluate.max_new_tokens})"]
    for name, arm in t.arms.items():
        q = t.prompts_per_minibatch(arm)
        lines.append(f"  {name}: G={arm.group_size}, {q} prompts x {arm.group_size} = {q * arm.group_size} "
                     f"rollouts per mini-batch, {t.generation_batch_prompts // q} updates per step, lr {t.lr(arm):.3g}"
                     f"{', resampling' if arm.resample else ''}; "
                     f"{t.prompts_per_epoch * t.epochs * arm.group_size:,} rollouts")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("setup", choices=setup_names())
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as given to dvc exp run -S")
    parser.add_argument("--gpus", type=int, help="plan for this many GPUs (default: the setup's runtime.gpus)")
    parser.add_argument("--gpu-memory", type=float, default=141.0, help="GiB per GPU (default 141: an H200)")
    parser.add_argument("--prompt-tokens", type=float, default=plan.MEAN_PROMPT_TOKENS, help="mean, for the hours")
    parser.add_argument("--response-tokens", type=float, default=plan.MEAN_RESPONSE_TOKENS, help="mean, for the hours")
    args = parser.parse_args()
    raw, params = compose([f"setup={args.setup}", *args.overrides])
    print(yaml.safe_dump(raw, sort_keys=False, width=120), end="")
    print("# " + describe(params).replace("\n", "\n# "))
    gpus = args.gpus or params.runtime.gpus
    if gpus:
        text = plan.describe_plan(params, gpus, args.gpu_memory, args.prompt_tokens, args.response_tokens)
        print("# " + text.replace("\n", "\n# "))


if __name__ == "__main__":
    main()
