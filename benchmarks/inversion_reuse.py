"""NFE of a sweep that inverts each image once, against recomputing the inversion in every cell.

Runs ``p2p`` over K settings (cross-attention injection fractions) x N images of a dataset
through the runner, with an empty inversion cache, and reads each cell's preparation and
edit NFE from the run's store. Recomputing per cell would spend the image's preparation NFE
in each of its K cells (the same inversion, so exactly the same count). On the tiny backbone
the NFE counts are exact; any image metric it reports would be a smoke number.

    python benchmarks/inversion_reuse.py --k 6 --inversion null_text --steps 10
"""

import os
import sys
import tempfile
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@click.command()
@click.option("--k", "k", default=6, show_default=True, help="settings in the sweep")
@click.option("--limit", default=None, type=int, help="images of the dataset (default: all)")
@click.option("--dataset", default="sample", show_default=True, help="bundled dataset name")
@click.option("--inversion", default="null_text", show_default=True, help="p2p inversion kind")
@click.option("--steps", default=10, show_default=True, help="DDIM steps")
@click.option("--backbone", default="tiny", show_default=True, help="backbone name or folder")
def main(k, limit, dataset, inversion, steps, backbone):
    with tempfile.TemporaryDirectory(prefix="editbench-reuse-") as tmp:
        os.environ["EDITBENCH_CACHE"] = str(Path(tmp) / "cache")  # empty: the first cell of each image computes
        from bench.execution.config import build_config
        from bench.execution.runner import Runner
        from bench.store import Store

        fractions = [round(i / max(k - 1, 1), 4) for i in range(k)]
        raw = {
            "backbone": {"name": backbone},
            "dataset": {"name": dataset, "limit": limit},
            "methods": {"p2p": {"steps": steps, "inversion": inversion, "cross_replace_steps": fractions}},
            "metrics": [],
            "output": tmp,
        }
        config = build_config(raw)
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        Runner(config, run_dir, progress=False).run()
        store = Store(run_dir)
        cells = store.cells_frame()
        store.close()
    ok = cells[cells.status == "ok"]
    if len(ok) != len(cells):
        raise SystemExit(f"{len(cells) - len(ok)} cells failed: {cells.error.dropna().unique().tolist()}")
    per_image = ok.groupby("sample_id").agg(prep_nfe=("prep_nfe", "sum"), edit_nfe=("nfe", "sum"),
                                            grad=("prep_grad_evals", "sum"), cells=("key", "count"))  # fmt: skip
    prep, edit = int(per_image.prep_nfe.sum()), int(per_image.edit_nfe.sum())
    prep_recompute = int((per_image.prep_nfe * per_image.cells).sum())
    grad, grad_recompute = int(per_image.grad.sum()), int((per_image.grad * per_image.cells).sum())
    spent, recompute = prep + edit, prep_recompute + edit
    print(f"p2p over {inversion} inversion, {steps} steps, K = {k} settings x N = {len(per_image)} images ({len(ok)} cells)")
    print(f"{'':28}{'reuse (this run)':>18}{'recompute per cell':>20}")
    for label, ours, theirs in (
        ("preparation NFE", prep, prep_recompute),
        ("edit NFE", edit, edit),
        ("total NFE", spent, recompute),
        ("prep gradient evaluations", grad, grad_recompute),
    ):
        print(f"{label:28}{ours:>18}{theirs:>20}")
    print(f"saving: {recompute - spent} NFE ({100 * (recompute - spent) / recompute:.1f}% of recomputing), "
          f"{grad_recompute - grad} gradient evaluations")  # fmt: skip


if __name__ == "__main__":
    main()
