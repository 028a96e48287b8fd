"""Checkpoint fingerprints: a checkpoint resumes only under the same settings and code."""

from twogrpo import checkpoint


def test_a_fingerprint_covers_settings_and_code(tmp_path, monkeypatch):
    assert checkpoint.fingerprint({"a": 1}) == checkpoint.fingerprint({"a": 1}) != checkpoint.fingerprint({"a": 2})
    (tmp_path / "twogrpo").mkdir()
    (tmp_path / "twogrpo" / "x.py").write_text("code = 1\n")
    monkeypatch.setattr(checkpoint, "CODE", tmp_path)
    before = checkpoint.fingerprint({"a": 1})
    (tmp_path / "twogrpo" / "x.py").write_text("code = 2\n")  # a changed module: the old checkpoint is not resumed
    assert checkpoint.fingerprint({"a": 1}) != before


def test_a_smaller_micro_batch_resumes_the_checkpoint_of_a_run_that_ran_out_of_memory():
    from dataclasses import replace

    from tests.test_trainer import TRAIN

    def key(cfg):
        return checkpoint.fingerprint(cfg.result_settings)

    assert key(replace(TRAIN, micro_batch_tokens=16384)) == key(replace(TRAIN, micro_batch_tokens=4096)) \
        == key(replace(TRAIN, micro_batch_rollouts=2, gradient_checkpointing=True, checkpoint_every=5))
    assert key(replace(TRAIN, precision="bfloat16")) != key(TRAIN) != key(replace(TRAIN, reference_lr=2e-3))
