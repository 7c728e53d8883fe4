"""Fine-tune EfficientNet-Lite0 end to end into the frozen e5 space (`kuamo align --finetune`).

The head-only recipe (export/align.py) is capped by what ImageNet features say about a 60x80 product photo.
Here the backbone learns too: symmetric InfoNCE against e5 title / attribute-template targets, as the head
recipe, plus a distillation term that keeps the ImageNet logits close to the pretrained network's (they
feed the zero-shot class map that serves goods the catalog never showed). BatchNorm statistics stay frozen
and the classifier is not trained, so the tuned network differs from the pretrained one only in its
convolution and BN affine weights. Made for a GPU (minutes); runs on a CPU for smoke tests.

Input: a pack (export/finetune_pack.py). Output: the tuned backbone state and the head.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from kuamo.engine.errors import InvalidInput
from kuamo.engine.imaging import ImagePreprocess, decode_image, preprocess
from kuamo.export.align_head import AlignHead, HeadShape
from kuamo.export.contrastive import multi_positive_infonce
from kuamo.export.effnet_lite import EfficientNetLite0
from kuamo.export.finetune_pack import Pack
from kuamo.export.tuned_backbone import delta_arrays, tuned_parameter_names

Progress = Callable[[str], None]
ALT_ID_OFFSET = 10_000_000  # template ids never collide with title ids


@dataclass(frozen=True, kw_only=True)
class FinetuneRecipe:
    """Defaults = the shipped stage 1 (export/heads/align.json: backbone.stage1), chosen on held-out proxies
    (head-only R@10) of five H200 runs: 12 epochs at 2e-4 with distill 1.0: 74.1 (75.2 without distillation);
    18 at 3e-4: 76.3; this one: 78.5; 5e-4 with fewer templates (0.2 / 0.2): 72.9."""

    epochs: int = 20  # the one-cycle schedule's length
    stop_epoch: int | None = 17  # the shipped run ended here (a time cap on the GPU box); None = all epochs
    batch: int = 256
    lr_backbone: float = 3e-4
    lr_head: float = 1e-3
    weight_decay: float = 0.05
    temperature: float = 0.07
    template_share: float = 0.3
    zh_template_share: float = 0.25
    distill: float = 0.25  # weight of KL(pretrained logits || tuned logits)
    distill_temperature: float = 2.0
    hidden: int = 1024
    augment: bool = True  # flips and mild zoom/shift on a white canvas; never colour (colour is in the titles)
    alpha: float = 0.6  # serving blend with the zero-shot map, as Recipe.alpha
    seed: int = 0


def resolve_device(name: str) -> torch.device:
    """A torch device that exists here, or InvalidInput saying what is wrong with the name."""
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInput(f"device {name!r} is not a torch device (cpu, cuda, cuda:1 ...): {exc}",
                           field="device") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput(f"device {name!r}: this torch ({torch.__version__}) sees no CUDA GPU; use cpu",
                           field="device")
    return dev


def _decode_one(args: tuple[bytes, ImagePreprocess]) -> np.ndarray:
    data, pre = args
    x = preprocess(decode_image(data), pre)
    # back to the uint8 pixels preprocess normalised: exact, and 4x smaller to hold
    mean, std = np.asarray(pre.mean, np.float32)[:, None, None], np.asarray(pre.std, np.float32)[:, None, None]
    return np.round((x * std + mean) * 255.0).astype(np.uint8)


def decode_pixels(pack: Pack, indices: np.ndarray, pre: ImagePreprocess, workers: int = 1) -> np.ndarray:
    """(n, 3, size, size) uint8 through the runtime's own decode + preprocess."""
    jobs = [(pack.jpeg(int(i)), pre) for i in indices]
    if workers <= 1:
        return np.stack([_decode_one(j) for j in jobs])
    with ProcessPoolExecutor(workers) as ex:
        return np.stack(list(ex.map(_decode_one, jobs, chunksize=256)))


