"""The worker: runs work units (``bench.execution.plan``) on one loaded backbone and returns finished cells.

A worker holds what is expensive to load (the backbone, the method adapters, the metric
extractors) and runs any unit handed to it. It never touches the run's store: each finished
cell comes back as a ``CellOutcome`` (record, PNG bytes, artifact PNGs, labels) for the driver
to write and commit. The same worker runs in-process (``local`` executor) or inside a Ray actor.

Per batch:

- each row gets a fresh generator seeded from (sample id, seed), so its noise does not depend
  on the batch it runs in or its position;
- a chain's turn (``bench.execution.chains``) edits the saved pixels of its previous turn: kept
  from earlier in the unit, or given with the cell when that turn finished in an earlier session;
  it is skipped, with the reason, when that turn did not end ok;
- cost is measured for the whole batch: ``time_s``/``gpu_time_s`` per cell are the batch's
  divided by its size, ``peak_mem_mb`` is the batch's, NFE per cell is what the method counted
  for the row or else the batch's NFE divided evenly (every row of one setting costs the same);
- an exception or a non-finite image re-runs the batch one cell at a time, so only the
  offending cell fails, with its own error; out of memory halves the batch and retries, down
  to one cell, before failing it; a method that knows which cell failed (an API request)
  returns that exception in the cell's place, and only that cell fails, without a re-run;
- the edited images are saved as 8-bit PNGs and scored together on exactly those pixels by
  ``bench.metrics.image_scores.score_images`` (the path ``editbench score`` takes too), in
  batches of ``metric_options.batch_size``; a metric that fails on one image fails that cell
  alone (the edit is not re-run).
"""

import dataclasses
import gc
import io
import socket
import uuid
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

import torch
from PIL import Image

from bench.data import Sample, SampleRef
from bench.devices import resolve_device
from bench.diffusion.backbone import Backbone
from bench.diffusion.families import check_method_family
from bench.execution.chains import blocked_reason, input_image
from bench.execution.config import RunConfig
from bench.execution.plan import Cell, WorkUnit, cell_seed
from bench.method import EditResult, EditRow, Method, Preparation, rules_in_force
from bench.metrics import get_metric, load_metrics
from bench.metrics.extractors import Extractors
from bench.metrics.image_scores import ImageScore, score_images
from bench.registry import get_method
from bench.store import CellRecord
from bench.timing import CellTimer

#: Cost columns a method that does not make its images (``Method.measures_cost``) leaves empty.
COST_COLUMNS = ("time_s", "gpu_time_s", "peak_mem_mb", "nfe", "grad_evals", "prep_time_s", "prep_nfe", "prep_grad_evals")
#: Loaded samples a worker keeps, so the units of one block of samples load each image once.
SAMPLE_CACHE_SIZE = 64


@dataclass
class CellOutcome:
    """A finished cell as a worker returns it: the record (status, cost, metrics), the edited
    image and artifact pictures as PNG bytes, caveat labels the run must carry, and warnings
    its sample raised while loading (e.g. a clipped mask)."""

    record: CellRecord
    image_png: bytes | None = None
    artifacts: dict[str, bytes] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: (label, description) of the backbone, on the first cell a worker returns from it: the manifest's record
    backbone: tuple[str, dict] | None = None


@dataclass
class _Prepared:
    value: object
    nfe: int
    time_s: float
    cache_hit: bool
    grad_evals: int
    used: bool = False


@dataclass
class _Row:
    """A cell ready to edit: its record (preparation cost filled in) and what its edit needs."""

    cell: Cell
    sample: Sample
    prep: object
    record: CellRecord


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) in [0, 1] -> (H, W, 3) uint8 on the CPU, rounding as image writers do."""
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu()


def png_bytes(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def device_name(device: torch.device) -> str:
    """``host/device`` of a worker, e.g. ``node3/cuda:1 NVIDIA H100``: the store's ``worker`` column."""
    name = str(device)
    if device.type == "cuda":
        name += f" {torch.cuda.get_device_name(device)}"
    return f"{socket.gethostname()}/{name}"


