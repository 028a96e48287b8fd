"""The study's setups, composed with Hydra from conf/ exactly as `dvc exp run -S setup=<name>` composes params.yaml.

`python -m tools.setups <name> [override ...] [--gpus N --gpu-memory GiB]` prints a setup's resolved params and what
follows from them (prompts per mini-batch and learning rate of each arm, steps, rollouts) and, for a GPU setup, its
plan (twogrpo.plan: memory per GPU and phase; twogrpo.hours: hours per arm), without running anything.
`python -m tools.setups --time-ratios` prints every Table 1 setup's planned 2-GRPO / 16-GRPO time ratio beside the
paper's.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import pandas as pd
import yaml

from twogrpo import hours
from twogrpo.config import Params, load_params
from twogrpo.mathdata import check_text_file

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def setup_names() -> list[str]:
    return sorted(p.stem for p in (CONF / "setup").glob("*.yaml"))


def compose_to(path: Path, overrides: list[str] = ()) -> None:
    """Write the params.yaml that `dvc exp run -S <override> ...` would write to `path` (DVC's own composition and
    format)."""
    from dvc.utils.hydra import compose_and_dump

    with tempfile.TemporaryDirectory() as plugins, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The version_base parameter is deprecated")
        compose_and_dump(path, str(CONF), None, "config", plugins, list(overrides))


def check_conf_text(conf: Path = CONF) -> None:
    """Every YAML file of conf/ must be UTF-8: otherwise name the file, line and column before Hydra reads it (its
    own error names neither)."""
    for path in sorted(conf.rglob("*.yaml")):
        if path.read_bytes().strip():
            check_text_file("conf", path)


def compose(overrides: list[str] = ()) -> tuple[dict, Params]:
    """The params.yaml that `dvc exp run -S <override> ...` would write, as a mapping and as validated Params."""
    check_conf_text()
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


def time_ratios(prompt_tokens: float = hours.MEAN_PROMPT_TOKENS,
                response_tokens: float = hours.MEAN_RESPONSE_TOKENS) -> str:
    """A markdown table: each Table 1 setup's planned hours of 16-GRPO and 2-GRPO on its GPUs and their ratio, beside
    the paper's (v2 Table 1)."""
    paper = pd.read_csv(ROOT / "data" / "paper" / "tables.csv")
    paper = paper[(paper["source"] == "v2 Table 1") & (paper["metric"] == "train_hours")]
    lines = ["| setup | GPUs | planned hours 16-GRPO / 2-GRPO | planned ratio | paper's hours | paper's ratio |",
             "|---|---|---|---|---|---|"]
    for name in setup_names():
        params = compose([f"setup={name}"])[1]
        report = params.report
        if not report.paper_model or name.startswith("ablation"):
            continue
        gpus = params.runtime.gpus
        planned = hours.hours_by_group_size(params, gpus, prompt_tokens, response_tokens)
        rows = paper[(paper["model"] == report.paper_model) & (paper["train_set"] == report.paper_train_set)]
        measured = {g: float(rows.loc[rows["arm"] == f"{g}-GRPO", "value"].iloc[0]) for g in (2, 16)}
        lines.append(f"| `{name}` | {gpus} | {planned[16]:.2f} / {planned[2]:.2f} | {planned[2] / planned[16]:.3f} | "
                     f"{measured[16]:.2f} / {measured[2]:.2f} | {measured[2] / measured[16]:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("setup", choices=setup_names(), nargs="?")
    parser.add_argument("--time-ratios", action="store_true",
                        help="instead: every Table 1 setup's planned 2/16 time ratio beside the paper's")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as given to dvc exp run -S")
    parser.add_argument("--gpus", type=int, help="plan for this many GPUs (default: the setup's runtime.gpus)")
    parser.add_argument("--gpu-memory", type=float, default=141.0, help="GiB per GPU (default 141: an H200)")
    parser.add_argument("--prompt-tokens", type=float, default=hours.MEAN_PROMPT_TOKENS, help="mean, for the hours")
    parser.add_argument("--response-tokens", type=float, default=hours.MEAN_RESPONSE_TOKENS, help="mean, for the hours")
    args = parser.parse_args()
    if args.time_ratios:
        print(time_ratios(args.prompt_tokens, args.response_tokens))
        return
    if args.setup is None:
        parser.error("name a setup, or --time-ratios")
    raw, params = compose([f"setup={args.setup}", *args.overrides])
    print(yaml.safe_dump(raw, sort_keys=False, width=120), end="")
    print("# " + describe(params).replace("\n", "\n# "))
    gpus = args.gpus or params.runtime.gpus
    if gpus:
        text = hours.describe_plan(params, gpus, args.gpu_memory, args.prompt_tokens, args.response_tokens)
        print("# " + text.replace("\n", "\n# "))


if __name__ == "__main__":
    main()