class Normaliser:
    """uint8 pixels -> the tower's input, plus the augmentation, on the training device."""

    def __init__(self, pre: ImagePreprocess, device: torch.device) -> None:
        self.mean = torch.tensor(pre.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(pre.std, device=device).view(1, 3, 1, 1)
        self.white = (torch.tensor(pre.pad_colour, device=device).view(1, 3, 1, 1) / 255.0 - self.mean) / self.std

    def __call__(self, u8: torch.Tensor) -> torch.Tensor:
        return (u8.float() / 255.0 - self.mean) / self.std

    def augment(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        flip = torch.rand(n, generator=gen, device=x.device) < 0.5
        x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
        scale = torch.empty(n, device=x.device).uniform_(0.85, 1.15, generator=gen)
        shift = torch.empty(n, 2, device=x.device).uniform_(-0.06, 0.06, generator=gen)
        theta = torch.zeros(n, 2, 3, device=x.device)
        theta[:, 0, 0] = theta[:, 1, 1] = scale
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # zoomed-out borders become the pad colour, as the runtime pads
        return F.grid_sample(x - self.white, grid, mode="bilinear", padding_mode="zeros",
                             align_corners=False) + self.white


def freeze_batchnorm(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


@torch.no_grad()
def embed(model: EfficientNetLite0, head: AlignHead, pixels: torch.Tensor, norm: Normaliser,
          batch: int = 512) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(blended embedding, head-only embedding, raw features) in eval mode, float32."""
    model.eval()
    head.eval()
    out: list[list[torch.Tensor]] = [[], [], []]
    for s in range(0, len(pixels), batch):
        feats, logits = model(norm(pixels[s: s + batch]).contiguous(memory_format=torch.channels_last))
        feats, logits = feats.float(), logits.float()
        for k, v in enumerate((head(feats, logits), head.trained(feats, logits), feats)):
            out[k].append(v)
    return tuple(torch.cat(o) for o in out)  # type: ignore[return-value]


def proxy_metrics(emb: torch.Tensor, titles: torch.Tensor, articles: np.ndarray) -> dict[str, float]:
    """Known-item R@1/R@10 (own title as query) and image->image P@10 (same articleType), in percent."""
    sim = titles @ emb.T
    rank = (sim > sim.diagonal()[:, None]).sum(1)
    ii = emb @ emb.T
    ii.fill_diagonal_(-float("inf"))
    top = ii.topk(min(10, len(emb) - 1), dim=1).indices.cpu().numpy()
    same = articles[top] == articles[:, None]
    return {"R@1": float((rank < 1).float().mean() * 100), "R@10": float((rank < 10).float().mean() * 100),
            "i2i_P@10": float(same.mean() * 100)}


def finetune(pack: Pack, backbone_state: dict[str, torch.Tensor], recipe: FinetuneRecipe, *, train: np.ndarray,
             evaluate: np.ndarray | None = None, device: str = "cpu", workers: int = 1,
             max_seconds: float | None = None,
             progress: Progress = print) -> tuple[dict[str, torch.Tensor], AlignHead, list[dict]]:
    """Train on the products where `train` is true; report proxy metrics on `evaluate` after each epoch."""
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    dev = resolve_device(device)
    gen = torch.Generator(device=dev).manual_seed(recipe.seed)
    cuda = dev.type == "cuda"
    pre = ImagePreprocess()
    norm = Normaliser(pre, dev)
    tr_idx = np.flatnonzero(train)
    ev_idx = np.flatnonzero(evaluate) if evaluate is not None else np.zeros(0, dtype=np.int64)
    t0 = time.perf_counter()
    pixels = torch.from_numpy(decode_pixels(pack, np.concatenate([tr_idx, ev_idx]), pre, workers)).to(dev)
    tr_px, ev_px = pixels[: len(tr_idx)], pixels[len(tr_idx):]
    progress(f"finetune: decoded {len(pixels)} photos in {time.perf_counter() - t0:.1f} s")

    model = EfficientNetLite0()
    model.load_state_dict(backbone_state, strict=True)
    model = model.to(dev, memory_format=torch.channels_last)
    tuned = set(tuned_parameter_names(model))
    for name, param in model.named_parameters():
        param.requires_grad_(name in tuned)
    teacher = copy.deepcopy(model).eval().requires_grad_(False) if recipe.distill > 0 else None

    head = AlignHead(HeadShape(hidden=recipe.hidden), alpha=recipe.alpha)
    head.class_text.copy_(torch.from_numpy(pack.data["class_text"].astype(np.float32)))
    head = head.to(dev)
    with torch.no_grad():  # input standardisation from the pretrained network's features on the train split
        model.eval()
        xs = [torch.cat(model(norm(tr_px[s: s + 512]).contiguous(memory_format=torch.channels_last)), 1).float()
              for s in range(0, len(tr_px), 512)]
        x = torch.cat(xs)
        head.mean.copy_(x.mean(0))
        head.std.copy_(x.std(0) + 1e-6)
        del xs, x

    d = pack.data
    vec_sets = [torch.from_numpy(pack.titles()).to(dev),
                torch.from_numpy(d["tmpl"].astype(np.float32)[d["tmpl_idx"]]).to(dev),
                torch.from_numpy(d["zh"].astype(np.float32)[d["zh_idx"]]).to(dev)]
    id_sets = [d["title_idx"].astype(np.int64), d["tmpl_idx"].astype(np.int64) + ALT_ID_OFFSET,
               d["zh_idx"].astype(np.int64) + 2 * ALT_ID_OFFSET]
    bounds = np.cumsum([recipe.template_share, recipe.zh_template_share])
    articles = d["articleType"]

    logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / recipe.temperature)), device=dev))
    backbone_params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": backbone_params, "lr": recipe.lr_backbone},
                             {"params": [*head.mlp.parameters(), logit_scale], "lr": recipe.lr_head}],
                            weight_decay=recipe.weight_decay)
    steps = max(1, len(tr_idx) // recipe.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[recipe.lr_backbone, recipe.lr_head],
                                                total_steps=recipe.epochs * steps, pct_start=0.15)
    history: list[dict] = []
    t_dist = recipe.distill_temperature
    for epoch in range(recipe.epochs):
        model.train()
        freeze_batchnorm(model)
        head.train()
        order = rng.permutation(len(tr_idx))
        choice = np.searchsorted(bounds, rng.random(len(tr_idx)), side="right")  # 0 title, 1 en, 2 zh template
        choice = np.where(choice > 2, 0, choice)
        sums = {"loss": 0.0, "distill": 0.0}
        te = time.perf_counter()
        for s in range(steps):
            local = order[s * recipe.batch: (s + 1) * recipe.batch]
            rows = tr_idx[local]
            c = choice[local]
            tgt = vec_sets[0][torch.from_numpy(rows).to(dev)]
            tid = id_sets[0][rows].copy()
            for k in (1, 2):
                sel = c == k
                tgt[torch.from_numpy(sel).to(dev)] = vec_sets[k][torch.from_numpy(rows[sel]).to(dev)]
                tid[sel] = id_sets[k][rows[sel]]
            xb = norm(tr_px[torch.from_numpy(local).to(dev)])
            if recipe.augment:
                xb = norm.augment(xb, gen)
            xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=cuda):
                feats, logits = model(xb)
                img = head.trained(feats.float(), logits.float())
                loss = multi_positive_infonce(img, tgt, tid, logit_scale)
                if teacher is not None:
                    with torch.no_grad():
                        t_logits = teacher(xb)[1].float()
                    kl = F.kl_div(F.log_softmax(logits.float() / t_dist, 1), F.log_softmax(t_logits / t_dist, 1),
                                  reduction="batchmean", log_target=True) * t_dist ** 2
                    sums["distill"] += float(kl.detach())
                    loss = loss + recipe.distill * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            sums["loss"] += float(loss.detach())
        row = {"epoch": epoch + 1, "seconds": round(time.perf_counter() - te, 1),
               **{k: round(v / steps, 4) for k, v in sums.items()},
               "temperature": round(1 / float(logit_scale.detach().exp()), 4)}
        if len(ev_idx):
            blended, head_only, _ = embed(model, head, ev_px, norm)
            titles = vec_sets[0][torch.from_numpy(ev_idx).to(dev)]
            row["held_out"] = proxy_metrics(blended, titles, articles[ev_idx])
            row["held_out_head_only"] = proxy_metrics(head_only, titles, articles[ev_idx])
        history.append(row)
        progress(f"finetune: {json.dumps(row)}")
        if recipe.stop_epoch is not None and epoch + 1 >= recipe.stop_epoch:
            break
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds and epoch + 1 < recipe.epochs:
            history.append({"stopped_early": f"after epoch {epoch + 1}: over {max_seconds} s"})
            progress(f"finetune: stopping early after epoch {epoch + 1} (over {max_seconds} s)")
            break
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    return state, head.cpu().eval(), history


def load_state_npz(path: Path | str) -> dict[str, torch.Tensor]:
    with np.load(path) as data:
        return {k: torch.from_numpy(data[k].astype(np.float32)) for k in data.files}


def main() -> None:
    """Run one recipe on a pack (the command a GPU box runs): writes <out>.npz (head + backbone delta, the
    shipped format) and <out>.json (recipe and per-epoch held-out proxies)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pack", type=Path, required=True)
    p.add_argument("--weights", type=Path, required=True, help="pretrained EfficientNet-Lite0 state (.npz)")
    p.add_argument("--out", type=Path, required=True, help="output prefix")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--limit", type=int, default=None, help="first N products only (smoke runs)")
    p.add_argument("--exclude", default="",
                   help="masterCategory/subCategory names kept out of training (comma-separated)")
    p.add_argument("--recipe", default="{}", help="JSON overrides of FinetuneRecipe")
    p.add_argument("--max-seconds", type=float, default=None, help="stop after the epoch that passes this")
    args = p.parse_args()
    try:
        recipe = FinetuneRecipe(**json.loads(args.recipe))
    except (ValueError, TypeError) as exc:
        p.error(f"--recipe must be a JSON object of FinetuneRecipe fields: {exc}")
    pack = Pack.load(args.pack)
    n = min(len(pack), args.limit or len(pack))
    keep = np.zeros(len(pack), dtype=bool)
    keep[:n] = True
    held = pack.data["held_out"]
    excluded = np.zeros(len(pack), dtype=bool)
    for name in filter(None, args.exclude.split(",")):
        hit = (pack.data["masterCategory"] == name) | (pack.data["subCategory"] == name)
        if not hit.any():
            p.error(f"--exclude {name!r}: no product has that masterCategory or subCategory")
        excluded |= hit
    state, head, history = finetune(pack, load_state_npz(args.weights), recipe, train=keep & ~held & ~excluded,
                                    evaluate=keep & held & ~excluded, device=args.device, workers=args.workers,
                                    max_seconds=args.max_seconds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    init = load_state_npz(args.weights)
    head.save(Path(f"{args.out}.npz"), extra=delta_arrays(state, init, tuned_parameter_names(EfficientNetLite0())))
    Path(f"{args.out}.json").write_text(json.dumps({"recipe": asdict(recipe), "exclude": args.exclude,
                                                    "train": int((keep & ~held & ~excluded).sum()),
                                                    "history": history}, indent=1))


if __name__ == "__main__":
    main()
