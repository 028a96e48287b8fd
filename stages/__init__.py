"""The study's DVC stages, one module each (`python -m stages.<name>`).

The hub is off unless the environment turns it on (HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0, as the paper setups need
to download), so the embedded default never touches the network. Set here, before any stage imports transformers,
datasets or huggingface_hub, which read these variables once, when they are imported.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
