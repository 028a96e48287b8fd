"""contrastive-base, contrastive@<arm>: the paper's Table 2 as a panel of estimators (twogrpo.contrastive), on one
policy: the base, or an arm's model of the first seed at the end of training (the paper does not say which policy it
measured).

Reads: models/<model>, data/prepared/train.parquet; params `contrastive`, the train section's rollout sampling and
advantage, the evaluation's decoding, `task`, `grading.reward`.
Writes: results/contrastive/<model>.json ({model, parameters, prompts, responses_per_prompt, bootstrap, rows:
[{estimator, column: cell}]}; the report shows them).
"""

from __future__ import annotations

import argparse
import logging

from twogrpo.contrastive import BOOTSTRAP, panel, sample_groups
from twogrpo.io import write_json
from twogrpo.policy import load_policy
from twogrpo.run import start_stage
from twogrpo.sampling import Sampling
from twogrpo.schemas import Problems, read_table

log = logging.getLogger("contrastive")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arm", help="an arm of train.arms, measured on its first seed's model (default: the base)")
    arm = parser.parse_args().arm
    params = start_stage("contrastive")
    cfg, train, decoding = params.contrastive, params.train, params.evaluate
    model_name = "base" if arm is None else f"{arm}-s{train.seeds[0]}"
    problems = read_table("data/prepared/train.parquet", Problems).iloc[: cfg.prompts]
    length = params.task.max_new_tokens  # both samplings: only the decoding differs
    samplings = {"train": Sampling(train.temperature, train.top_p, train.top_k, length, n=cfg.responses),
                 "eval": Sampling(decoding.temperature, decoding.top_p, decoding.top_k, length, n=cfg.responses)}
    model, tokenizer = load_policy(f"models/{model_name}")
    groups = {which: sample_groups(model, tokenizer, problems, params.task.prompt_template, sampling, cfg.seed,
                                   params.grading.reward, train.adv_std, train.adv_eps)
              for which, sampling in samplings.items()}
    rows = panel(model, groups, cfg.shifts, cfg.seed, rows_per_pass=cfg.rows_per_pass,
                 rollouts_per_pass=cfg.rollouts_per_pass)
    score = rows[0]  # the score, as the paper writes it
    log.info("%s: %s", model_name, score["not_measured"] if "not_measured" in score else
             f"score corr {score['corr']['value']:+.3f} (permuted {score['corr']['permuted']:+.3f}), "
             f"{score['mixed_prompts']} mixed prompts")
    write_json({"model": model_name, "parameters": sum(p.numel() for p in model.parameters()),
                "prompts": len(problems), "responses_per_prompt": cfg.responses, "bootstrap": BOOTSTRAP, "rows": rows},
               f"results/contrastive/{model_name}.json")


if __name__ == "__main__":
    main()
