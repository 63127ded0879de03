"""GEditBench v2 as a card: a local copy in its published schema (``metadata.jsonl`` with the
candidate models' edits under ``images/edited/<model>/``) loaded through the card, the candidates
entered as external rows, judged pairwise (``editbench pairwise``: a rule judge through the
endpoint backend, and the tiny local judge with ``--untrained-extractors``) and ranked by Elo
with ``report --table geditbench_v2``."""

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from bench.data import DatasetSpec, load_dataset
from bench.execution.config import build_config
from bench.execution.runner import start_run
from run_bench import main
from tests.chat_server import ChatServer

KEYS = ["subject_add_0", "color_alter_1", "background_change_2", "style_transfer_3"]
#: Each candidate's edits: the source plus this much noise (less noise keeps the source closer).
MODELS = {"Closest": 2, "Middle": 30, "Farthest": 90}


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITBENCH_CACHE", str(tmp_path / "cache"))


def write_geditbench_v2(folder):
    """metadata.jsonl ({key, instruction, source_image, candidates: [{model, image}]}) and its images."""
    rng = np.random.default_rng(0)
    lines = []
    for i, key in enumerate(KEYS):
        source = rng.integers(60, 190, (48, 64, 3)).astype(np.int16)
        (folder / "images" / "source").mkdir(parents=True, exist_ok=True)
        Image.fromarray(source.astype(np.uint8)).save(folder / "images" / "source" / f"{key}.png")
        candidates = []
        for model, noise in MODELS.items():
            edited = np.clip(source + rng.integers(-noise, noise + 1, source.shape), 0, 255).astype(np.uint8)
            (folder / "images" / "edited" / model).mkdir(parents=True, exist_ok=True)
            Image.fromarray(edited).save(folder / "images" / "edited" / model / f"{key}.png")
            candidates.append({"model": model, "image": f"images/edited/{model}/{key}.png"})
        lines.append({"key": key, "instruction": f"edit number {i}", "source_image": f"images/source/{key}.png",
                      "candidates": candidates})  # fmt: skip
    (folder / "metadata.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def closer_to_source(images, text, body):
    """The edit whose pixels are closer to the source's wins (mean absolute difference)."""
    source, a, b = (np.asarray(i, dtype=float) for i in images)
    da, db = np.abs(a - source).mean(), np.abs(b - source).mean()
    return json.dumps({"winner": "Tie" if abs(da - db) < 1e-9 else "Image A" if da < db else "Image B"})


def arena_run(tmp_path):
    folder = write_geditbench_v2(tmp_path / "geditv2")
    raw = {"dataset": {"name": "geditbench_v2", "path": str(folder)},
           "methods": {"external": {"folder": [str(folder / "images" / "edited" / m) for m in MODELS]}},
           "metrics": [], "output": str(tmp_path / "runs"), "backbone": {"resolution": 64}}  # fmt: skip
    run_dir, counts = start_run(build_config(raw), progress=False)
    assert counts["ok"] == len(KEYS) * len(MODELS)
    return run_dir


def test_the_published_schema_loads_through_the_card(tmp_path):
    refs = load_dataset(DatasetSpec(name="geditbench_v2", path=str(write_geditbench_v2(tmp_path / "g"))))
    assert [r.id for r in refs] == KEYS
    sample = refs[0].load(DatasetSpec(name="geditbench_v2").policy().frame(64))
    assert sample.instruction == "edit number 0" and sample.source_size == (64, 48)
    assert sample.image.shape[1:] != (64, 64)  # keep_aspect: nothing cropped


def test_pairwise_verdicts_ranked_by_elo_as_the_cards_table(tmp_path):
    run_dir = arena_run(tmp_path)
    with ChatServer(closer_to_source) as server:
        (tmp_path / "judge.yaml").write_text(yaml.safe_dump({"judge": {"backend": "endpoint", "url": server.url,
                                                                        "model": "closer"}}))  # fmt: skip
        judged = CliRunner().invoke(main, ["pairwise", str(run_dir), "--judge", str(tmp_path / "judge.yaml")])
        assert judged.exit_code == 0, judged.output
        assert len(server.requests) == len(KEYS) * 3  # three pairs of rows per query
    records = [json.loads(line) for line in (run_dir / "pairwise.jsonl").read_text().splitlines()]
    assert {r["dimension"] for r in records} == {"geditbench-v2-vc-pairwise/1"}
    table = CliRunner().invoke(main, ["report", str(run_dir), "--table", "geditbench_v2"])
    assert table.exit_code == 0, table.output
    text = table.output
    assert "# GEditBench v2 table" in text and "| row | Elo | 95% CI | dimensions | matches |" in text
    rows = [line.split(" | ")[0].strip("| ") for line in text.splitlines() if line.startswith("| external")]
    order = [json.loads(r.split(" ", 1)[1])["folder"].rsplit("/", 1)[1] for r in rows]
    assert order == ["Closest", "Middle", "Farthest"]  # the closer edit always wins: Elo in that order
    assert "geditbench-v2-vc-pairwise/1: closer@" in text


def test_a_run_without_verdicts_says_how_to_make_them(tmp_path):
    run_dir = arena_run(tmp_path)
    table = CliRunner().invoke(main, ["report", str(run_dir), "--table", "geditbench_v2"])
    assert table.exit_code != 0 and "editbench pairwise" in table.output


def test_the_tiny_judge_judges_the_arena_end_to_end(tmp_path):
    run_dir = arena_run(tmp_path)
    judged = CliRunner().invoke(main, ["pairwise", str(run_dir), "--untrained-extractors"])
    assert judged.exit_code == 0, judged.output
    table = CliRunner().invoke(main, ["report", str(run_dir), "--table", "geditbench_v2"])
    assert table.exit_code == 0 and "# GEditBench v2 table" in table.output
