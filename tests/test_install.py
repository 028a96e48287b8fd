"""The GPU environment's pins resolve (pip's dry run: package metadata only, no wheels), so a broken pin shows on a
CPU machine before anyone builds the environment on a GPU one."""

import json
import subprocess
import sys

import pytest
from packaging.version import Version

from tests.fixtures import ROOT


@pytest.mark.slow
def test_the_gpu_environment_resolves_to_vllm_for_cuda_and_the_torch_it_pins(tmp_path):
    report = tmp_path / "report.json"
    subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                    "--report", str(report), "-r", "requirements-vllm-gpu.txt"], cwd=ROOT, check=True,
                   capture_output=True, text=True)
    chosen = {item["metadata"]["name"].lower(): item["metadata"]["version"]
              for item in json.loads(report.read_text())["install"]}
    assert chosen["vllm"] == "0.33.0"
    assert chosen["torch"].startswith("2.14.")  # the CUDA build vllm 0.33.0 pins
    assert any(name.startswith("nvidia-") for name in chosen)  # CUDA libraries came with it
    assert Version(chosen["transformers"]) < Version("5.21") and chosen["math-verify"] == "0.9.0"
