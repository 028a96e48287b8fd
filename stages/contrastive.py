"""contrastive: the paper's Table 2 on the base policy, the covariance of positive and negative rollout gradients.

Reads: models/base/, data/prepared/train.parquet; params `contrastive`, `train` (rollout sampling), `task`,
`grading.reward` (which rollouts are positive).
Writes: metrics/contrastive.json (same-prompt and permuted covariances and correlations; DVC shows it).
"""

from __future__ import annotations

from twogrpo.contrastive import TooFewMixedPrompts, gradient_covariance
from twogrpo.io import write_json
from twogrpo.policy import load_policy
from twogrpo.run import start_stage
from twogrpo.sampling import Sampling
from twogrpo.schemas import Problems, read_table


def main() -> None:
    params = start_stage("contrastive")
    cfg, train = params.contrastive, params.train
    model, tokenizer = load_policy("models/base")
    problems = read_table("data/prepared/train.parquet", Problems).iloc[: cfg.prompts]
    sampling = Sampling(train.temperature, train.top_p, train.top_k, params.task.max_new_tokens, n=cfg.responses)
    try:
        result = gradient_covariance(model, tokenizer, problems, params.task.prompt_template, sampling, cfg.seed,
                                     cfg.permutations, params.grading.reward)
    except TooFewMixedPrompts as err:  # a base model that solves nothing (a dry run's random model): say so
        result = {"not_measured": str(err)}
    write_json(result, "metrics/contrastive.json")


if __name__ == "__main__":
    main()
