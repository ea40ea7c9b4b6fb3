"""GPU suite: the inversion step, the fused ops, distillation and the newer ops, each section at most a few
minutes and saved as soon as it finishes.

    python benchmarks/gpu_suite.py --out benchmarks/results        (make bench-gpu, after the gpu tests)

It only measures: correctness on CUDA is tests/gpu (pytest -m gpu), which make bench-gpu runs first. Sections, in
order of value (``--sections`` picks some), each written to ``gpu_<section>.json`` when it ends, so a run cut
short keeps what it measured; ``ops_gpu.md`` gathers whatever sections exist:

1. ``inversion``: YOLOv3-SPP fwd + input gradient at 160^2 x 256, 320^2 x 96 and 416^2 x 48 against the conv
   floor of method.md §10, and the inversion step (teacher compiled, the default on CUDA; with and without its
   CUDA graph) against the reference DIODE loop at those shapes: speed-up, peak memory, images per GPU-hour of
   the step alone over the paper's schedule;
2. ``ops``: the BN-statistics, TV and augmentation ops at YOLOv3 416^2 batch-48 shapes: ms, achieved GB/s and
   % of the measured copy bandwidth, against the authors'-style code;
3. ``distill``: the distillation student step (eager, compiled) and the loaders;
4. ``new``: HCL, dense KD, roi_crop, and YOLOv8s (fwd + input gradient, the inversion step).

Timing: CUDA events, 3 repeats of 50 iterations after a warm-up, the median with the repeats' range (no cache-
flush buffer, so peak memory is the op's own); ``cudnn.benchmark`` on for every side; both sides of a comparison in
the same dtype (bf16) and the engine's layouts (images NCHW, features channels_last). ``--smoke`` runs everything at
tiny shapes on CPU (Triton interpreter) to check the script.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import reference_style as ref  # noqa: E402
from benchmarks.shapes import yolov3_bn_shapes  # noqa: E402


def progress(message: str) -> None:
    """One line on stderr at once, so a section cut off by its time limit shows how far it got."""
    print(f"gpu_suite {time.strftime('%H:%M:%S')}: {message}", file=sys.stderr, flush=True)


class Measured(NamedTuple):
    """Milliseconds per call: the median over repeats, and the repeats' range."""

    ms: float
    lo: float
    hi: float


def bench(fn, smoke: bool, repeats: int = 3, iterations: int = 50) -> Measured:
    """``repeats`` timings of ``iterations`` calls of fn() after a warm-up (CUDA events on the GPU; 1 x 2 calls on
    the wall clock in smoke runs)."""
    if smoke:
        repeats, iterations = 1, 2
    for _ in range(3 if not smoke else 1):
        fn()
    per_call = []
    for _ in range(repeats):
        if torch.cuda.is_available() and not smoke:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iterations):
                fn()
            end.record()
            torch.cuda.synchronize()
            per_call.append(start.elapsed_time(end) / iterations)
        else:
            t0 = time.perf_counter()
            for _ in range(iterations):
                fn()
            per_call.append((time.perf_counter() - t0) * 1e3 / iterations)
    return Measured(statistics.median(per_call), min(per_call), max(per_call))


class Timed(NamedTuple):
    """An op timed as a trainer calls it (eager: each call's Python and launches included) and replayed from a
    CUDA graph (the device time alone, what the graphed inversion step pays); graphed is None where the call
    cannot be captured (and on CPU)."""

    eager: Measured
    graphed: Measured | None


