"""fastdiode's YOLOv8/11 against ultralytics itself, on identical weights and inputs.

    python benchmarks/compare_ultralytics.py --out benchmarks/results

Run it with a Python that has ultralytics installed (and fastdiode importable, e.g. PYTHONPATH=.); fastdiode itself
never imports ultralytics. For yolov8n and yolo11n (random weights and BN statistics, 7 classes) it writes an
ultralytics checkpoint as ultralytics does (the model object pickled, fp16), reads it with fastdiode's restricted
loader, and compares in float64: the raw head maps (train and eval mode), the decoded boxes and scores, NMS
(validation and prediction settings), and ``v8DetectionLoss`` (values and input gradients) on random batches with
boxes at the image edges, several boxes per image, an image without boxes, tiny boxes, and a one-class model.
Writes ``ultralytics_agreement.{json,md}``.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastdiode.models.ultra_decode import decode  # noqa: E402
from fastdiode.models.ultralytics_checkpoint import load_ultralytics  # noqa: E402


def randomize(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(1 + 0.2 * torch.randn(m.num_features, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.num_features, generator=g))


def ultralytics_model(family: str, nc: int, seed: int):
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(seed)
    model = DetectionModel(f"{family}.yaml", nc=nc, verbose=False)
    randomize(model, seed)
    model.args = types.SimpleNamespace(box=7.5, cls=0.5, dfl=1.5)
    return model


def write_checkpoint(model, path: Path) -> None:
    """As ultralytics' trainer saves one: the model object itself, in fp16, beside plain metadata."""
    torch.save({"date": "2026-12-03", "version": "8.4.190", "model": copy.deepcopy(model).half(), "ema": None,
                "train_args": {"imgsz": 160}}, path)


