"""The metric conformance battery: every metric registered in ``bench.metrics.METRICS`` is checked
from its own declarations, with no hand-kept list of metrics.

- **Declarations** (every metric): a direction (``higher_is_better``), a value range, the input
  range, a description, needs from ``bench.metrics.NEEDS``; ``pretrained weights`` is declared
  exactly when loading the metric takes a network (an untrained one is labelled with its name).
- **Per-image metrics**, on seeded random 8-bit images (the pixels the worker scores) of the
  declared input range at 64x64 and 48x80, with samples built from ``needs``: two samples with
  every field, and one lacking each field the metric needs. Each value lies in ``value_range``
  or is NaN with a reason (the class's ``nan_reason`` or the image's note); a sample lacking a
  needed field is NaN; the batch equals each image scored alone, with the same notes: exactly
  for metrics without a network, within ``NETWORK_TOLERANCE`` for those with one (a batched
  matrix product may sum in another order).
- **Set metrics** (FID, KID): the features of a batch equal those of each image alone (within
  ``NETWORK_TOLERANCE``); streaming the edited features over a split batch equals one update
  (within ``STREAM_TOLERANCE``: running float64 sums in another order); the value lies in its
  range; fewer than two images are NaN with the declared reason.
- **Cost metrics**: the value is the cell record's column (a ``CellRecord`` or a row of the
  same fields), NaN with the declared reason when the column is empty.

A metric cannot escape: its case is derived from its class and ``needs``; one that cannot get a
case (another kind of metric, a need no sample field answers) or that is missing from the
collected cases fails ``test_every_registered_metric_has_a_case`` (shown on dummy metrics).

Networks are loaded offline and untrained (``metric_options.untrained_extractors``; the judge:
the tiny Qwen2.5-VL of ``bench.metrics.tiny_vlm``), shrunk to tiny architectures in the default
cases and at their real size in the ``slow`` ones. ``loaded`` is the one place that knows how a
metric loads.
"""

import math
import re
from contextlib import contextmanager, nullcontext

import pytest
import torch

from bench.data import Sample
from bench.metrics import METRICS, CostMetric, ImageMetric, Metric, SetMetric, get_metric
from bench.metrics.base import NEEDS
from bench.metrics.image_scores import score_images
from tests.helpers import tiny_bert_tokenizer, tiny_openclip

SIZES = ((64, 64), (48, 80))  # (height, width): square and not
NETWORK_TOLERANCE = 1e-5  # |batch - alone| <= this * (1 + |alone|) where a network batches (CPU: <= 2e-7 seen)
STREAM_TOLERANCE = 1e-9  # relative, streamed set metric vs one pass

# -- sample fields, from the metric's ``needs`` -------------------------------------------------
NETWORK = "pretrained weights"  # a need that is no sample field: the metric loads a network


