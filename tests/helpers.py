"""Helpers shared by tests: small datasets written on the fly, and diffusers reference pipelines."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


#: Environment variables putting the tests' tiny backbones on another device and dtype (the GPU suite,
#: ``benchmarks/gpu_suite.py``, runs the tests marked ``backbone`` with ``cuda`` and fp32, then fp16).
TEST_DEVICE_VAR, TEST_DTYPE_VAR = "EDITBENCH_TEST_DEVICE", "EDITBENCH_TEST_DTYPE"


def tiny_backbone_spec(name: str = "tiny", device: str = "cpu", **fields):
    """The ``BackboneSpec`` a test's backbone uses: ``device`` and dtype fp32 unless
    ``$EDITBENCH_TEST_DEVICE`` / ``$EDITBENCH_TEST_DTYPE`` say otherwise; a dtype given in
    ``fields`` (a test of half precision) is kept."""
    from bench.diffusion.backbone import BackboneSpec

    fields.setdefault("dtype", os.environ.get(TEST_DTYPE_VAR, "fp32"))
    return BackboneSpec(name=name, device=os.environ.get(TEST_DEVICE_VAR, device), **fields)


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


def run_config(tmp_path, methods, extra=(), n=2, **more):
    """A validated config running ``methods`` on ``n`` written samples (plus ``extra`` entries)."""
    from bench.execution.config import build_config

    data = write_dataset(tmp_path / "data", n=n, extra=extra)
    raw = {"dataset": {"name": None, "path": data}, "methods": methods, "output": str(tmp_path / "runs"), **more}
    return build_config(raw)


def read_cells(run_dir):
    """A run folder's cells as a DataFrame (``Store.cells_frame``)."""
    from bench.store import Store

    store = Store(run_dir)
    try:
        return store.cells_frame()
    finally:
        store.close()


def diffusers_pipeline(pipeline_class, backbone, steps: int, **components):
    """A diffusers ``pipeline_class`` over the backbone's own components and a fresh ``steps``-step
    scheduler, without its progress bar: the reference an adapter is compared with.
    ``components`` add or replace some (a ``controlnet``, an ``adapter``, another ``unet``)."""
    pipe = pipeline_class(**{
        "vae": backbone.vae, "text_encoder": backbone.text_encoder, "tokenizer": backbone.tokenizer,
        "unet": backbone.unet, "scheduler": backbone.new_scheduler(steps), "safety_checker": None,
        "feature_extractor": None, "requires_safety_checker": False, **components,
    })  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


def committed(db: Path) -> int:
    """Cells committed so far to the store ``db`` (0 before it exists), read-only: safe while a run writes it."""
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM cells").fetchone()[0]
    except sqlite3.OperationalError:  # schema not created yet
        return 0


def interrupt_after(args: list[str], out: Path, cells: int, sig: int) -> tuple[int, str]:
    """Start ``run_bench.py run ARGS`` (new run folder under ``out``), send ``sig`` once ``cells``
    cells are committed; returns its exit status and stderr."""
    from bench.paths import repo_root

    proc = subprocess.Popen(
        [sys.executable, "run_bench.py", "run", *args, "--out", str(out), "--quiet"],
        cwd=repo_root(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            runs = list(out.glob("*/results.sqlite")) if out.exists() else []
            if runs and committed(runs[0]) >= cells:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"run ended before it could be interrupted: {proc.stderr.read().decode()[-2000:]}"
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, stderr.decode()


def kill_9_after(args: list[str], out: Path, cells: int) -> Path:
    """``interrupt_after`` with SIGKILL; returns the run folder."""
    interrupt_after(args, out, cells, signal.SIGKILL)
    (run_dir,) = out.iterdir()
    return run_dir


#: The published schemas of the hub benchmarks (column -> feature type), from their dataset cards;
#: written here independently of the bundled cards, so a card mapping a wrong column fails.
HUB_SCHEMAS = {
    "magicbrush": {"img_id": "string", "turn_index": "int32", "source_img": "image", "mask_img": "image",
                   "instruction": "string", "target_img": "image"},
    "emu_edit": {"instruction": "string", "image": "image", "task": "string", "split": "string", "idx": "int64",
                 "hash": "string", "input_caption": "string", "output_caption": "string"},
    "gedit_bench": {"task_type": "string", "key": "string", "instruction": "string",
                    "instruction_language": "string", "input_image": "image", "input_image_raw": "image",
                    "Intersection_exist": "bool"},
}  # fmt: skip


def _fixture_rows(name: str, n: int, rng, turns: int = 2) -> dict[str, list]:
    def photo(w=80, h=64):
        return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))

    if name == "magicbrush":  # n images with ``turns`` turns each; turn k's source is turn k-1's ground truth
        rows = {c: [] for c in HUB_SCHEMAS[name]}
        for i in range(n):
            images = [photo() for _ in range(turns + 1)]
            mask = np.zeros((64, 80), np.uint8)
            mask[16:48, 20:60] = 255
            for turn, (src, tgt) in enumerate(zip(images, images[1:]), 1):
                rows["img_id"].append(str(1000 + i))
                rows["turn_index"].append(turn)
                rows["source_img"].append(src)
                rows["mask_img"].append(Image.fromarray(mask).convert("RGB"))
                rows["instruction"].append(f"make turn {turn} red")
                rows["target_img"].append(tgt)
        return rows
    if name == "emu_edit":
        tasks = ["background", "global", "style", "remove", "add", "local", "texture"]
        return {"instruction": [f"edit {i}" for i in range(n)], "image": [photo() for _ in range(n)],
                "task": [tasks[i % len(tasks)] for i in range(n)], "split": ["test"] * n, "idx": list(range(n)),
                "hash": [f"h{i}" for i in range(n)], "input_caption": [f"a photo {i}" for i in range(n)],
                "output_caption": [f"an edited photo {i}" for i in range(n)]}  # fmt: skip
    keys = [f"k{i // 2}" for i in range(n)]
    return {"task_type": [["subject-add", "style_change"][i % 2] for i in range(n)], "key": keys,
            "instruction": [f"do {i}" for i in range(n)], "instruction_language": [["en", "cn"][i % 2] for i in range(n)],
            "input_image": [photo(40, 32) for _ in range(n)], "input_image_raw": [photo() for _ in range(n)],
            "Intersection_exist": [i % 4 < 2 for i in range(n)]}  # fmt: skip


