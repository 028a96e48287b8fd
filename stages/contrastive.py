"""contrastive: the paper's Table 2 as a panel of estimators (twogrpo.contrastive), on the base policy and on each arm's
model of the first seed at the end of training (the paper does not say which policy it measured).

Reads: models/ (base and the first seed's trained models), data/prepared/train.parquet; params `contrastive`, the
train section's rollout sampling, advantage, arms and seeds, the evaluation's decoding, `task`, `grading.reward`.
Writes: results/contrastive.json ({policies: {policy: {parameters, rows: [{estimator, column: cell}]}}}; the
report shows it).
"""

from __future__ import annotations

import logging

from twogrpo.contrastive import BOOTSTRAP, panel, sample_groups
from twogrpo.io import write_json
from twogrpo.policy import load_policy
from twogrpo.run import start_stage
from twogrpo.sampling import Sampling
from twogrpo.schemas import Problems, read_table

log = logging.getLogger("contrastive")


def main() -> None:
    params = start_stage("contrastive")
    cfg, train, decoding = params.contrastive, params.train, params.evaluate
    problems = read_table("data/prepared/train.parquet", Problems).iloc[: cfg.prompts]
    length = params.task.max_new_tokens  # both samplings: only the decoding differs
    samplings = {"train": Sampling(train.temperature, train.top_p, train.top_k, length, n=cfg.responses),
                 "eval": Sampling(decoding.temperature, decoding.top_p, decoding.top_k, length, n=cfg.responses)}
    policies = ["base", *(f"{arm}-s{train.seeds[0]}" for arm in train.arms)]
    out = {"prompts": len(problems), "responses_per_prompt": cfg.responses, "bootstrap": BOOTSTRAP, "policies": {}}
    for policy in policies:
        model, tokenizer = load_policy(f"models/{policy}")
        groups = {which: sample_groups(model, tokenizer, problems, params.task.prompt_template, sampling, cfg.seed,
                                       params.grading.reward, train.adv_std, train.adv_eps)
                  for which, sampling in samplings.items()}
        rows = panel(model, groups, cfg.shifts, cfg.seed)
        out["policies"][policy] = {"parameters": sum(p.numel() for p in model.parameters()), "rows": rows}
        score = rows[0]  # the score, as the paper writes it
        log.info("%s: %s", policy, score["not_measured"] if "not_measured" in score else
                 f"score corr {score['corr']['value']:+.3f} (permuted {score['corr']['permuted']:+.3f}), "
                 f"{score['mixed_prompts']} mixed prompts")
    write_json(out, "results/contrastive.json")


if __name__ == "__main__":
    main()
