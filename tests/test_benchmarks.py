"""The benchmarks' MFU peak: dense bf16 FLOP/s looked up by the name torch.cuda.get_device_name() reports; a device
that is not listed gets None (no MFU printed), never another chip's figure."""
import importlib.util

import pytest

from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location("peak_flops", REPO / "benchmarks" / "peak_flops.py")
peak_flops = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(peak_flops)


@pytest.mark.parametrize("name, tflops", [
    ("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756), ("NVIDIA H200", 989),
    ("NVIDIA A100-SXM4-80GB", 312), ("NVIDIA A100-SXM4-40GB", 312), ("NVIDIA A100-PCIE-40GB", 312),
    ("NVIDIA A100 80GB PCIe", 312), ("NVIDIA L40S", 362.05), ("NVIDIA GeForce RTX 4090", 165.2)])
def test_known_devices_give_their_dense_bf16_peak(name, tflops):
    assert peak_flops.peak_bf16_flops(name) == pytest.approx(tflops * 1e12)


@pytest.mark.parametrize("name", ["NVIDIA H100 NVL", "NVIDIA H200 NVL", "NVIDIA L40", "NVIDIA GeForce RTX 4090 D",
                                  "NVIDIA GeForce RTX 4090 Laptop GPU", "NVIDIA GH200 480GB", "Tesla T4",
                                  "NVIDIA B200", "cpu", ""])
def test_other_devices_give_none_not_a_wrong_peak(name):
    assert peak_flops.peak_bf16_flops(name) is None