def _by_image_size(rows: list) -> list[list]:
    """``rows`` split into batches of one image size (under ``keep_aspect`` samples differ), in order of first size."""
    groups: dict[tuple, list] = {}
    for row in rows:
        groups.setdefault(tuple(row.sample.image.shape), []).append(row)
    return list(groups.values())


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class CellWorker:
    """Loads the metrics (first, so missing weights fail fast), the methods of ``config`` and the
    first backbone once, then runs work units with ``run_unit``.

    A run may hold several backbones (``methods.<name>.backbone``): the worker holds one at a time
    and, when a unit needs another, frees the one it holds before loading the next (the plan puts
    each backbone's units together). ``backbone``: an already loaded backbone standing for the
    config's default spec (tests, benchmarks)."""

    def __init__(self, config: RunConfig, backbone: Backbone | None = None):
        self.metrics = [get_metric(name)() for name in config.metrics]
        self.extractors = Extractors(config.metric_options, resolve_device(config.backbone.device))
        load_metrics(self.metrics, self.extractors)
        self.metric_batch_size = config.metric_options.batch_size
        self.config, self.policy, self._given = config, config.dataset.policy(), backbone
        self.methods: dict[str, Method] = {name: get_method(name)() for name in config.settings}
        self.backbone, self.backbone_label, self.described = None, None, {}
        self._samples: OrderedDict[str, Sample | Exception] = OrderedDict()
        self._backbone_labels: list[str] = []
        self._reported: set[str] = set()  # backbones whose description went out with a cell
        self.use_backbone(next(iter(config.backbones)))
        self.name = device_name(self.backbone.device)
        self._token, self._batches = uuid.uuid4().hex[:8], 0

    def use_backbone(self, label: str) -> None:
        """Hold the backbone labelled ``label`` (``RunConfig.backbones``), freeing the one held
        before, and check its methods against it."""
        if label == self.backbone_label:
            return
        spec = self.config.backbones[label]
        if self.backbone is not None:
            device, self.backbone = self.backbone.device, None
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        backbone = self._given if self._given is not None and spec == self.config.backbone else Backbone(spec)
        for name, settings in self.config.settings.items():
            if self.config.backbone_of(name) == spec:
                check_method_family(type(self.methods[name]), backbone.family_name)
                for setting in settings:
                    self.methods[name].check_backbone(setting, backbone)
        self.backbone, self.backbone_label = backbone, label
        self.frame = backbone.frame(self.policy)
        self._samples.clear()  # prepared at the previous backbone's size
        self._backbone_labels += [item for item in backbone.labels if item not in self._backbone_labels]
        self.described[label] = {**backbone.describe(), "images": self.frame.to_dict()}

    def labels(self) -> list[str]:
        """Caveats every number of a run on this worker carries (untrained networks)."""
        return list(self._backbone_labels) + self.extractors.labels()

    # -- units ---------------------------------------------------------------------------------
    def run_unit(self, unit: WorkUnit):
        """Yield a ``CellOutcome`` for every cell of ``unit`` as it finishes; the first one after
        the worker took up a backbone carries its description."""
        label = unit.backbone or self.config.backbone_label(unit.method)
        self.use_backbone(label)
        reported = label in self._reported
        for outcome in self._unit_outcomes(unit):
            outcome.record.backbone = label
            sample = self._samples.get(outcome.record.sample_id)
            if isinstance(sample, Sample):
                outcome.warnings = list(sample.warnings)
            if not reported:
                outcome.backbone, reported = (label, self.described[label]), True
                self._reported.add(label)
            yield outcome

    def _unit_outcomes(self, unit: WorkUnit):
        """The unit's outcomes, batch by batch. A preparation is dropped after the last batch whose
        cells use it: one can be large (KV-Edit's recorded keys and values: ~17 GB a sample at
        512 px), and a chain's unit prepares every turn anew."""
        prepared: dict[tuple, _Prepared | Exception] = {}
        uses = Counter(self._preparation_key(cell) for cell in unit.cells)  # cells still to run, per key
        inputs = {cell.input_key for cell in unit.cells if cell.input_key}
        kept: dict[str, CellOutcome] = {}  # outcomes a later turn of a chain in this unit edits

        def keep(outcome: CellOutcome) -> CellOutcome:
            if outcome.record.key in inputs:
                kept[outcome.record.key] = outcome
            return outcome

        for batch in unit.batches:
            yield from map(keep, self._batch_outcomes(batch, prepared, kept))
            for key in map(self._preparation_key, batch):
                uses[key] -= 1
                if not uses[key]:
                    prepared.pop(key, None)

    def _batch_outcomes(self, batch: list[Cell], prepared: dict, kept: dict[str, CellOutcome]):
        """The outcomes of one batch: cells that cannot run, then the edited ones, in batches of one
        image size (under ``keep_aspect`` samples differ). (Its rows, which hold their
        preparations, go when it ends.)"""
        rows = []
        for cell in batch:
            row = self._ready(cell, prepared, kept)
            if isinstance(row, CellOutcome):
                yield row
            else:
                rows.append(row)
        for same_size in _by_image_size(rows):
            yield from self._execute(same_size)

    def _preparation_key(self, cell: Cell) -> tuple:
        """Under what the worker keeps a cell's preparation: its sample, its input (a chain's turn
        edits its own previous output) and its method's ``preparation_key`` (the plan's: a unit holds one)."""
        return cell.sample_id, cell.input_key, self.methods[cell.method].preparation_key(cell.setting)

    def _sample(self, ref: SampleRef) -> Sample | Exception:
        if ref.id not in self._samples:
            try:
                self._samples[ref.id] = ref.load(self.frame)
            except Exception as exc:  # a bad sample fails its own cells, never the run
                self._samples[ref.id] = exc
            while len(self._samples) > SAMPLE_CACHE_SIZE:
                self._samples.popitem(last=False)
        return self._samples[ref.id]

    def _ready(self, cell: Cell, prepared: dict, kept: dict[str, CellOutcome]) -> _Row | CellOutcome:
        """The cell's row, or its outcome when it cannot run (bad sample, missing field, failed
        preparation, a chain's previous turn that did not end ok)."""
        method = self.methods[cell.method]
        record = CellRecord(cell.key, cell.method, cell.setting, cell.sample_id, cell.seed, "ok", cell.ref.edit_type)
        with rules_in_force(self.backbone.step_rules):
            record.start_step, record.steps_run = method.schedule(cell.setting) or (None, None)
        record.worker = self.name
        record.groups = dict(cell.ref.groups)
        record.chain, record.turn, record.input_key = cell.ref.chain, cell.ref.turn, cell.input_key
        sample = self._sample(cell.ref)
        if isinstance(sample, Exception):
            record.status, record.error = "failed", _error(sample)
            return CellOutcome(record)
        if cell.input_key is not None:
            sample = self._chained(cell, sample, kept)
            if isinstance(sample, str):
                record.status, record.error = "skipped", sample
                return CellOutcome(record)
        missing = method.missing(sample, cell.setting)
        if missing:
            record.status, record.error = "skipped", f"sample lacks {', '.join(missing)}, which {cell.method!r} needs"
            return CellOutcome(record)
        prep = self._prepare(method, sample, cell.setting, prepared, self._preparation_key(cell))
        if isinstance(prep, Exception):
            record.status, record.error = "failed", f"preparation failed: {_error(prep)}"
            return CellOutcome(record)
        record.prep_cached = prep.used or prep.cache_hit
        record.prep_nfe, record.prep_time_s, record.prep_grad_evals = (
            (0, 0.0, 0) if prep.used else (prep.nfe, prep.time_s, prep.grad_evals)
        )
        prep.used = True
        return _Row(cell, sample, prep.value, record)

    @staticmethod
    def _chained(cell: Cell, sample: Sample, kept: dict[str, CellOutcome]) -> Sample | str:
        """The turn's sample editing its chain's previous output, or why it cannot run."""
        if cell.blocked:
            return cell.blocked
        previous = kept.get(cell.input_key)
        if previous is not None and previous.record.status != "ok":
            return blocked_reason(previous.record.chain, previous.record.turn, previous.record.status,
                                  previous.record.error)  # fmt: skip
        png = previous.image_png if previous is not None else cell.input_png
        return dataclasses.replace(sample, image=input_image(png))

    def _prepare(self, method: Method, sample: Sample, setting: dict, prepared: dict,
                 key: tuple) -> _Prepared | Exception:  # fmt: skip
        """The sample's preparation, computed on first use of its ``key`` (``_preparation_key``)."""
        if key not in prepared:
            nfe_before = self.backbone.nfe.count
            try:
                with CellTimer(self.backbone.device) as timer:
                    value = method.prepare(self.backbone, sample, setting)
                if not isinstance(value, Preparation):
                    value = Preparation(value)
                nfe = self.backbone.nfe.count - nfe_before
                prepared[key] = _Prepared(value.value, nfe, timer.wall_s, value.cache_hit, value.grad_evals)
            except Exception as exc:
                prepared[key] = exc
        return prepared[key]

    # -- batches -------------------------------------------------------------------------------
    def _execute(self, rows: list[_Row]) -> list[CellOutcome]:
        """Edit ``rows`` as one batch; on failure isolate the offending cell (see the module doc)."""
        try:
            results = self._edit_batch(rows)
        except torch.OutOfMemoryError as exc:
            if self.backbone.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(rows) == 1:
                return [self._failed(rows[0], exc)]
            half = (len(rows) + 1) // 2
            return self._execute(rows[:half]) + self._execute(rows[half:])
        except Exception as exc:  # NaN output, a bug in one method: the run goes on
            if len(rows) == 1:
                return [self._failed(rows[0], exc)]
            return [outcome for row in rows for outcome in self._execute([row])]
        return self._finish(rows, results)

    def _failed(self, row: _Row, exc: BaseException) -> CellOutcome:
        row.record.status, row.record.error = "failed", _error(exc)
        row.record.batch_size, row.record.batch_id = 1, self._new_batch_id()
        return CellOutcome(row.record)

    def _new_batch_id(self) -> str:
        self._batches += 1
        return f"{self._token}-{self._batches}"

    def _edit_batch(self, rows: list[_Row]) -> list[EditResult | Exception]:
        """The method's results for ``rows`` as one batch, their cost written into the rows' records."""
        method, setting = self.methods[rows[0].cell.method], rows[0].cell.setting
        edit_rows = [
            EditRow(row.sample, row.prep, torch.Generator("cpu").manual_seed(cell_seed(row.sample.id, row.cell.seed)))
            for row in rows
        ]
        nfe_before = self.backbone.nfe.count
        with CellTimer(self.backbone.device) as timer:
            results = method.edit_batch(self.backbone, edit_rows, setting)
        batch_nfe = self.backbone.nfe.count - nfe_before
        if len(results) != len(rows):
            raise RuntimeError(f"method {method.name!r} returned {len(results)} results for {len(rows)} cells")
        edits = [r for r in results if not isinstance(r, Exception)]  # an exception fails its cell alone (_finish)
        for result in edits:
            if not torch.isfinite(result.image).all():
                raise FloatingPointError("the edited image contains NaN or Inf")
        if any(r.nfe is None for r in edits) and batch_nfe % len(rows):
            raise RuntimeError(f"method {method.name!r}: batch NFE {batch_nfe} does not split evenly over {len(rows)} cells")
        batch_id, n = self._new_batch_id(), len(rows)
        for row, result in zip(rows, results):
            record = row.record
            record.batch_size, record.batch_id = n, batch_id
            if not isinstance(result, Exception):
                record.nfe = result.nfe if result.nfe is not None else batch_nfe // n
                record.grad_evals = result.grad_evals
            record.time_s = timer.wall_s / n
            record.gpu_time_s = None if timer.gpu_s is None else timer.gpu_s / n
            record.peak_mem_mb = timer.peak_mem_mb
            if not method.measures_cost:  # images made elsewhere: their cost is unknown, not zero
                for column in COST_COLUMNS:
                    setattr(record, column, None)
        return results

    def _finish(self, rows: list[_Row], results: list[EditResult | Exception]) -> list[CellOutcome]:
        """Quantise the edits to 8 bits and score them together (metrics see exactly the saved
        PNGs' pixels, in batches of ``metric_options.batch_size``); a cell whose quantisation or
        scoring fails fails alone, with its error."""
        pixels: list[torch.Tensor | Exception] = []
        for result in results:
            try:
                pixels.append(result if isinstance(result, Exception) else to_uint8(result.image[0]))
            except Exception as exc:  # a malformed image fails its own cell
                pixels.append(exc)
        scorable = [i for i, p in enumerate(pixels) if isinstance(p, torch.Tensor)]
        edited = [pixels[i].permute(2, 0, 1).float() / 255 for i in scorable]
        samples = [rows[i].sample for i in scorable]
        scores = score_images(self.metrics, edited, [s.image for s in samples], samples, self.metric_batch_size)
        score_of = dict(zip(scorable, scores))
        return [self._outcome(row.record, result, pixels[i], score_of.get(i))
                for i, (row, result) in enumerate(zip(rows, results))]  # fmt: skip

    @staticmethod
    def _outcome(record: CellRecord, result: EditResult, pixels, score: ImageScore | None) -> CellOutcome:
        """The finished cell: its scores in its record, its image and artifacts as PNG bytes; or
        failed, with the error its quantisation (``pixels``) or its scoring ended with."""
        try:
            if isinstance(pixels, Exception):
                raise pixels
            record.metrics.update(score.values)
            record.notes.update(score.notes)
            if score.error is not None:
                raise score.error
            artifacts = {name: png_bytes(picture) for name, picture in result.artifacts.items()}
        except Exception as exc:
            record.status, record.error = "failed", _error(exc)
            return CellOutcome(record)
        return CellOutcome(record, png_bytes(Image.fromarray(pixels.numpy())), artifacts, list(result.labels))
