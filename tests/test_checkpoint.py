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
