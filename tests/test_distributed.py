"""2-process torchrun (gloo, CPU) runs equal single-process ones: OTI bit for bit, φ within rounding."""

import os
import subprocess
import sys

import pytest
import torch

from searle_core.cli import main
from searle_core.infra.distributed import shard_indices, split_evenly

pytestmark = pytest.mark.usefixtures("one_thread")

OTI_ARGS = [
    "oti",
    "--dataset",
    "shapes",
    "--split",
    "pretrain",
    "--quick",
    "--backbone",
    "shapes-clip",
    "--pretrained",
    "none",
    "--device",
    "cpu",
    "--max-images",
    "10",
    "--oti-batch-size",
    "3",
    "--oti-steps",
    "2",
    "--checkpoint-every",
    "1",
    "--no-progress",
]
PHI_ARGS = [
    "train-phi",
    "--device",
    "cpu",
    "--quick",
    "--phi-epochs",
    "2",
    "--batch-size",
    "4",
    "--lr",
    "1e-3",
    "--top-concepts",
    "5",
    "--val-dataset",
    "none",
    "--no-progress",
]


def torchrun(commands: list[list[str]], tmp_path) -> None:
    """``torchrun --standalone --nproc_per_node=2`` running ``searle`` commands one after the other
    in the same two processes (gloo on CPU; one launch, so the imports are paid once)."""
    script = tmp_path / "commands.py"
    # The script owns the process group, so the commands share it instead of re-creating one each.
    script.write_text(
        "import sys\nimport torch.distributed as dist\nfrom searle_core.cli import main\n"
        "dist.init_process_group('gloo')\n"
        f"for args in {commands!r}:\n    if main(args):\n        sys.exit(1)\n"
        "dist.destroy_process_group()\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    log = tmp_path / "torchrun.log"
    with open(log, "w") as out:
        try:
            code = subprocess.run(
                cmd, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, timeout=300
            ).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    assert code == 0, f"torchrun: {code}\n" + log.read_text()[-4000:]


def single(args: list[str]) -> None:
    """The same command in this process, on one thread like each torchrun worker."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    single(OTI_ARGS + ["--out", str(tmp / "oti-1")])
    single(PHI_ARGS + ["--oti-tokens", str(tmp / "oti-1"), "--out", str(tmp / "phi-1")])
    # φ under torchrun trains on the single-process tokens: the comparison isolates DDP.
    torchrun(
        [
            OTI_ARGS + ["--out", str(tmp / "oti-2")],
            PHI_ARGS + ["--oti-tokens", str(tmp / "oti-1"), "--out", str(tmp / "phi-2")],
        ],
        tmp,
    )
    return tmp


@pytest.mark.slow
def test_torchrun_oti_equals_single_process(runs):
    one = torch.load(runs / "oti-1" / "tokens.pt", weights_only=True)
    two = torch.load(runs / "oti-2" / "tokens.pt", weights_only=True)
    assert one["names"] == two["names"] and len(one["names"]) == 10
    assert torch.equal(one["tokens"], two["tokens"])  # bit for bit: same batches, same seeds, same shapes
    inputs_1 = torch.load(runs / "oti-1" / "inputs.pt", weights_only=True)
    inputs_2 = torch.load(runs / "oti-2" / "inputs.pt", weights_only=True)
    assert torch.equal(inputs_1["features"], inputs_2["features"])  # features sharded in whole batches
    assert torch.equal(inputs_1["concepts"], inputs_2["concepts"])
    assert not list((runs / "oti-2" / "chunks").glob("*.pt"))  # every rank's chunks merged and removed


@pytest.mark.slow
def test_torchrun_phi_matches_single_process(runs):
    """DDP gives the single-process gradient: same batch, same dropout masks on every rank, the
    phrase regulariser split over ranks. Only the order of floating-point sums differs."""
    one = torch.load(runs / "phi-1" / "phi.pt", weights_only=True)
    two = torch.load(runs / "phi-2" / "phi.pt", weights_only=True)
    for key in one["Phi"]:
        # φ takes raw image features (norms far above 1), so rounding differences are larger in absolute terms.
        torch.testing.assert_close(two["Phi"][key], one["Phi"][key], atol=1e-4, rtol=1e-3)
    for a, b in zip(one["history"], two["history"]):
        assert a["epoch"] == b["epoch"]
        for k in ("distil", "gpt", "total"):
            assert b[k] == pytest.approx(a[k], abs=1e-5)
    assert one["history"][-1]["gpt"] > 0  # the regulariser was active (and split over the ranks)


def test_sharding_partitions_work():
    assert shard_indices(7, 0, 2) + shard_indices(7, 1, 2) == [0, 2, 4, 6, 1, 3, 5]
    parts = [split_evenly(list(range(10)), r, 3) for r in range(3)]
    assert parts == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert split_evenly([1], 1, 2) == [] and shard_indices(0) == []