def graphed_call(fn):
    """fn captured into a CUDA graph (after warm-up calls on a side stream): a function that replays it."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=side):
        fn()
    return graph.replay


CAPTURE = {"failed": False}  # after a failed capture torch's graph pool and CUDA RNG are unusable for another


def timed(fn, smoke: bool) -> Timed:
    """:class:`Timed` of fn: eager, and graphed on CUDA (a failed capture is reported, leaves None, and stops the
    process's later captures)."""
    eager = bench(fn, smoke)
    if smoke or not torch.cuda.is_available() or CAPTURE["failed"]:
        return Timed(eager, None)
    try:
        replay = graphed_call(fn)
    except RuntimeError as error:
        CAPTURE["failed"] = True
        progress(f"CUDA graph capture failed, eager timings only from here: {str(error).splitlines()[0]}")
        return Timed(eager, None)
    return Timed(eager, bench(replay, smoke))


def dense_bf16_tflops(device_name: str) -> float:
    """The dense bf16 peak of the device, for the conv floor: H100 SXM and H200 989 TFLOP/s, H100 PCIe 756."""
    name = device_name.lower()
    if "h100" in name and "pcie" in name:
        return 756.0
    if "h100" in name or "h200" in name:
        return 989.0
    if "a100" in name:
        return 312.0
    return 989.0


def copy_bandwidth(device, smoke: bool) -> float:
    """GB/s of a device-to-device copy (read + write), the practical roof for memory-bound kernels."""
    n = (1 << 16) if smoke else (1 << 28)
    src = torch.empty(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    ms = bench(lambda: dst.copy_(src), smoke).ms
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


def op_timings(device, smoke: bool, copy_gbs: float) -> list[dict]:
    """The BN-statistics, TV and augmentation ops against the authors'-style code."""
    from fastdiode.augment import DiodeAugment
    from fastdiode.kernels.bn_stats import moments
    from fastdiode.ops import bn_stat_loss, tv_prior

    rows = []
    dtype = torch.bfloat16
    shapes = [(2, c, max(h // 32, 1), max(w // 32, 1)) for _, c, h, w in yolov3_bn_shapes(416, 1)][:6] if smoke \
        else yolov3_bn_shapes(416, 48)
    xs = [torch.randn(s, device=device, dtype=dtype).to(memory_format=torch.channels_last).requires_grad_(True)
          for s in shapes]
    stats = [(torch.randn(s[1], device=device), torch.rand(s[1], device=device) + 0.5) for s in shapes]
    in_bytes = sum(x.numel() * x.element_size() for x in xs)

    add = row_adder(rows, copy_gbs)

    views = [x.detach().view(x.shape[0], x.shape[1], -1) for x in xs]
    add(f"BN statistics pass, {len(xs)} layers (read once)",
        timed(lambda: [moments(v, rm) for v, (rm, _) in zip(views, stats)], smoke), in_bytes, ">= 80% copy bw")

    def fused_bn():
        torch.autograd.grad(sum(bn_stat_loss(x, rm, rv, backend="triton") for x, (rm, rv) in zip(xs, stats)), xs)

    def reference_bn():
        torch.autograd.grad(sum(ref.bn_feature_loss(x, rm, rv) for x, (rm, rv) in zip(xs, stats)), xs)

    fused = timed(fused_bn, smoke)  # each fused op first: a reference that cannot be captured stops later captures
    add(f"BN-statistics loss fwd+bwd, {len(xs)} layers", fused, 3 * in_bytes, "<= 2.5 ms", timed(reference_bn, smoke))

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        with torch.no_grad():
            total = sum(bn_stat_loss(x, rm, rv, backend="triton") for x, (rm, rv) in zip(xs, stats))
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - start
        channels = sum(s[1] for s in shapes)
        rows.append({"name": "BN-statistics loss forward: peak memory above the inputs", "bytes": extra,
                     "bytes per channel": extra / channels, "largest input bytes": max(x.numel() * 2 for x in xs),
                     "target": "a few C-sized vectors per layer"})
        del total

    img_shape = (2, 3, 13, 17) if smoke else (48, 3, 416, 416)
    img = torch.rand(img_shape, device=device, dtype=dtype).requires_grad_(True)  # NCHW, as the engine keeps it
    img_bytes = img.numel() * img.element_size()
    aug = DiodeAugment(jitter=52, backend="triton")
    # one draw, sampled outside the timed call (as the inversion step reads its draws from a table): a CUDA graph
    # cannot capture sampling from a non-default generator
    draw = aug.sample_params(img.shape[0], img.shape[2], img.shape[3], torch.Generator(device=device).manual_seed(0),
                             device)
    grad_out = torch.randn_like(img)

    def fused_tv_aug():
        x, _ = aug(img, params=draw)
        l1, _l2 = tv_prior(x, backend="triton")
        torch.autograd.grad(75.0 * l1, img, retain_graph=False)

    def reference_tv_aug():
        x = ref.augment(img, 52, mask_on_device=True)
        l1, l2 = ref.image_prior_losses(x)
        torch.autograd.grad(75.0 * l1 + 0.0 * l2, img)

    fused = timed(fused_tv_aug, smoke)
    add("TV + augmentation fwd+bwd, 48x3x416^2", fused, 6 * img_bytes, "<= 0.2 ms", timed(reference_tv_aug, smoke))
    x_aug = aug(img, params=draw)[0].detach().requires_grad_(True)
    add("  augmentation fwd+bwd alone", timed(lambda: torch.autograd.grad(aug(img, params=draw)[0], img, grad_out),
                                              smoke), 4 * img_bytes)
    add("  TV prior fwd+bwd alone", timed(lambda: torch.autograd.grad(tv_prior(x_aug, backend="triton")[0], x_aug),
                                          smoke), 2 * img_bytes)
    return rows


def row_adder(rows: list[dict], copy_gbs: float):
    """add(name, timed, bytes moved, target, baseline timed): one table row. GB/s and % of the copy bandwidth
    come from the graphed time where there is one (the device time), else from the eager time."""
    def add(name, fused: Timed, bytes_moved=None, target=None, base: Timed | None = None):
        eager, graphed = fused
        row = {"name": name, "ms": eager.ms, "range ms": [eager.lo, eager.hi], "target": target}
        if graphed is not None:
            row["graphed ms"], row["graphed range ms"] = graphed.ms, [graphed.lo, graphed.hi]
        if bytes_moved is not None:
            row["GB/s"] = bytes_moved / ((graphed or eager).ms * 1e-3) / 1e9
            row["% copy bw"] = 100 * row["GB/s"] / copy_gbs
        if base is not None:
            row["reference-style ms"] = base.eager.ms
            row["speed-up"] = base.eager.ms / eager.ms
            if base.graphed is not None and graphed is not None:
                row["reference-style graphed ms"] = base.graphed.ms
                row["graphed speed-up"] = base.graphed.ms / graphed.ms
        rows.append(row)

    return add


def new_op_timings(device, smoke: bool, copy_gbs: float) -> list[dict]:
    """HCL, dense KD, roi_crop and LSQ against their authors'-style code, in bf16 on both sides."""
    rows: list[dict] = []
    add = row_adder(rows, copy_gbs)
    distill_op_timings(device, smoke, add)
    roi_crop_timings(device, smoke, add)
    lsq_timings(device, smoke, add)
    return rows


def lsq_timings(device, smoke: bool, add) -> None:
    """LSQ fake quantization (4 bits) of a YOLOv3 conv input at 416² x 16 (per tensor) and of a 3x3 weight per
    output channel, bf16, fwd+bwd to the tensor and its step, against DFQ-Dojo's FunLSQ. Bytes: x read twice
    (forward, backward), y written, dL/dy read, dL/dx written."""
    from fastdiode.ops import lsq_fake_quant

    shape = (2, 8, 16, 16) if smoke else (16, 256, 52, 52)
    g = torch.Generator(device=device).manual_seed(2)
    x = torch.randn(shape, device=device, generator=g).to(torch.bfloat16).requires_grad_(True)
    step = torch.tensor([0.3], device=device, requires_grad=True)
    grad_scale = 1.0 / (x.numel() * 7) ** 0.5
    fused = timed(lambda: torch.autograd.grad(lsq_fake_quant(x, step, -8, 7, grad_scale, backend="triton").float()
                                              .square().sum(), (x, step)), smoke)
    base = timed(lambda: torch.autograd.grad(ref.DFQLSQ.apply(x, step, grad_scale, -8, 7).float().square().sum(),
                                             (x, step)), smoke)
    add(f"LSQ fake-quant fwd+bwd, 4 bits, {'x'.join(map(str, shape))} activations", fused, 5 * x.numel() * 2,
        ">= 70% copy bw", base)


def distill_op_timings(device, smoke: bool, add) -> None:
    """HCL on YOLOv3's neck features and dense KD on its head maps, 416² x 16, bf16 (rows through ``add``): each
    reads the student's and the teacher's maps once forward and once backward and writes the student's
    gradient (5 map-sized passes)."""
    from fastdiode.losses import dense_kd_loss, hcl_loss

    dtype, batch = torch.bfloat16, 2 if smoke else 16
    grids, channels = ((2, 3, 5) if smoke else (13, 26, 52)), ((16, 8, 8) if smoke else (1024, 512, 256))
    g = torch.Generator(device=device).manual_seed(0)

    def maps(shape):
        return torch.randn(shape, device=device, generator=g).to(dtype).to(memory_format=torch.channels_last)

    student = [maps((batch, c, n, n)).requires_grad_(True) for c, n in zip(channels, grids)]
    teacher = [maps((batch, c, n, n)) for c, n in zip(channels, grids)]
    nbytes = sum(x.numel() * x.element_size() for x in student)
    fused = timed(lambda: torch.autograd.grad(hcl_loss(student, teacher, backend="triton"), student), smoke)
    base = timed(lambda: torch.autograd.grad(ref.review_hcl(student, teacher), student), smoke)
    add(f"HCL fwd+bwd, YOLOv3 neck 416^2 x {batch}", fused, 5 * nbytes, ">= 70% copy bw", base)
    classes = 80
    heads = [torch.randn(batch, 3 * (5 + classes), n, n, device=device, generator=g).to(dtype)
             .view(batch, 3, 5 + classes, n, n).permute(0, 1, 3, 4, 2) for n in grids for _ in range(2)]
    s_maps = [m.detach().requires_grad_(True) for m in heads[0::2]]
    t_maps = heads[1::2]
    nbytes = sum(m.numel() * m.element_size() for m in s_maps)
    fused = timed(lambda: torch.autograd.grad(dense_kd_loss(s_maps, t_maps, 2.0, backend="triton"), s_maps), smoke)
    base = timed(lambda: torch.autograd.grad(ref.sigmoid_kd(s_maps, t_maps, 2.0), s_maps), smoke)
    add(f"dense KD fwd+bwd, YOLOv3 heads 416^2 x {batch}, 80 classes", fused, 5 * nbytes, ">= 70% copy bw", base)


def roi_crop_timings(device, smoke: bool, add) -> None:
    """roi_crop at 416² x 16 images x 32 boxes, 32 px crops pooled 8x8 (DICOD's localization loss), bf16, fwd+bwd
    to the images and the boxes, against affine_grid + grid_sample + adaptive_avg_pool2d. Bytes: the image read
    and its gradient written once, and the four bilinear taps of every sample read forward and backward."""
    from fastdiode.ops import roi_crop

    batch, boxes_per, side, size = (2, 3, 32, 8) if smoke else (16, 32, 416, 32)
    g = torch.Generator(device=device).manual_seed(1)
    images = torch.randn(batch, 3, side, side, device=device, generator=g).to(torch.bfloat16).requires_grad_(True)
    lo = torch.rand(batch, boxes_per, 2, device=device, generator=g) * 0.6
    boxes = torch.cat([lo, lo + torch.rand(batch, boxes_per, 2, device=device, generator=g) * 0.35 + 0.05], -1)
    boxes.requires_grad_(True)
    nbytes = 2 * images.numel() * 2 + 2 * 4 * batch * boxes_per * 3 * size * size * 2
    fused = timed(lambda: torch.autograd.grad(roi_crop(images, boxes, size, pool=8, backend="triton").sum(),
                                              (images, boxes)), smoke)
    base = timed(lambda: torch.autograd.grad(ref.dicod_crops(images, boxes.to(images.dtype), size)[1].sum(),
                                             (images, boxes)), smoke)
    add(f"roi_crop fwd+bwd, 416^2 x {batch} x {boxes_per} boxes, {size} px pooled 8x8", fused, nbytes,
        "vs grid_sample", base)


def peak_tflops(device) -> float:
    return dense_bf16_tflops(torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu")


def model_timings(device, smoke: bool, compiled: bool, name: str | None = None, shapes: list | None = None) \
        -> list[dict]:
    """A detector's fwd + input gradient (teacher frozen), bf16 channels_last, eager and (with ``compiled``)
    torch.compile'd, against the conv floor 2 x forward FLOPs / dense bf16 peak: by default YOLOv3-SPP at the
    paper's stage shapes."""
    from fastdiode.models import build_model
    from fastdiode.models.flops import conv_flops

    if name is None:
        name, shapes = ("yolo-micro", [(32, 4), (64, 2)]) if smoke else \
            ("yolov3-spp", [(160, 256), (320, 96), (416, 48)])
    rows = []
    for size, batch in shapes:
        model = build_model(name).eval().requires_grad_(False).to(device, memory_format=torch.channels_last)
        x = torch.rand(batch, 3, size, size, device=device).to(memory_format=torch.channels_last).requires_grad_(True)
        floor_ms = 2 * conv_flops(model, size) * batch / (peak_tflops(device) * 1e12) * 1e3
        for mode in ("eager", "compiled") if compiled else ("eager",):
            backend = "aot_eager" if smoke else "inductor"  # smoke: exercise the path without inductor codegen
            net = torch.compile(model, backend=backend) if mode == "compiled" else model

            def step():
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    out = net(x)
                torch.autograd.grad(sum(o.float().square().mean() for o in out), x)

            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            measured = bench(step, smoke)
            ms = measured.ms
            progress(f"{name} {size}^2 x {batch} fwd+dgrad {mode}: {ms:.2f} ms")
            peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else 0
            rows.append({"name": f"{name} {size}^2 x {batch} fwd+dgrad, {mode}", "ms": ms,
                         "range ms": [measured.lo, measured.hi], "floor ms": floor_ms,
                         "% of floor": 100 * floor_ms / ms, "peak GiB": peak / 2**30,
                         "images/s": batch / ms * 1e3, "target": "vs conv floor"})
        del model
    return rows


def start_peak(device) -> None:
    """Begin a peak-memory reading: the allocator's cache emptied, its peaks reset."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_reserved(device) -> int:
    """Peak bytes the allocator held since :func:`start_peak`. Reserved, not allocated: a captured CUDA graph's
    private pool counts as reserved, while its tensors, freed after capture, no longer count as allocated."""
    return torch.cuda.max_memory_reserved() if device.type == "cuda" else 0


class InverterTiming(NamedTuple):
    """One DiodeInverter timing: seconds per iteration, peak bytes reserved, the warm-up run's seconds (compiles
    and captures included), and whether every stage step replayed a captured CUDA graph."""

    seconds: float
    peak: int
    warmup_s: float
    graphed: bool


def fastdiode_seconds(cfg, name: str, targets, device, sync) -> InverterTiming:
    """:class:`InverterTiming` of DiodeInverter under ``cfg``: a warm-up run (which compiles and, with CUDA graphs,
    captures), then a timed one."""
    from fastdiode.inversion import DiodeInverter
    from fastdiode.loading import randomized_detector

    inverter = DiodeInverter(randomized_detector(name, None, 80).to(device), cfg, device)
    start = time.perf_counter()
    inverter.invert(targets, seed=0)
    sync()
    warmup = time.perf_counter() - start
    start_peak(device)
    start = time.perf_counter()
    inverter.invert(targets, seed=1)
    sync()
    seconds = (time.perf_counter() - start) / cfg.stages.iterations[0]
    timing = InverterTiming(seconds, peak_reserved(device), warmup,
                            inverter.step_shapes != [] and inverter.captured_shapes == inverter.step_shapes)
    inverter.close()
    return timing


def anchor_free_timings(device, smoke: bool, compile_teacher: bool) -> dict:
    """YOLOv8s (random weights and BN statistics): fwd + input gradient at 320^2 x 32, bf16 channels_last, and
    fastdiode's inversion step at that shape (CUDA graph, bf16)."""
    from fastdiode.config import load_config
    from fastdiode.inversion import InversionConfig, one_box_targets

    name, size, batch = ("yolov8-micro", 32, 2) if smoke else ("yolov8s", 320, 32)
    rows = model_timings(device, smoke, compile_teacher, name, [(size, batch)])
    targets = one_box_targets(batch, 80, 16, torch.Generator().manual_seed(0))
    cfg = load_config(InversionConfig, None, inversion_overrides(size, batch, 2 if smoke else 20, compile_teacher))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    timing = fastdiode_seconds(cfg, name, targets, device, sync)
    return {"model_rows": rows, "inversion": {"name": f"{name} {size}^2 x {batch}", "fastdiode s/it": timing.seconds,
                                              "images/s (step only)": batch / timing.seconds,
                                              "peak GiB": timing.peak / 2**30, "warm-up s": timing.warmup_s,
                                              "CUDA graph": timing.graphed}}


def inversion_overrides(size: int, batch: int, iterations: int, compile_teacher: bool) -> list[str]:
    """One stage of ``iterations`` at ``size`` px with ``batch`` images, the paper's first-stage optimiser."""
    return [f"stages.resolution=[{size}]", f"stages.batch_size=[{batch}]", "stages.lr=[0.2]", "stages.lr_min=[0]",
            f"stages.iterations=[{iterations}]", "stages.warmup=[0]", "stages.betas=[[0,0]]",
            "loss.first_bn_coef=[2]", f"augment.jitter=[{size // 8}]", "fp.enabled=false", "job.log_every=50",
            f"run.compile={str(compile_teacher).lower()}"]


def inversion_timings(device, smoke: bool, compile_teacher: bool) -> dict:
    """Seconds per iteration of fastdiode's step (with its CUDA graph, and without) and of the reference DIODE
    loop (same random YOLOv3-SPP, same shapes), peak memory, and images per GPU-hour over the paper's full
    schedule."""
    from benchmarks.reference_loop import reference_inversion
    from fastdiode.config import load_config
    from fastdiode.inversion import InversionConfig, one_box_targets
    from fastdiode.loading import randomized_detector
    from fastdiode.models import build_model
    from fastdiode.models.flops import conv_flops

    name, shapes = ("yolo-micro", [(32, 4), (64, 3), (96, 2)]) if smoke else \
        ("yolov3-spp", [(160, 256), (320, 96), (416, 48)])
    iterations, schedule = (2, [2500, 1500, 1000])
    rows = []
    for i, (size, batch) in enumerate(shapes):
        targets = one_box_targets(batch, 80, 16, torch.Generator().manual_seed(0))
        # smoke: the compiled path at the first shape only (each inductor compile costs ~30 s of CPU)
        compiled = compile_teacher and (not smoke or i == 0)
        overrides = inversion_overrides(size, batch, iterations if smoke else 20, compiled)
        cfg = load_config(InversionConfig, None, overrides)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        progress(f"inversion {name} {size}^2 x {batch}: fastdiode")
        timing = fastdiode_seconds(cfg, name, targets, device, sync)
        fast, fast_peak = timing.seconds, timing.peak
        progress(f"  {1e3 * fast:.1f} ms/it (graphed: {timing.graphed}, warm-up {timing.warmup_s:.0f} s); "
                 "without the CUDA graph")
        eager = fastdiode_seconds(load_config(InversionConfig, None, [*overrides, "job.cuda_graph=false"]), name,
                                  targets, device, sync).seconds if device.type == "cuda" else fast
        progress(f"  {1e3 * eager:.1f} ms/it; the reference loop")
        ref_teacher = randomized_detector(name, None, 80).to(device)
        steps = iterations if smoke else 5
        reference_inversion(ref_teacher, targets, size, 1, jitter=size // 8, fp16=device.type == "cuda")
        start_peak(device)
        start = time.perf_counter()
        reference_inversion(ref_teacher, targets, size, steps, jitter=size // 8, fp16=device.type == "cuda")
        sync()
        slow = (time.perf_counter() - start) / steps
        progress(f"  reference {1e3 * slow:.1f} ms/it")
        ref_peak = peak_reserved(device)
        floor = 2 * conv_flops(build_model(name), size) * batch / (peak_tflops(device) * 1e12)
        rows.append({"name": f"{name} {size}^2 x {batch}", "fastdiode s/it": fast, "fastdiode eager s/it": eager,
                     "reference s/it": slow, "floor s/it": floor, "% of floor": 100 * floor / fast,
                     "speed-up": slow / fast, "fastdiode peak GiB": fast_peak / 2**30,
                     "reference peak GiB": ref_peak / 2**30,
                     "peak ratio": fast_peak / ref_peak if ref_peak else 0.0,
                     "CUDA graph": timing.graphed if device.type == "cuda" else None,
                     "warm-up s (compile, capture)": timing.warmup_s})
        del ref_teacher
    first_batch = shapes[0][1]
    seconds = sum(it * -(-first_batch // b) * r["fastdiode s/it"] for it, (_, b), r in zip(schedule, shapes, rows))
    ref_seconds = sum(it * -(-first_batch // b) * r["reference s/it"] for it, (_, b), r in zip(schedule, shapes, rows))
    return {"rows": rows, "images per GPU-hour (paper schedule)": 3600 * first_batch / seconds,
            "reference images per GPU-hour": 3600 * first_batch / ref_seconds, "teacher compiled": compile_teacher}


def distill_timings(device, smoke: bool, compiled: bool) -> dict:
    """The distillation student step (YOLOv3 mimicking YOLOv3-SPP, 416^2 x 64, bf16, Adam): eager vs compiled
    images/s (eager only without ``compiled``); and the loader (torch DataLoader, DALI with ``mixed`` decoding
    when installed) on generated 416^2 PNGs, to compare with what the step consumes (target: loader >= 2x the
    step)."""
    import tempfile

    from benchmarks.bench_distill_cpu import loader_rate, make_pngs
    from fastdiode.config import load_config
    from fastdiode.data.dali_loader import available as dali_available
    from fastdiode.data.scan import scan_dataset
    from fastdiode.distill import TrainConfig, Trainer
    from fastdiode.models import build_model
    from fastdiode.runtime import RunContext

    (student_name, teacher_name, size, batch) = ("yolo-micro", "yolo-micro", 64, 4) if smoke else \
        ("yolov3", "yolov3-spp", 416, 64)
    steps = 2 if smoke else 10
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    result = {"shape": f"{student_name} <- {teacher_name}, {size}^2 x {batch}", "step": {}}
    for mode in ("eager", "compiled") if compiled else ("eager",):
        torch.manual_seed(0)
        teacher = build_model(teacher_name, num_classes=80).eval()
        student = build_model(student_name, num_classes=80)
        cfg = load_config(TrainConfig, None, ["data.train=unused", "teacher=unused", f"train.steps={steps + 3}",
                                              f"run.compile={str(mode == 'compiled').lower()}"])
        trainer = Trainer(cfg, student, teacher, RunContext(device), [], progress=False)
        if smoke and mode == "compiled":
            trainer.loss_fn = torch.compile(trainer._loss, backend="aot_eager")
        x = torch.rand(batch, 3, size, size, device=device)
        boxes = torch.full((batch, 4, 5), -1.0, device=device)
        t0 = time.perf_counter()
        trainer.train_step(x, boxes)
        sync()
        first = time.perf_counter() - t0
        trainer.train_step(x, boxes)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(x, boxes)
        sync()
        result["step"][mode] = {"images/s": steps * batch / (time.perf_counter() - t0), "first call s": first,
                                "peak GiB": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0}
        del trainer, teacher, student
    n, png = (16, 64) if smoke else (512, 416)
    with tempfile.TemporaryDirectory() as tmp:
        data = scan_dataset(make_pngs(Path(tmp), n, png))
        result["loader"] = {"torch (8 workers)": loader_rate("torch", data, 8 if smoke else 64, 1 if smoke else 5,
                                                             0 if smoke else 8, png)}
        if dali_available():
            result["loader"]["dali (mixed)" if device.type == "cuda" else "dali (cpu)"] = loader_rate(
                "dali", data, 8 if smoke else 64, 1 if smoke else 5, 2 if smoke else 8, png,
                device if device.type == "cuda" else None)
    return result


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def ops_table(rows: list[dict]) -> list[str]:
    lines = ["| case | eager ms (range of 3 repeats) | graphed ms | GB/s | % copy bw | reference-style ms, eager "
             "(graphed) | speed-up, eager (graphed) | target |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if "ms" not in r:
            lines.append(f"| {r['name']} | {r['bytes'] / 2**20:.2f} MiB "
                         f"({r['bytes per channel']:.1f} B per channel) | | | | | | {r['target']} |")
            continue
        fmt = lambda k, f: f.format(r[k]) if k in r else ""  # noqa: E731
        lines.append(f"| {r['name']} | {r['ms']:.3f} ({r['range ms'][0]:.3f}-{r['range ms'][1]:.3f}) | "
                     f"{fmt('graphed ms', '{:.3f}')} | {fmt('GB/s', '{:.0f}')} | {fmt('% copy bw', '{:.0f}%')} | "
                     f"{fmt('reference-style ms', '{:.3f}')}{fmt('reference-style graphed ms', ' ({:.3f})')} | "
                     f"{fmt('speed-up', '{:.1f}x')}{fmt('graphed speed-up', ' ({:.1f}x)')} | {r['target'] or ''} |")
    return lines


def model_table(rows: list[dict]) -> list[str]:
    return ["| case | ms (range) | floor ms | % of floor | images/s | peak GiB |", "|---|---:|---:|---:|---:|---:|"] + [
        f"| {r['name']} | {r['ms']:.2f} ({r['range ms'][0]:.2f}-{r['range ms'][1]:.2f}) | {r['floor ms']:.2f} | "
        f"{r['% of floor']:.0f}% | {r['images/s']:.0f} | {r['peak GiB']:.1f} |" for r in rows]


def to_markdown(meta: dict, sections: dict) -> str:
    lines = [f"# GPU suite on {meta['device']}", "",
             f"torch {meta['torch']}, triton {meta['triton']}, commit {meta['commit']}, {meta['date']}. Measured copy "
             f"bandwidth {meta['copy GB/s']:.0f} GB/s; dense bf16 peak taken as {meta['peak TFLOP/s']:g} TFLOP/s. "
             "Correctness on the device: tests/gpu (`pytest -m gpu`), run by make bench-gpu before this suite.",
             f"Sections measured: {', '.join(sections) or 'none'}."]
    inversion = sections.get("inversion")
    if inversion:
        inv = inversion["inversion"]
        lines += ["", "## Detector fwd + input gradient (teacher frozen), bf16 channels_last", "",
                  "Floor: 2 x conv forward FLOPs at the dense bf16 peak (method.md §10).", "",
                  *model_table(inversion["model_rows"]),
                  "", f"## Inversion step: fastdiode vs the reference DIODE loop (teacher compiled: "
                  f"{inv['teacher compiled']})", "",
                  "| shape | fastdiode s/it (CUDA graph) | without graph | conv floor s/it (% reached) | "
                  "reference s/it | speed-up (target 8x) | peak GiB reserved, fastdiode / reference (target <= 60%) |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['name']}{' (capture failed: eager)' if r.get('CUDA graph') is False else ''} | "
                  f"{r['fastdiode s/it']:.4f} | {r['fastdiode eager s/it']:.4f} | "
                  f"{r['floor s/it']:.4f} ({r['% of floor']:.0f}%) | {r['reference s/it']:.4f} | "
                  f"{r['speed-up']:.1f}x | {r['fastdiode peak GiB']:.1f} / {r['reference peak GiB']:.1f} "
                  f"({100 * r['peak ratio']:.0f}%) |" for r in inv["rows"]]
        lines += ["", "Images per GPU-hour, the step only (without Y_fp, the resizes between stages and the PNG "
                  f"writes), over the paper's schedule (2500/1500/1000 iterations at 160/320/416): fastdiode "
                  f"{inv['images per GPU-hour (paper schedule)']:.0f} (target >= 3000 on an H100), reference loop "
                  f"{inv['reference images per GPU-hour']:.0f}."]
    if sections.get("ops"):
        lines += ["", "## Fused ops, YOLOv3 416^2 batch 48, bf16", "", *ops_table(sections["ops"]["rows"])]
    dist = sections.get("distill")
    if dist:
        lines += ["", f"## Distillation student step ({dist['shape']}, bf16, Adam) and loader", "",
                  "| step | images/s | first call s | peak GiB |", "|---|---:|---:|---:|"]
        lines += [f"| {k} | {v['images/s']:.0f} | {v['first call s']:.1f} | {v['peak GiB']:.1f} |"
                  for k, v in dist["step"].items()]
        lines += ["", "| loader | images/s |", "|---|---:|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in dist["loader"].items()]
    new = sections.get("new")
    if new:
        inv = new["anchor_free"]["inversion"]
        lines += ["", "## Newer ops (bf16 on both sides)", "", *ops_table(new["rows"]),
                  "", "## YOLOv8 (anchor-free): fwd + input gradient, and the inversion step (bf16)", "",
                  *model_table(new["anchor_free"]["model_rows"]),
                  "", f"Inversion step, {inv['name']}: {1e3 * inv['fastdiode s/it']:.2f} ms per iteration, "
                  f"{inv['images/s (step only)']:.0f} images/s (step only), peak {inv['peak GiB']:.1f} GiB."]
    return "\n".join(lines) + "\n"


SECTIONS = ("inversion", "ops", "distill", "new")


def run_section(name: str, device, smoke: bool, copy_gbs: float, compile_teacher: bool) -> dict:
    if name == "inversion":
        return {"model_rows": model_timings(device, smoke, compile_teacher),
                "inversion": inversion_timings(device, smoke, compile_teacher)}
    if name == "ops":
        return {"rows": op_timings(device, smoke, copy_gbs)}
    if name == "distill":
        return distill_timings(device, smoke, compile_teacher)
    return {"rows": new_op_timings(device, smoke, copy_gbs),
            "anchor_free": anchor_free_timings(device, smoke, compile_teacher)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results", help="folder for gpu_<section>.json and ops_gpu.md")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny shapes on CPU (Triton interpreter): checks the script")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--no-compile", action="store_true",
                        help="time eager models only: no torch.compile of the teacher or the student (the default "
                        "also times them compiled, as the engine runs them)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        sys.exit("gpu_suite: no CUDA device; run with --smoke to check the script on CPU")
    else:
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True  # every side, before any graph capture
    import triton

    meta = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (smoke)",
            "torch": torch.__version__, "triton": triton.__version__, "commit": git_commit(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "copy GB/s": copy_bandwidth(device, args.smoke),
            "peak TFLOP/s": peak_tflops(device)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "_smoke" if args.smoke else ""
    for name in args.sections:
        start = time.perf_counter()
        section = run_section(name, device, args.smoke, meta["copy GB/s"], not args.no_compile)
        section["seconds"] = time.perf_counter() - start
        (out / f"gpu_{name}{suffix}.json").write_text(json.dumps({**meta, name: section}, indent=2))
        print(f"gpu_suite: section {name} done in {section['seconds']:.0f} s", flush=True)
    sections = {name: json.loads(path.read_text())[name] for name in SECTIONS
                if (path := out / f"gpu_{name}{suffix}.json").is_file()}
    (out / f"ops_gpu{suffix}.md").write_text(to_markdown(meta, sections))
    print(to_markdown(meta, sections))


if __name__ == "__main__":
    main()
