"""Shared test inputs."""

from twogrpo.config import ChainSumConfig, PrepareConfig


def chain_sums(seed: int, train_size: int, n_test: int, max_terms: int = 2, max_digits: int = 1) -> PrepareConfig:
    """The embedded task's prepare section at a small size (2 to max_terms terms of 1 to max_digits digits)."""
    return PrepareConfig(seed=seed, train_set="chain_sum", train_size=train_size, benchmarks=("chain_sum",),
                         local_root="", sources={},
                         chain_sum=ChainSumConfig(n_test=n_test, min_terms=2, max_terms=max_terms, min_digits=1,
                                                  max_digits=max_digits))
