"""`kuamo align --finetune`: fine-tune the image backbone and the head together on a catalog, then score the
held-out 10% and write one file (head + int8 backbone delta) with its model card.

The work itself is export/finetune.py; this module packs the catalog (the text targets need the exported
text tower), scores the result with the same harness as `kuamo eval`, and writes the card. On a CPU this is
slow (about 17 photos/s for training on 2 cores): use a GPU (`--device cuda`), or `--limit` for a smoke run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from kuamo.evaluation.split import is_held_out
from kuamo.export.align import cache_key, card
from kuamo.export.finetune import FinetuneRecipe, finetune, resolve_device
from kuamo.export.finetune_pack import Pack, build_pack
from kuamo.export.samples import load_fashion
from kuamo.export.tuned_backbone import delta_arrays, tower_outputs, tuned_parameter_names

Progress = Callable[[str], None]


def pretrained_state() -> dict:
    from kuamo.export.effnet_lite import load_pretrained

    model, _ = load_pretrained()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def run_finetune(*, catalog: Path, model_dir: Path, out: Path, recipe: FinetuneRecipe | None = None,
                 device: str = "cpu", limit: int | None = None, cache_dir: Path = Path(".cache/align"),
                 workers: int = 2, progress: Progress = print) -> dict:
    import torch

    from kuamo.engine.artifacts import ModelArtifacts
    from kuamo.engine.config import EncoderConfig
    from kuamo.engine.encoders import TextEncoder
    from kuamo.engine.imaging import ImagePreprocess
    from kuamo.evaluation.tasks import evaluate_embeddings
    from kuamo.export.effnet_lite import EfficientNetLite0
    from kuamo.export.image_tower import load_photos
    from kuamo.export.tuned_backbone import load_tuned

    resolve_device(device)  # a wrong --device fails now, not after minutes of packing
    recipe = recipe or FinetuneRecipe()
    items = load_fashion(catalog)[:limit] if limit else load_fashion(catalog)
    # cached: the text targets take minutes on a CPU; they depend on the products and the text tower only
    pack_path = Path(cache_dir) / f"pack-{cache_key(ModelArtifacts(model_dir), items, image=False)}.npz"
    pack = Pack.load(pack_path) if pack_path.is_file() else Pack.load(build_pack(items, model_dir, pack_path,
                                                                                 progress))
    held = pack.data["held_out"]
    base = pretrained_state()
    state, head, history = finetune(pack, base, recipe, train=~held, device=device, workers=workers,
                                    progress=progress)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    head.save(out, extra=delta_arrays(state, base, tuned_parameter_names(EfficientNetLite0())))

    progress("align: scoring the held-out split through the shipped (int8-delta) network")
    test_items = [it for it in items if is_held_out(it.id)]
    backbone, shipped_head = load_tuned(out)
    with torch.no_grad():
        feats, logits = tower_outputs(backbone, load_photos(test_items, ImagePreprocess()))
        emb = shipped_head(torch.from_numpy(feats), torch.from_numpy(logits)).numpy()
    txt = TextEncoder(ModelArtifacts(model_dir), EncoderConfig(precision="fp32"))
    titles = txt.encode([it.title for it in test_items], kind="query")
    metrics = evaluate_embeddings(test_items, emb, titles, txt, raw_features=feats)
    model_card = card(recipe, catalog=catalog, n_train=int((~held).sum()), n_test=int(held.sum()), metrics=metrics,
                      extra={"weights": out.name, "bytes": out.stat().st_size, "kind": "finetuned backbone + head",
                             "device": device, "history": history})
    out.with_name("align.json").write_text(json.dumps(model_card, indent=2, ensure_ascii=False), encoding="utf-8")
    return model_card
