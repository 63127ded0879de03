"""GEditBench v2 as a card: a local copy in its published schema (``metadata.jsonl`` with the
candidate models' edits under ``images/edited/<model>/``) loaded through the card, the candidates
entered as external rows, judged pairwise (``editbench pairwise``: a rule judge through the
endpoint backend, and the tiny local judge with ``--untrained-extractors``) in each of its three
dimensions and ranked by Elo with ``report --table geditbench_v2``."""

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from bench.data import DatasetSpec, load_dataset
from bench.execution.pairwise import name_order_key
from bench.execution.config import build_config
from bench.execution.runner import start_run
from bench.metrics.pairwise import load_pairwise_template
from run_bench import main
from tests.chat_server import ChatServer, decode as decode_request

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
    assert "Not judged: visual quality (geditbench-v2-vq-pairwise/1), instruction following" in text


def test_a_run_without_verdicts_says_how_to_make_them(tmp_path):
    run_dir = arena_run(tmp_path)
    table = CliRunner().invoke(main, ["report", str(run_dir), "--table", "geditbench_v2"])
    assert table.exit_code != 0 and "editbench pairwise" in table.output




TEMPLATES = {"pvc_pairwise_v1": "geditbench-v2-vc-pairwise/1", "geditbench_v2_if_pairwise_v1": "geditbench-v2-if-pairwise/1",
             "geditbench_v2_vq_pairwise_v1": "geditbench-v2-vq-pairwise/1"}  # fmt: skip


def by_dimension(images, text, body):
    """A rule judge per prompt: visual consistency, the edit closer to the source; visual quality
    (two images), the less noisy edit; instruction following, always Image A (a position-biased
    judge, so the row shown as A wins)."""
    system = body["messages"][0]["content"]
    if system.startswith("You are a strict and highly critical image quality comparator."):
        a, b = (float(np.asarray(i, dtype=float).std()) for i in images)
        return json.dumps({"winner": "Image A" if a < b else "Image B"})
    if system.startswith("You are a meticulous instruction compliance analyst."):
        return json.dumps({"winner": "Image A"})
    return closer_to_source(images, text, body)


def test_the_three_dimensions_each_asked_once_per_pair_in_name_order_and_fitted_jointly(tmp_path):
    """Each template's prompt text and images as GEditBench v2 sends them; Image A is the row whose
    name sorts first (their canonical pair order), never a second, swapped asking; the Elo view
    fits the three dimensions jointly and counts each one's matches."""
    run_dir = arena_run(tmp_path)
    edits = {m: {k: np.asarray(Image.open(tmp_path / "geditv2" / "images" / "edited" / m / f"{k}.png").convert("RGB"))
                 for k in KEYS} for m in MODELS}  # fmt: skip
    with ChatServer(by_dimension) as server:
        (tmp_path / "judge.yaml").write_text(yaml.safe_dump({"judge": {"backend": "endpoint", "url": server.url,
                                                                        "model": "rules"}}))  # fmt: skip
        for name in TEMPLATES:
            before = len(server.requests)
            judged = CliRunner().invoke(main, ["pairwise", str(run_dir), "--judge", str(tmp_path / "judge.yaml"),
                                               "--template", name])  # fmt: skip
            assert judged.exit_code == 0, judged.output
            asked = server.requests[before:]
            assert len(asked) == len(KEYS) * 3  # three pairs of rows per query, each asked once
            template = load_pairwise_template(name)
            for request in asked:
                system, user = request["messages"]
                assert system["content"] == template.system
                images, text = decode_request(request)
                first_text = template.parts[0][1].split("{{ instruction }}")[0]
                assert text.startswith(first_text) and "Image B:" in text
                key = next(k for k in KEYS if f"edit number {KEYS.index(k)}" in text) if "edit number" in text else None
                if name == "geditbench_v2_vq_pairwise_v1":
                    assert len(images) == 2 and "edit number" not in text  # the two edits only, no instruction
                    continue
                assert len(images) == 3 and key is not None
                a, b = (nearest(image, {m: edits[m][key] for m in MODELS}) for image in images[1:])
                assert sorted([a, b], key=lambda m: name_order_key(row_of(run_dir, m))) == [a, b]  # A sorts first
    records = [json.loads(line) for line in (run_dir / "pairwise.jsonl").read_text().splitlines()]
    assert sorted({r["dimension"] for r in records}) == sorted(TEMPLATES.values())
    for r in records:
        assert (r["first_shown_as"] == "A") == (name_order_key(r["first"]) <= name_order_key(r["second"]))
    biased = [r for r in records if r["dimension"] == "geditbench-v2-if-pairwise/1"]
    assert all(r["winner"] == ("first" if r["first_shown_as"] == "A" else "second") for r in biased)
    table = CliRunner().invoke(main, ["report", str(run_dir), "--table", "geditbench_v2"])
    assert table.exit_code == 0, table.output
    text = table.output
    assert ("Dimensions fitted jointly: visual consistency (geditbench-v2-vc-pairwise/1): 12 matches; instruction "
            "following (geditbench-v2-if-pairwise/1): 12 matches; visual quality (geditbench-v2-vq-pairwise/1): "
            "12 matches.") in text and "Not judged" not in text  # fmt: skip
    rows = [line.strip("| ").split(" | ") for line in text.splitlines() if line.startswith("| external")]
    assert [r[3:] for r in rows] == [["3", "24"]] * 3  # every row in the three dimensions, 2 opponents x 4 queries each
    order = [json.loads(r[0].split(" ", 1)[1])["folder"].rsplit("/", 1)[1] for r in rows]
    assert order == ["Closest", "Middle", "Farthest"]  # consistency and quality: Closest; following: A (sorted first)


