"""Helpers shared by tests: small datasets written on the fly, and diffusers reference pipelines."""

import json

import numpy as np
from PIL import Image


def write_dataset(folder, n: int = 2, extra: list[dict] = ()) -> str:
    """A JSONL manifest of ``n`` random photos with prompts and masks, plus ``extra`` entries."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    entries = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
        entries.append({
            "id": f"img{i}", "image": f"img{i}.png", "source_prompt": "a photo of a cat",
            "target_prompt": "a photo of a dog", "edit_type": "change_object", "edit_words": ["cat", "dog"],
            "mask_shapes": [{"shape": "ellipse", "box": [0.25, 0.25, 0.75, 0.75]}],
        })  # fmt: skip
    entries += list(extra)
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in entries) + "\n")
    return str(path)


def read_cells(run_dir):
    """A run's cells as a DataFrame (``Store.cells_frame``), the store closed again."""
    from bench.store import Store

    store = Store(run_dir)
    try:
        return store.cells_frame()
    finally:
        store.close()


def diffusers_pipeline(pipeline_class, backbone, steps: int):
    """A diffusers ``pipeline_class`` over the backbone's own components and a fresh ``steps``-step
    scheduler, without its progress bar: the reference an adapter is compared with."""
    pipe = pipeline_class(
        vae=backbone.vae, text_encoder=backbone.text_encoder, tokenizer=backbone.tokenizer, unet=backbone.unet,
        scheduler=backbone.new_scheduler(steps), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe
