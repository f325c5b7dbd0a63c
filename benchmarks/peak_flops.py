"""Dense bf16 tensor-core peak FLOP/s by CUDA device name, for the benchmarks' MFU (model FLOPs utilisation).

    peak_bf16_flops(torch.cuda.get_device_name())   # 9.89e14 on "NVIDIA H100 80GB HBM3"; None on a device not listed

A name that is not listed gives None, and the benchmark prints no MFU rather than one computed against the wrong
chip. Dense means without 2:4 structured sparsity: NVIDIA's datasheets print the sparse figure (twice the dense one)
with an asterisk. Variants whose peak differs are listed apart (H100 PCIe) or left out (H100 NVL, H200 NVL, RTX 4090 D,
laptop parts, L40 without S) so that a loose match cannot give them another chip's figure. Imports nothing.
"""
from __future__ import annotations

import re
from typing import Optional

# (pattern that must match the whole torch.cuda.get_device_name() string, dense bf16 FLOP/s, source). Where the
# vendor's own page could not be opened here, the comment says where the vendor figure was read.
PEAKS = [
    # H100 SXM5 reports as "NVIDIA H100 80GB HBM3". NVIDIA H100 datasheet table: BFLOAT16 Tensor Core 1,979 TFLOPS
    # (SXM) / 1,513 (PCIe), "shown with sparsity; specifications 1/2 lower without sparsity" (read in a reseller's
    # copy of the table, archive-lib.hpctech.co.jp/gpuproduct/nvidia-h100.html); 989.4 dense (SXM5) in NVIDIA's
    # Hopper architecture in-depth blog table (developer.nvidia.com/blog/nvidia-hopper-architecture-in-depth/).
    (r"NVIDIA H100 (80GB HBM3|SXM5?( 80GB)?)", 989e12, "NVIDIA H100 datasheet: 1,979 TFLOPS with sparsity / 2"),
    (r"NVIDIA H100 PCIe", 756e12, "NVIDIA H100 datasheet: 1,513 TFLOPS with sparsity / 2"),
    # H200 SXM: the H100 SXM's GH100 compute with more memory, NVIDIA H200 datasheet 1,979 TFLOPS BF16 with sparsity
    # (NVIDIA's page not opened here; 989 dense as quoted by secondary spec pages). H200 NVL is rated lower: unlisted.
    (r"NVIDIA H200", 989e12, "NVIDIA H200 datasheet: 1,979 TFLOPS with sparsity / 2"),
    # A100 SXM4 and PCIe, 40 and 80 GB: "Peak BF16 Tensor TFLOPS with FP32 Accumulate 312/624" in NVIDIA's Hopper
    # blog comparison table (quoted at forums.developer.nvidia.com/t/218102); the A100 datasheet's 312 / 624*.
    (r"NVIDIA A100[- ](SXM4?|PCIE|PCIe)[- ]\d+GB|NVIDIA A100 \d+GB PCIe", 312e12, "NVIDIA A100: 312 TFLOPS dense"),
    # NVIDIA L40/L40S datasheet table: BFLOAT16 Tensor Core TFLOPS, L40S 362.05 | 733* (* with sparsity); read in a
    # reseller's copy of the table (mullet.se); the L40 (181.05) is a different chip and is not matched.
    (r"NVIDIA L40S", 362.05e12, "NVIDIA L40S datasheet: 362.05 TFLOPS"),
    # NVIDIA Ada GPU architecture whitepaper, RTX 4090: "Peak BF16 Tensor TFLOPS with FP32 Accumulate" 165.2 (330.4
    # with sparsity); the whitepaper's table was not opened here, the figure was read in a spec database (waredb.com:
    # BF16 tensor 165.15 dense, 330.30 sparse; TF32 tensor 82.58). bf16 always accumulates in fp32, at full rate on
    # this GeForce part; 82.6 is the TF32 tensor rate (and the non-tensor FP32 rate), not bf16.
    (r"NVIDIA GeForce RTX 4090", 165.2e12, "NVIDIA Ada whitepaper: 165.2 TFLOPS, BF16 with FP32 accumulate"),
]


def peak_bf16_flops(device_name: str) -> Optional[float]:
    """Dense bf16 peak FLOP/s of the named CUDA device, or None when it is not listed (then: no MFU)."""
    name = " ".join(device_name.split())
    return next((flops for pattern, flops, _ in PEAKS if re.fullmatch(pattern, name)), None)