def nearest(image, candidates: dict) -> str:
    """The candidate (name -> array) the shown image is closest to (it may have been resized)."""
    shown = {m: np.asarray(image.resize(c.shape[1::-1]), dtype=float) for m, c in candidates.items()}
    return min(candidates, key=lambda m: np.abs(shown[m] - candidates[m]).mean())


def row_of(run_dir, model):
    """The run's row name (``method setting-json``) of a candidate model's folder."""
    rows = {r["first"] for r in map(json.loads, (run_dir / "pairwise.jsonl").read_text().splitlines())}
    rows |= {r["second"] for r in map(json.loads, (run_dir / "pairwise.jsonl").read_text().splitlines())}
    return next(r for r in rows if f'/{model}"' in r)


def test_the_tiny_judge_judges_the_arena_end_to_end(tmp_path):
    run_dir = arena_run(tmp_path)
    judged = CliRunner().invoke(main, ["pairwise", str(run_dir), "--untrained-extractors"])
    assert judged.exit_code == 0, judged.output
    table = CliRunner().invoke(main, ["report", str(run_dir), "--table", "geditbench_v2"])
    assert table.exit_code == 0 and "# GEditBench v2 table" in table.output


@pytest.mark.slow  # ~40 s on 2 cores: 36 answers of up to 512 tokens
def test_the_tiny_judge_judges_every_dimension(tmp_path):
    """The tiny random judge through each of the three templates: every match recorded with its
    dimension and which row was Image A; random answers are mostly unreadable, so the table may
    have no verdict to fit: only the records are checked."""
    run_dir = arena_run(tmp_path)
    for name in TEMPLATES:
        judged = CliRunner().invoke(main, ["pairwise", str(run_dir), "--untrained-extractors", "--template", name])
        assert judged.exit_code == 0, judged.output
    records = [json.loads(line) for line in (run_dir / "pairwise.jsonl").read_text().splitlines()]
    assert sorted(r["dimension"] for r in records) == sorted(list(TEMPLATES.values()) * len(KEYS) * 3)
    assert all(r["first_shown_as"] == ("A" if name_order_key(r["first"]) <= name_order_key(r["second"]) else "B")
               for r in records)  # fmt: skip