def _mask(size, g):
    mask = torch.zeros(1, *size)
    mask[:, : size[0] // 2, size[1] // 4 :] = 1  # the top right: part of the image, leaving pixels kept
    return mask


#: Every sample field a metric may need: (its value in a full sample, its value when lacking).
FIELDS = {
    "mask": (_mask, None),
    "source_prompt": (lambda size, g: "a photo of a cat", ""),  # a str field: lacking is empty
    "target_prompt": (lambda size, g: "a photo of a red dog", None),
    "instruction": (lambda size, g: "make the cat a red dog", None),
    "target_image": (lambda size, g: eight_bit(torch.rand(3, *size, generator=g)), None),
    "output_caption": (lambda size, g: "a photo of a red dog", None),
}


def eight_bit(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] rounded to the 8-bit values a saved PNG holds."""
    return (images * 255).round() / 255


def sample_fields(cls: type[Metric]) -> list[str] | None:
    """The sample fields ``cls`` needs; None when it needs one no sample field answers."""
    fields = sorted(cls.needs - {NETWORK})
    return fields if all(f in FIELDS for f in fields) else None


def batch_for(cls: type[ImageMetric], size, seed: int = 0):
    """(edited, sources, samples, lacking) at ``size``: two samples with every field, then one
    lacking each field the metric needs (at least three rows); ``lacking[i]``: row i lacks a field."""
    g = torch.Generator().manual_seed(seed)
    fields = sample_fields(cls)
    absent = [None, None] + fields + ([None] if not fields else [])
    samples = []
    for i, field in enumerate(absent):
        values = {name: (missing if name == field else make(size, g)) for name, (make, missing) in FIELDS.items()}
        samples.append(Sample(f"s{i}", eight_bit(torch.rand(3, *size, generator=g)), **values))
    edited = [eight_bit(torch.rand(3, *size, generator=g)) for _ in samples]
    return edited, [s.image for s in samples], samples, [field is not None for field in absent]


# -- the cases, derived from the registry -------------------------------------------------------
def case_of(cls: type[Metric]) -> str | None:
    """The check a registered metric gets (``image``, ``set`` or ``cost``), or None when the
    battery cannot build one for it."""
    if issubclass(cls, ImageMetric):
        return "image" if sample_fields(cls) is not None else None
    if issubclass(cls, SetMetric):
        return "set"
    if issubclass(cls, CostMetric):
        return "cost"
    return None


CASES = {name: case_of(cls) for name, cls in METRICS.items()}  # collected once, from the registry


def uncovered(registry: dict[str, type[Metric]]) -> list[str]:
    """Registered metrics the battery does not check: no case can be built, or none was collected."""
    return [name for name, cls in registry.items() if case_of(cls) is None or CASES.get(name) != case_of(cls)]


def names(kind: str) -> list[str]:
    return [name for name, case in CASES.items() if case == kind]


def networked(kind: str) -> list[str]:
    return [name for name in names(kind) if NETWORK in METRICS[name].needs]


def test_every_registered_metric_has_a_case():
    assert uncovered(METRICS) == [], "give these metrics a case (a field in FIELDS, or a kind case_of knows)"


def test_a_metric_without_a_case_is_caught(monkeypatch):
    class Unscorable(Metric):  # neither per image, per set nor a cost
        name, higher_is_better = "test_unscorable", True

    class NeedsDepth(ImageMetric):  # a need no sample field answers
        name, higher_is_better, needs = "test_needs_depth", True, frozenset({"depth map"})

    class Latecomer(ImageMetric):  # could have a case, but was registered after the cases were collected
        name, higher_is_better, needs = "test_latecomer", True, frozenset({"mask"})

    for cls in (Unscorable, NeedsDepth, Latecomer):
        monkeypatch.setitem(METRICS, cls.name, cls)
    assert uncovered(METRICS) == ["test_unscorable", "test_needs_depth", "test_latecomer"]
    assert case_of(Latecomer) == "image" and batch_for(Latecomer, (16, 16))[3] == [False, False, True]


# -- loading: the one place that knows how a metric loads ------------------------------------------
#: Tiny stand-ins for the architectures the untrained extractors build (the default cases).
TINY_CLIP = {"text": (32, 2, 2, 64), "vision": (32, 2, 2, 64), "patch": 32, "proj": 16}
TINY_DINO = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
             "patch_size": 16, "image_size": 224, "qkv_bias": True, "layer_norm_eps": 1e-6}  # fmt: skip
TINY_BLIP_VISION = {"hidden_size": 128, "num_hidden_layers": 2, "patch_size": 16, "image_size": 224}


@contextmanager
def tiny_architectures():
    """The untrained extractors build tiny CLIP, DINO and ImageReward networks while this lasts."""
    from bench.metrics import clip, image_reward, structure

    tiny_bert = {**image_reward.MED_CONFIG, "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                 "intermediate_size": 128}  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(clip, "CLIP_ARCHITECTURES", {name: TINY_CLIP for name in clip.CLIP_ARCHITECTURES})
        patch.setattr(structure, "DINO_ARCHITECTURES", {name: TINY_DINO for name in structure.DINO_ARCHITECTURES})
        patch.setattr(image_reward, "VIT_LARGE", TINY_BLIP_VISION)
        patch.setattr(image_reward, "MED_CONFIG", tiny_bert)
        yield


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """``load(name, tiny=True) -> (metric, extractors)``: the metric loaded offline on untrained
    networks (tiny architectures unless ``tiny`` is False), one ``Extractors`` per size, shared."""
    from bench.metrics import MetricOptions
    from bench.metrics.extractors import Extractors

    folder = tmp_path_factory.mktemp("conformance")
    tokenizer = tiny_bert_tokenizer(folder)  # ImageReward's BERT tokenizer is read even untrained
    pools = {}

    def load(name: str, tiny: bool = True):
        if tiny not in pools:
            more = {"hps_architecture": tiny_openclip(folder)} if tiny else {}
            options = MetricOptions(untrained_extractors=True, image_reward_tokenizer=tokenizer, **more)
            pools[tiny] = Extractors(options)
        metric = get_metric(name)()
        with tiny_architectures() if tiny else nullcontext():
            metric.load(pools[tiny])
        return metric, pools[tiny]

    return load


def labelled(extractors, name: str) -> bool:
    """Whether a label of an untrained extractor names metric ``name`` among its users."""
    return any(name in label.split(" behind ", 1)[-1].split(", ") for label in extractors.labels())


# -- declarations -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(METRICS))
def test_declarations(name, loaded):
    cls = METRICS[name]
    assert isinstance(getattr(cls, "higher_is_better", None), bool), f"{name}: declare higher_is_better"
    low, high = cls.value_range
    assert low < high and cls.input_range == (0.0, 1.0) and cls.description.strip()
    assert cls.needs <= set(NEEDS), f"{name}: needs {sorted(cls.needs - set(NEEDS))} are not in NEEDS"
    _, extractors = loaded(name)
    if NETWORK in cls.needs:
        assert labelled(extractors, name), f"{name} declares {NETWORK!r} but loads no (labelled) network"
    else:
        assert not labelled(extractors, name), f"{name} loads a network: declare {NETWORK!r}"


def test_editbench_metrics_lists_every_metric_with_its_direction_range_and_options():
    """Each metric's entry in ``editbench metrics`` gives its direction and range, and names every
    option the metric declares (``Metric.options``) with its default."""
    from click.testing import CliRunner

    from run_bench import main

    result = CliRunner().invoke(main, ["metrics"])
    assert result.exit_code == 0, result.output
    entries = {}
    for line in result.output.splitlines():
        if line and not line.startswith(" "):
            entries[line.split(" ", 1)[0]] = [line]
        elif entries and line.strip():
            list(entries.values())[-1].append(line)
    for name, cls in METRICS.items():
        low, high = cls.value_range
        assert name in entries, f"editbench metrics does not list {name}"
        head, *rest = entries[name]
        assert head.startswith(f"{name} {'↑' if cls.higher_is_better else '↓'}  [{low:g}, {high:g}]"), head
        listed = next((line.split("options:", 1)[1] for line in rest if line.strip().startswith("options:")), "")
        for option in cls.options:
            assert re.search(rf"(^|[ ,]){option.name}( =|,|$)", listed.strip()), f"editbench metrics does not list {name}'s option {option.name!r}"


# -- per-image metrics -----------------------------------------------------------------------------
def check_image_metric(name: str, metric, sizes) -> None:
    cls = type(metric)
    for size in sizes:
        edited, sources, samples, lacking = batch_for(cls, size)
        together = score_images([metric], edited, sources, samples, batch_size=len(samples))
        for i, (score, lacks) in enumerate(zip(together, lacking)):
            assert score.error is None, f"{name} failed on row {i}: {score.error!r}"
            value, note = score.values[name], score.notes.get(name)
            low, high = cls.value_range
            if math.isnan(value):
                assert cls.nan_reason or note, f"{name}: NaN without a reason (nan_reason or a note)"
            else:
                assert not lacks, f"{name}: row {i} lacks a field the metric needs, yet gave {value}"
                assert low <= value <= high, f"{name}: {value} outside its value_range [{low}, {high}]"
            alone = score_images([metric], edited[i : i + 1], sources[i : i + 1], samples[i : i + 1], 1)[0]
            tolerance = NETWORK_TOLERANCE * (1 + abs(alone.values[name])) if NETWORK in cls.needs else 0.0
            assert value == pytest.approx(alone.values[name], rel=0, abs=tolerance, nan_ok=True), f"{name}, row {i}"
            assert alone.notes.get(name) == note


@pytest.mark.parametrize("name", names("image"))
def test_image_metric(name, loaded):
    check_image_metric(name, loaded(name)[0], SIZES)


@pytest.mark.slow
@pytest.mark.parametrize("name", networked("image"))
def test_image_metric_on_its_real_architecture(name, loaded):
    check_image_metric(name, loaded(name, tiny=False)[0], SIZES[1:])


# -- set metrics -----------------------------------------------------------------------------------
def streamed(metric, real: torch.Tensor, fake: torch.Tensor, parts: int) -> float:
    metric.start(real)
    for chunk in fake.chunk(parts):
        metric.update(chunk)
    return metric.compute()


def check_set_metric(name: str, metric, dims: int | None) -> None:
    """The checks of a set metric; its arithmetic on the first ``dims`` feature dimensions (all: None)."""
    cls = type(metric)
    g = torch.Generator().manual_seed(0)
    features = []
    for size in SIZES:  # features of any image size
        images = eight_bit(torch.rand(4, 3, *size, generator=g))
        with torch.no_grad():
            batch = metric.features(images).float()
            alone = torch.cat([metric.features(image[None]).float() for image in images])
        assert batch.shape == (4, metric.features.num_features)
        torch.testing.assert_close(batch, alone, rtol=NETWORK_TOLERANCE, atol=NETWORK_TOLERANCE)
        features.append(batch[:, :dims])
    real, fake = features[0], torch.cat([features[1], features[0][:2] + 0.1])
    value = streamed(metric, real, fake, 1)
    low, high = cls.value_range
    assert low <= value <= high, f"{name}: {value} outside its value_range [{low}, {high}]"
    assert streamed(metric, real, fake, 3) == pytest.approx(value, rel=STREAM_TOLERANCE)
    assert math.isnan(streamed(metric, real[:1], fake[:1], 1)) and cls.nan_reason


@pytest.mark.parametrize("name", names("set"))
def test_set_metric(name, loaded):
    """On 64 of the features: FID's matrix square root of the full 2048 takes 13 s on a CPU core."""
    check_set_metric(name, loaded(name)[0], dims=64)


@pytest.mark.slow
@pytest.mark.parametrize("name", names("set"))
def test_set_metric_on_every_feature(name, loaded):
    check_set_metric(name, loaded(name, tiny=False)[0], dims=None)


# -- cost metrics ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", names("cost"))
def test_cost_metric_reads_its_cell_column(name):
    from bench.store import CellRecord

    metric = get_metric(name)()
    measured = CellRecord("k", "m", {}, "s", 0, "ok", **{metric.column: 3.5})
    assert metric.value(measured) == 3.5 and metric.value({metric.column: 3.5}) == 3.5
    low, high = metric.value_range
    assert low <= metric.value(measured) <= high
    unmeasured = CellRecord("k", "m", {}, "s", 0, "ok")
    assert math.isnan(metric.value(unmeasured)) and math.isnan(metric.value({}))
    assert metric.nan_reason, f"{name} is NaN when its column is empty: declare nan_reason"

