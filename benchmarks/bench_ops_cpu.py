"""CPU microbenchmarks of the fused ops, fwd + bwd, each against three baselines in the same run:

* the authors' style (``benchmarks/reference_style.py``: permute-copy variances, CPU-built masks, ...);
* a competent eager baseline, what a careful user writes (``torch.var_mean``, BCE-with-logits for the sigmoid KD,
  device-side augmentation parameters, fastdiode's own stacked ``grid_sample`` for the crops, ...);
* that competent code under ``torch.compile``.

    python benchmarks/bench_ops_cpu.py --out benchmarks/results      (make bench)

Shapes: the 11 BN inputs of YOLOv3-tiny at 128 px, batch 16; images 16x3x128x128 (NCHW, the engine's layout);
its neck features and head maps; 16 images x 8 boxes cropped at 32 px; a conv input and a weight for LSQ. The
sides alternate round by round;
medians with interquartile ranges; the speed-up targets apply to the competent eager baseline. Refuses to time
while the load average exceeds the core count. Writes ops_cpu.json and ops_cpu.md.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import reference_style as ref  # noqa: E402
from benchmarks.shapes import yolov3_tiny_bn_shapes  # noqa: E402
from benchmarks.timing import first_calls, interleaved, provenance, ratio_spread, require_quiet, spread  # noqa: E402
from fastdiode.augment import DiodeAugment, augment_images  # noqa: E402
from fastdiode.losses import bn_stat_loss, dense_kd_loss, hcl_loss, tv_prior  # noqa: E402
from fastdiode.ops import bn_act_stat_loss, lsq_fake_quant, roi_crop, tv_prior_reference  # noqa: E402
from fastdiode.ops.hcl import pool_weights  # noqa: E402
from fastdiode.ops.lsq import lsq_fake_quant_reference  # noqa: E402
from fastdiode.ops.roi_crop import _roi_crop_stacked  # noqa: E402
from fastdiode.runtime.files import atomic_write  # noqa: E402

BATCH, SIZE, JITTER = 16, 128, 16
COMPETENT, COMPILED, AUTHORS = "competent eager", "torch.compile(competent)", "authors' style"
TARGETS = {"bn": 3.0, "tv": 3.0, "augment": 2.0, "hcl": 2.0, "kd": 1.5, "roi": 2.0}


def competent_bn(x: torch.Tensor, rm: torch.Tensor, rv: torch.Tensor) -> torch.Tensor:
    var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
    return torch.linalg.vector_norm(rv - var) + torch.linalg.vector_norm(rm - mean)


def competent_hcl(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Pooling is linear: pool the difference once, per level."""
    total = 0.0
    for fs, ft in zip(student, teacher):
        d = fs - ft
        loss, tot = d.square().mean(), 1.0
        for k, w in pool_weights(d.shape[2]):
            loss = loss + w * F.adaptive_avg_pool2d(d, k).square().mean()
            tot += w
        total = total + loss / tot
    return total


