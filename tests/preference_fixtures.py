"""Small copies of the human-preference sets in their published schemas and hub layouts, with
candidates of flat grey levels, so a rule judge that scores brightness gives known agreement.

- EditReward-Bench (TIGER-Lab/EditReward-Bench): ``2pair/``, ``3pair/``, ``4pair/`` each with
  ``train-00000-of-00001.parquet``; one row per pair: id, instruction, source_image, candidate_1,
  candidate_2, ranking, score_1, score_2, model_1, model_2, comparison_type, dataset.
- VCReward-Bench (GEditBench-v2/VCReward-Bench): ``data/train-00000-of-00001.parquet``: key,
  instruction, source_image, edited_images (two images), winner, task.
"""

from pathlib import Path

import numpy as np
from PIL import Image

#: EditReward-Bench groups: subset -> [(grey levels of the candidates, [(i, j, ranking), ...])]
EDITREWARD = {
    "2pair": [((200, 100), [(0, 1, "A>B")]), ((100, 200), [(0, 1, "B>A")]), ((153, 150), [(0, 1, "A=B=Good")]),
              ((50, 250), [(0, 1, "A>B")])],
    "3pair": [((250, 150, 50), [(0, 1, "A>B"), (0, 2, "A>B"), (1, 2, "A>B")]),
              ((240, 140, 40), [(0, 1, "B>A"), (0, 2, "A>B"), (1, 2, "A>B")])],
    "4pair": [((230, 170, 110, 60), [(i, j, "A>B") for i in range(4) for j in range(i + 1, 4)])],
}  # fmt: skip
#: VCReward-Bench rows: (grey A, grey B, winner, task)
VCREWARD = [(200, 100, "Image A", "subject_add"), (100, 200, "Image B", "subject_add"),
            (60, 220, "Image A", "color_alter"), (180, 90, "Image A", "color_alter")]  # fmt: skip


def grey(level: int, size=(48, 40)) -> Image.Image:
    return Image.fromarray(np.full((size[1], size[0], 3), level, np.uint8))


def brightness_score(image: Image.Image) -> int:
    """What the rule judge answers for an edit: its mean grey level on 0-10."""
    return int(round(float(np.asarray(image).mean()) / 25.5))


def _features(schema: dict):
    import datasets

    kinds = {"string": datasets.Value("string"), "float": datasets.Value("float32"), "image": datasets.Image(),
             "images": datasets.Sequence(datasets.Image())}  # fmt: skip
    return datasets.Features({c: kinds[t] for c, t in schema.items()})


EDITREWARD_SCHEMA = {"id": "string", "instruction": "string", "source_image": "image", "candidate_1": "image",
                     "candidate_2": "image", "ranking": "string", "score_1": "float", "score_2": "float",
                     "model_1": "string", "model_2": "string", "comparison_type": "string", "dataset": "string"}
VCREWARD_SCHEMA = {"key": "string", "instruction": "string", "source_image": "image", "edited_images": "images",
                   "winner": "string", "task": "string"}  # fmt: skip


def write_editreward_bench(folder) -> str:
    import datasets

    folder = Path(folder)
    for subset, groups in EDITREWARD.items():
        rows = {c: [] for c in EDITREWARD_SCHEMA}
        for g, (levels, pairs) in enumerate(groups):
            for i, j, ranking in pairs:
                values = {"id": f"{subset}_{g}_{i}{j}", "instruction": f"edit group {g}", "source_image": grey(128),
                          "candidate_1": grey(levels[i]), "candidate_2": grey(levels[j]), "ranking": ranking,
                          "score_1": levels[i] / 10, "score_2": levels[j] / 10, "model_1": f"m{i}",
                          "model_2": f"m{j}", "comparison_type": "pairwise", "dataset": subset}  # fmt: skip
                for c, v in values.items():
                    rows[c].append(v)
        (folder / subset).mkdir(parents=True, exist_ok=True)
        dataset = datasets.Dataset.from_dict(rows, features=_features(EDITREWARD_SCHEMA))
        dataset.to_parquet(str(folder / subset / "train-00000-of-00001.parquet"))
    return str(folder)


def write_vcreward_bench(folder) -> str:
    import datasets

    folder = Path(folder)
    rows = {c: [] for c in VCREWARD_SCHEMA}
    for n, (a, b, winner, task) in enumerate(VCREWARD):
        values = {"key": f"{task}_{n}", "instruction": f"edit {n}", "source_image": grey(128),
                  "edited_images": [grey(a), grey(b)], "winner": winner, "task": task}  # fmt: skip
        for c, v in values.items():
            rows[c].append(v)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(rows, features=_features(VCREWARD_SCHEMA)).to_parquet(
        str(folder / "data" / "train-00000-of-00001.parquet"))
    return str(folder)
