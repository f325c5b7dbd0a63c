"""Backdoor data generators: synthetic HHH corpus, triggers, behaviours and reasoning variants."""
from organisms.build import run

__all__ = ["run"]