def competent_kd(student: list[torch.Tensor], teacher: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """KL of the binary distributions as BCE-with-logits minus the teacher's entropy, objectness-weighted."""
    num, den = 0.0, 0.0
    for s, t in zip(student, teacher):
        q = torch.sigmoid(t[..., 5:] / temperature)
        kl = F.binary_cross_entropy_with_logits(s[..., 5:] / temperature, q, reduction="none") - \
            F.binary_cross_entropy_with_logits(t[..., 5:] / temperature, q, reduction="none")
        w = torch.sigmoid(t[..., 4])
        num = num + (w * kl.sum(-1)).sum()
        den = den + w.sum()
    return temperature ** 2 * num / den


def grad_step(loss_fn: Callable[[], torch.Tensor], inputs) -> Callable[[], object]:
    return lambda: torch.autograd.grad(loss_fn(), inputs)


def bn_cases(g: torch.Generator) -> list[tuple]:
    xs = [torch.randn(s, generator=g).requires_grad_(True) for s in yolov3_tiny_bn_shapes(SIZE, BATCH)]
    stats = [(torch.randn(x.shape[1], generator=g), torch.rand(x.shape[1], generator=g) + 0.5) for x in xs]
    total = lambda fn: lambda: sum(fn(x, rm, rv) for x, (rm, rv) in zip(xs, stats))  # noqa: E731
    compiled = torch.compile(competent_bn)
    bn = ("bn", "BN-statistics loss, YOLOv3-tiny's 11 BN inputs at 128 px, batch 16", {
        "fastdiode": grad_step(total(bn_stat_loss), xs), AUTHORS: grad_step(total(ref.bn_feature_loss), xs),
        COMPETENT: grad_step(total(competent_bn), xs), COMPILED: grad_step(total(compiled), xs)})
    cl = [x.detach().to(memory_format=torch.channels_last).requires_grad_(True) for x in xs]
    params = [(rm, rv, torch.randn(len(rm), generator=g), torch.randn(len(rm), generator=g)) for rm, rv in stats]

    def unfused(stat_fn):
        def block(x, rm, rv, w, b):
            return F.leaky_relu(F.batch_norm(x, rm, rv, w, b, False, 0.0, 1e-4), 0.1), stat_fn(x, rm, rv)
        return block

    def fused(x, rm, rv, w, b):
        return bn_act_stat_loss(x, rm, rv, w, b, 1e-4, 0.1)

    def consumed(y: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        # y is used outside every side's region, as the next conv uses it: a compiled block must write it out
        return y.mean() + loss

    block_total = lambda fn: grad_step(lambda: sum(consumed(*fn(x, *p)) for x, p in zip(cl, params)), cl)  # noqa: E731
    block = ("block", "BN block (eval BN + leaky ReLU + statistics loss), same inputs, channels_last", {
        "fastdiode": block_total(fused), "fastdiode unfused": block_total(unfused(bn_stat_loss)),
        AUTHORS: block_total(unfused(ref.bn_feature_loss)), COMPETENT: block_total(unfused(competent_bn)),
        COMPILED: block_total(torch.compile(unfused(competent_bn)))})
    return [bn, block]


def image_cases(g: torch.Generator) -> list[tuple]:
    images = torch.rand(BATCH, 3, SIZE, SIZE, generator=g).requires_grad_(True)
    weighted = lambda fn: lambda: (lambda l1, l2: 75.0 * l1 + 1e-4 * l2)(*fn(images))  # noqa: E731
    compiled_tv = torch.compile(tv_prior_reference)
    tv = ("tv", "TV prior, 16x3x128x128", {
        "fastdiode": grad_step(weighted(tv_prior), images),
        AUTHORS: grad_step(weighted(ref.image_prior_losses), images),
        COMPETENT: grad_step(weighted(tv_prior_reference), images),
        COMPILED: grad_step(weighted(compiled_tv), images)})
    grad_out = torch.randn_like(images)
    aug, draw = DiodeAugment(jitter=JITTER), torch.Generator().manual_seed(2)
    random.seed(2)
    def competent():
        return augment_images(images, aug.sample_params(BATCH, SIZE, SIZE, draw), backend="reference")

    compiled_apply = torch.compile(lambda x, p: augment_images(x, p, backend="reference"))
    augment = ("augment", "augmentation (roll, flip, brightness, contrast, erase), 16x3x128x128, fresh draw", {
        "fastdiode": lambda: torch.autograd.grad(aug(images, generator=draw)[0], images, grad_out),
        AUTHORS: lambda: torch.autograd.grad(ref.augment(images, JITTER), images, grad_out),
        COMPETENT: lambda: torch.autograd.grad(competent(), images, grad_out),
        COMPILED: lambda: torch.autograd.grad(compiled_apply(images, aug.sample_params(BATCH, SIZE, SIZE, draw)),
                                              images, grad_out)})
    return [tv, augment]


def distill_cases(g: torch.Generator) -> list[tuple]:
    shapes = [(BATCH, 512, SIZE // 32, SIZE // 32), (BATCH, 256, SIZE // 16, SIZE // 16)]
    student = [torch.randn(s, generator=g).requires_grad_(True) for s in shapes]
    teacher = [torch.randn(s, generator=g) for s in shapes]
    compiled_hcl = torch.compile(competent_hcl)
    hcl = ("hcl", "HCL (ReviewKD), YOLOv3-tiny's neck features at 128 px, batch 16", {
        "fastdiode": grad_step(lambda: hcl_loss(student, teacher), student),
        AUTHORS: grad_step(lambda: ref.review_hcl(student, teacher), student),
        COMPETENT: grad_step(lambda: competent_hcl(student, teacher), student),
        COMPILED: grad_step(lambda: compiled_hcl(student, teacher), student)})
    maps = [torch.randn(BATCH, 3 * 85, grid, grid, generator=g).view(BATCH, 3, 85, grid, grid).permute(0, 1, 3, 4, 2)
            for grid in (SIZE // 32, SIZE // 32, SIZE // 16, SIZE // 16)]
    s_maps, t_maps = [m.detach().requires_grad_(True) for m in maps[0::2]], maps[1::2]
    compiled_kd = torch.compile(competent_kd)
    kd = ("kd", "dense KD, YOLOv3-tiny's head maps, 80 classes, 128 px, batch 16, T 2", {
        "fastdiode": grad_step(lambda: dense_kd_loss(s_maps, t_maps, 2.0), s_maps),
        AUTHORS: grad_step(lambda: ref.sigmoid_kd(s_maps, t_maps, 2.0), s_maps),
        COMPETENT: grad_step(lambda: competent_kd(s_maps, t_maps, 2.0), s_maps),
        COMPILED: grad_step(lambda: compiled_kd(s_maps, t_maps, 2.0), s_maps)})
    lo = torch.rand(BATCH, 8, 2, generator=g) * 0.6
    boxes = torch.cat([lo, lo + torch.rand(BATCH, 8, 2, generator=g) * 0.35 + 0.05], -1).requires_grad_(True)
    crop_images = torch.randn(BATCH, 3, SIZE, SIZE, generator=g).requires_grad_(True)
    valid = torch.ones(BATCH, 8, dtype=torch.bool)

    def pooled(p8):  # the 4x4 bins nest in the 8x8 ones: both sides pool the same way
        return p8.unflatten(-1, (4, 2)).unflatten(-3, (4, 2)).mean((-1, -3)), p8

    def stacked():
        full = _roi_crop_stacked(crop_images, boxes, valid, 32)
        return pooled(F.adaptive_avg_pool2d(full.flatten(0, 1), 8).view(BATCH, 8, 3, 8, 8))

    compiled_stacked = torch.compile(stacked)
    loss = lambda fn: lambda: sum(p.abs().sum() for p in fn())  # noqa: E731
    inputs = (crop_images, boxes)
    roi = ("roi", "roi_crop + 4x4 and 8x8 pooling, 16 images of 128 px x 8 boxes, 32 px crops (to images and boxes)", {
        "fastdiode": grad_step(loss(lambda: pooled(roi_crop(crop_images, boxes, 32, pool=8))), inputs),
        AUTHORS: grad_step(loss(lambda: ref.dicod_crops(crop_images, boxes, 32)), inputs),
        COMPETENT: grad_step(loss(stacked), inputs), COMPILED: grad_step(loss(compiled_stacked), inputs)})
    return [hcl, kd, roi]


def quant_cases(g: torch.Generator) -> list[tuple]:
    """LSQ fake quantization (4 bits) of a conv input of YOLOv3-tiny at 128 px, batch 16, and of a 3x3 weight per
    output channel: fwd + bwd to the tensor and to its step."""
    x = torch.randn(BATCH, 128, SIZE // 4, SIZE // 4, generator=g).requires_grad_(True)
    w = (torch.randn(256, 128, 3, 3, generator=g) * 0.05).requires_grad_(True)
    s_x, s_w = torch.tensor([0.3]).requires_grad_(True), torch.full((256,), 0.01).requires_grad_(True)
    grad_x, grad_w = 1.0 / (x.numel() * 7) ** 0.5, 1.0 / (w.numel() * 7) ** 0.5
    inputs = (x, s_x, w, s_w)
    compiled = torch.compile(lsq_fake_quant_reference)

    def both(fn):
        return lambda: (fn(x, s_x, -8, 7, grad_x) ** 2).sum() + (fn(w, s_w, -8, 7, grad_w) ** 2).sum()

    def authors():  # their per-tensor op; per channel it reshapes and transposes, slower still
        return (ref.DFQLSQ.apply(x, s_x, grad_x, -8, 7) ** 2).sum() + \
            (ref.DFQLSQ.apply(w, s_w.reshape(-1, 1, 1, 1), grad_w, -8, 7) ** 2).sum()

    return [("lsq", "LSQ fake quantization, 4 bits: 16x128x32x32 activations + a 256x128x3x3 weight per channel", {
        "fastdiode": grad_step(both(lsq_fake_quant), inputs), AUTHORS: grad_step(authors, inputs),
        COMPETENT: grad_step(both(lsq_fake_quant_reference), inputs), COMPILED: grad_step(both(compiled), inputs)})]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--only", nargs="*", default=None, help="case keys (bn, block, tv, augment, hcl, kd, roi, lsq)")
    parser.add_argument("--no-load-check", action="store_true", help="time even on a busy machine (smoke runs)")
    args = parser.parse_args()
    require_quiet(not args.no_load_check)
    result = {**provenance(), "rounds": args.rounds, "cases": []}
    g = torch.Generator().manual_seed(0)
    for key, title, sides in bn_cases(g) + image_cases(g) + distill_cases(g) + quant_cases(g):
        if args.only and key not in args.only:
            continue
        first = first_calls(sides)
        times = interleaved(sides, args.rounds)
        case = {"key": key, "title": title, "target": TARGETS.get(key), "first call s": first,
                "sides": {name: spread(t) for name, t in times.items()},
                "speed-up": {name: ratio_spread(t, times["fastdiode"]) for name, t in times.items()
                             if name != "fastdiode"}}
        result["cases"].append(case)
        print(json.dumps({k: case[k] for k in ("key", "speed-up")}), flush=True)
        result["load_1min_end"] = provenance()["load_1min"]
        save(result, Path(args.out))  # after every case: a run cut short keeps what it measured
    print(to_markdown(result))


def save(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "ops_cpu.json", lambda tmp: tmp.write_text(json.dumps(result, indent=1)))
    atomic_write(out / "ops_cpu.md", lambda tmp: tmp.write_text(to_markdown(result)))


def to_markdown(result: dict) -> str:
    lines = ["# CPU microbenchmarks: fused ops against three baselines in the same run", "",
             f"{result['machine']}, torch {result['torch']}, commit {result['commit']}"
             f"{' (dirty tree)' if result['dirty'] else ''}, {result['date']}; 1-minute load {result['load_1min']:.2f} "
             f"at the start, {result['load_1min_end']:.2f} at the end. fwd + bwd; {result['rounds']} rounds, the sides "
             "taking turns; medians with the interquartile range; a speed-up is the ratio of medians, with the "
             "interquartile range of the per-round ratios. Targets apply to the competent eager baseline.", "",
             "| op | side | median ms (IQR) | fastdiode's speed-up (IQR) | target | met | first call s |",
             "|---|---|---:|---:|---:|:---:|---:|"]
    for case in result["cases"]:
        for name, s in case["sides"].items():
            ratio = case["speed-up"].get(name)
            target = case["target"] if name == COMPETENT else None
            met = "" if target is None else ("yes" if ratio["speed-up"] >= target else "**no**")
            if name == COMPILED and ratio is not None and ratio["speed-up"] < 1:
                met = "**slower than compiled**"
            lines.append(f"| {case['title'] if name == 'fastdiode' else ''} | {name} | {s['median ms']:.2f} "
                         f"({s['q1 ms']:.2f}-{s['q3 ms']:.2f}) | "
                         + (f"{ratio['speed-up']:.2f}x ({ratio['per-round q1']:.2f}-{ratio['per-round q3']:.2f})"
                            if ratio else "") + f" | {'' if target is None else f'{target:g}x'} | {met} | "
                         f"{case['first call s'][name]:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