def batches(nc: int, size: int, seed: int) -> list[tuple[str, torch.Tensor, dict]]:
    """(name, padded fastdiode targets (B, K, 5), ultralytics batch dict) cases."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    rows = {
        "random boxes": [[(int(torch.randint(nc, (1,), generator=g)), *(0.2 + 0.6 * torch.rand(2, generator=g)),
                           *(0.05 + 0.4 * torch.rand(2, generator=g))) for _ in range(3)] for _ in range(2)],
        "edges and overlap": [[(0, 0.05, 0.05, 0.1, 0.1), (min(1, nc - 1), 0.95, 0.5, 0.1, 0.9),
                               (0, 0.5, 0.5, 0.6, 0.6), (min(2, nc - 1), 0.52, 0.5, 0.58, 0.62)], []],
        "tiny boxes": [[(0, 0.3, 0.3, 4 / size, 3 / size), (0, 0.6, 0.6, 10 / size, 20 / size)],
                       [(min(1, nc - 1), 0.5, 0.5, 1.0, 1.0)]],
    }
    for name, images in rows.items():
        k = max(len(r) for r in images)
        padded = torch.full((len(images), k, 5), -1.0, dtype=torch.float64)
        idx, cls, boxes = [], [], []
        for i, r in enumerate(images):
            for j, row in enumerate(r):
                padded[i, j] = torch.tensor(row, dtype=torch.float64)
                idx.append(i)
                cls.append(row[0])
                boxes.append(row[1:])
        batch = {"batch_idx": torch.tensor(idx, dtype=torch.float64), "cls": torch.tensor(cls, dtype=torch.float64),
                 "bboxes": torch.tensor(boxes, dtype=torch.float64).view(-1, 4)}
        cases.append((name, padded, batch))
    return cases


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def compare(family: str, nc: int, size: int, seed: int, work: Path) -> dict:
    from ultralytics.utils.loss import v8DetectionLoss
    from ultralytics.utils.nms import non_max_suppression

    ref = ultralytics_model(family, nc, seed)
    path = work / f"{family}-{nc}.pt"
    write_checkpoint(ref, path)
    ours = load_ultralytics(path).double()
    ref = copy.deepcopy(ref).half().double()  # the same fp16-rounded weights on both sides
    result = {"model": family, "classes": nc, "size": size}
    x = torch.rand(2, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    for mode in ("train", "eval"):
        ref.train(mode == "train")
        ours.train(mode == "train")
        out = ref(x)
        heads = out if mode == "train" else out[1]
        maps = ours(x)
        flat = torch.cat([p.flatten(2) for p in maps], 2)
        result[f"maps {mode}"] = max(max_diff(flat[:, : 4 * ours.reg_max], heads["boxes"]),
                                     max_diff(flat[:, 4 * ours.reg_max:], heads["scores"]))
        if mode == "eval":
            boxes, scores = decode(maps, ours.strides, ours.reg_max)
            xywh = torch.cat([(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], -1)
            result["decoded boxes"] = max_diff(xywh.permute(0, 2, 1), out[0][:, :4])
            result["decoded scores"] = max_diff(scores.permute(0, 2, 1), out[0][:, 4:])
            for name, conf, multi in (("nms val (conf 0.001, multi-label)", 0.001, True),
                                      ("nms predict (conf 0.25)", 0.25, False)):
                theirs = non_max_suppression(out[0], conf, 0.7, multi_label=multi, max_det=300)
                mine = ours.detect(maps, conf, 0.7, 300, multi_label=multi)
                counts = [(len(t), len(m)) for t, m in zip(theirs, mine)]
                same = all(len(t) == len(m) for t, m in zip(theirs, mine))
                diff = max(max_diff(t, m) for t, m in zip(theirs, mine)) if same else None
                result[name] = {"counts (ultralytics, fastdiode)": counts, "max |diff|": diff}
    ref.train()
    ours.train()
    criterion = v8DetectionLoss(ref)
    torch.set_default_dtype(torch.float64)  # ultralytics builds its target tensor in the default dtype
    losses = {}
    for name, padded, batch in batches(nc, size, seed):
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        loss_ref, _ = criterion(ref(xa), batch)
        (g_ref,) = torch.autograd.grad(loss_ref.sum(), xa)
        loss, parts = ours.task_loss(ours(xb), padded)
        (g,) = torch.autograd.grad(loss, xb)
        losses[name] = {"ultralytics [box, cls, dfl]": loss_ref.tolist(), "fastdiode": parts.tolist(),
                        "max |diff|": max_diff(parts, loss_ref.detach()),
                        "input gradient max |diff| / max |g|": max_diff(g, g_ref) / g_ref.abs().max().item()}
    torch.set_default_dtype(torch.float32)
    result["loss"] = losses
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    import ultralytics

    results = {"ultralytics": ultralytics.__version__, "torch": torch.__version__, "runs": []}
    with tempfile.TemporaryDirectory() as work:
        for family, nc in (("yolov8n", 7), ("yolo11n", 7), ("yolov8n", 1)):
            results["runs"].append(compare(family, nc, 160, 0, Path(work)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ultralytics_agreement.json").write_text(json.dumps(results, indent=1))
    lines = [f"# fastdiode vs ultralytics {results['ultralytics']} (torch {results['torch']}), float64, 160 px x 2",
             "", "Largest absolute differences (the input gradient's relative to its largest entry).", "",
             "| model | classes | maps (train) | maps (eval) | decoded boxes | decoded scores | NMS val | NMS predict "
             "| loss (worst case) | input gradient |", "|---|---:|---:|---:|---:|---:|---|---|---:|---:|"]
    for r in results["runs"]:
        nms = [r[k] for k in ("nms val (conf 0.001, multi-label)", "nms predict (conf 0.25)")]
        nms = ["same boxes, {:.1e}".format(n["max |diff|"]) if n["max |diff|"] is not None else
               f"counts differ {n['counts (ultralytics, fastdiode)']}" for n in nms]
        loss = max(v["max |diff|"] for v in r["loss"].values())
        grad = max(v["input gradient max |diff| / max |g|"] for v in r["loss"].values())
        lines.append(f"| {r['model']} | {r['classes']} | {r['maps train']:.1e} | {r['maps eval']:.1e} | "
                     f"{r['decoded boxes']:.1e} | {r['decoded scores']:.1e} | {nms[0]} | {nms[1]} | {loss:.1e} | "
                     f"{grad:.1e} |")
    (out / "ultralytics_agreement.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