def hub_fixture(name: str, n: int = 3, turns: int = 2):
    """A ``datasets.Dataset`` with exactly the published schema of benchmark ``name`` (MagicBrush:
    ``n`` chains of ``turns`` turns)."""
    import datasets

    kinds = {"string": datasets.Value("string"), "int32": datasets.Value("int32"), "int64": datasets.Value("int64"),
             "bool": datasets.Value("bool"), "image": datasets.Image()}  # fmt: skip
    features = datasets.Features({c: kinds[t] for c, t in HUB_SCHEMAS[name].items()})
    return datasets.Dataset.from_dict(_fixture_rows(name, n, np.random.default_rng(0), turns), features=features)


def write_hub_fixture(folder, name: str, split: str, n: int = 3, layout: str = "parquet", turns: int = 2) -> str:
    """The fixture saved as the hub publishes it (``data/<split>-00000-of-00001.parquet``) or with ``save_to_disk``."""
    import datasets

    folder = Path(folder)
    dataset = hub_fixture(name, n, turns)
    if layout == "disk":
        datasets.DatasetDict({split: dataset}).save_to_disk(str(folder))
    else:
        (folder / "data").mkdir(parents=True, exist_ok=True)
        dataset.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return str(folder)


def cell_rows(samples, preps=None, seeds=(0, 1)):
    """A batch's ``EditRow``s: every sample x seed, each with its cell's generator (``cell_seed``)
    and its sample's preparation (``preps`` by sample id; none without)."""
    import torch

    from bench.execution.plan import cell_seed
    from bench.method import EditRow

    return [
        EditRow(sample, (preps or {}).get(sample.id), torch.Generator().manual_seed(cell_seed(sample.id, seed)))
        for sample in samples
        for seed in seeds
    ]


#: A tiny OpenCLIP architecture (HPS v2.1's family, shrunk), registered with open_clip by ``tiny_openclip``.
TINY_OPENCLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16,
                 "patch_size": 8}, "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                 "layers": 2}}  # fmt: skip
TINY_OPENCLIP_NAME = "editbench-tiny-openclip"


def tiny_openclip(folder) -> str:
    """Register ``TINY_OPENCLIP`` with open_clip (its config written in ``folder``); returns its name."""
    import open_clip

    path = Path(folder) / f"{TINY_OPENCLIP_NAME}.json"
    path.write_text(json.dumps(TINY_OPENCLIP))
    open_clip.add_model_config(path)
    return TINY_OPENCLIP_NAME


#: The words of a tiny BERT WordPiece vocabulary (ImageReward's tokenizer, shrunk).
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "dog", "cat", "red", "##s"]


def tiny_bert_tokenizer(folder) -> str:
    """A BERT tokenizer of ``TINY_VOCAB`` saved in ``folder/bert``; returns that folder."""
    from transformers import BertTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder / "bert")
    return str(folder / "bert")


def write_turns_manifest(folder, n: int = 2) -> str:
    """A JSONL manifest of ``n`` three-turn chains (one line each, ``instructions`` per turn)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    lines = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / f"c{i}.png")
        lines.append({"id": f"c{i}", "image": f"c{i}.png", "source_prompt": "a photo",
                      "instructions": ["add a hat", "make it red", "add snow"],
                      "target_prompts": ["a photo with a hat", "a red photo with a hat", "a snowy red photo"]})  # fmt: skip
    path = folder / "chains.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return str(path)


def write_kris(folder, annotations: dict, seed: int = 0) -> str:
    """A local KRIS_Bench copy in its published schema: ``<category>/annotation.json`` for every
    category of the card, ``annotations`` ({category: {key: item}}) where given and empty elsewhere,
    each item's images (``ori_img``, a name or a list; ``gt_img`` when not empty) written beside it."""
    from bench.data import dataset_cards

    folder, rng = Path(folder), np.random.default_rng(seed)
    for category in dataset_cards()["kris_bench"]["edit_types"]:
        (folder / category).mkdir(parents=True)
        items = annotations.get(category, {})
        for item in items.values():
            names = [item["ori_img"]] if isinstance(item["ori_img"], str) else item["ori_img"]
            for name in [*names, item.get("gt_img") or None]:
                if name:
                    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / category / name)
        (folder / category / "annotation.json").write_text(json.dumps(items, indent=2))
    return str(folder)
