"""The result store: one SQLite file per run, WAL mode, one transaction per finished cell.

A cell's row and its metrics are committed together after its image is on disk, so a kill
at any moment leaves either a whole cell or none of it, and ``--resume`` redoes only what
is missing.
"""

import json
import sqlite3
from dataclasses import dataclass, field, fields
from pathlib import Path

from bench.errors import ConfigError
from bench.paths import write_atomic

#: The run's provenance and resolved config, beside the database (a copy is in ``run_info``).
MANIFEST = "manifest.json"

SCHEMA = """
CREATE TABLE IF NOT EXISTS run_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY,
    method TEXT NOT NULL,
    setting TEXT NOT NULL,
    sample_id TEXT NOT NULL,
    seed INTEGER NOT NULL,
    edit_type TEXT,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'skipped')),
    error TEXT,
    output_path TEXT,
    time_s REAL,
    gpu_time_s REAL,
    peak_mem_mb REAL,
    nfe INTEGER,
    grad_evals INTEGER,
    prep_time_s REAL,
    prep_nfe INTEGER,
    prep_cached INTEGER,
    prep_grad_evals INTEGER,
    batch_size INTEGER,
    batch_id TEXT,
    start_step INTEGER,
    steps_run INTEGER,
    worker TEXT,
    groups TEXT,
    backbone TEXT,
    finished_at TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS metrics (
    key TEXT NOT NULL REFERENCES cells(key),
    name TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (key, name)
);
CREATE TABLE IF NOT EXISTS metric_notes (
    key TEXT NOT NULL REFERENCES cells(key),
    name TEXT NOT NULL,
    note TEXT NOT NULL,
    PRIMARY KEY (key, name)
);
CREATE TABLE IF NOT EXISTS set_metrics (
    method TEXT NOT NULL,
    setting TEXT NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    n INTEGER NOT NULL,
    PRIMARY KEY (method, setting, name)
);
"""


@dataclass
class CellRecord:
    """Everything stored about one cell (method, setting, sample, seed)."""

    key: str
    method: str
    setting: dict
    sample_id: str
    seed: int
    status: str
    edit_type: str | None = None
    error: str | None = None
    output_path: str | None = None
    time_s: float | None = None
    gpu_time_s: float | None = None
    peak_mem_mb: float | None = None
    nfe: int | None = None
    grad_evals: int | None = None
    prep_time_s: float | None = None
    prep_nfe: int | None = None
    prep_cached: bool | None = None
    prep_grad_evals: int | None = None
    batch_size: int | None = None
    batch_id: str | None = None
    start_step: int | None = None  # the setting's effective schedule (Method.schedule): where denoising starts
    steps_run: int | None = None  # and how many timesteps it runs
    worker: str | None = None
    groups: dict[str, str] = field(default_factory=dict)  # the sample's subsets, e.g. {"language": "en"}
    backbone: str | None = None  # the label of the backbone the cell ran on (``RunConfig.backbones``)
    chain: str | None = None  # a multi-turn sample's chain (e.g. MagicBrush's img_id)
    turn: int | None = None  # and its turn, 1 for the first
    input_key: str | None = None  # the cell whose output this turn edited (turns: iterative); None: the recorded source
    metrics: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # per metric: what the value came from (a judge's answer)


def read_manifest(run_dir: Path) -> dict:
    """The manifest of a run folder; ``ConfigError`` when the folder has none or it is not editbench's."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise ConfigError(
            f"{run_dir} is not a run folder (no {MANIFEST}). If a run was killed the moment it created this folder, "
            "nothing ran in it: delete it and start the run again"
        )
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path} is not an editbench run manifest (not valid JSON: {exc})") from exc
    if not (isinstance(manifest, dict) and "editbench" in manifest and isinstance(manifest.get("config"), dict)):
        raise ConfigError(f"{path} is not an editbench run manifest (it lacks the 'editbench' and 'config' entries)")
    return manifest


def write_manifest_file(run_dir: Path, manifest: dict) -> None:
    """Write ``<run_dir>/manifest.json`` atomically."""
    write_atomic(Path(run_dir) / MANIFEST, lambda p: p.write_text(json.dumps(manifest, indent=2)))


def setting_json(setting: dict) -> str:
    """Canonical JSON of a parameter setting (sorted keys), used in keys and the store."""
    return json.dumps(setting, sort_keys=True)


class Store:
    """A run's SQLite database."""

    FILENAME = "results.sqlite"

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / self.FILENAME
        self.db = sqlite3.connect(self.path, isolation_level=None)  # explicit transactions below
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self._add_missing_columns()

    #: Columns added to ``cells`` after the first release, with their SQL types.
    ADDED_COLUMNS = {
        "prep_grad_evals": "INTEGER", "start_step": "INTEGER", "steps_run": "INTEGER", "batch_size": "INTEGER",
        "batch_id": "TEXT", "worker": "TEXT", "groups": "TEXT", "backbone": "TEXT",
        "chain": "TEXT", "turn": "INTEGER", "input_key": "TEXT",
    }  # fmt: skip

    def _add_missing_columns(self) -> None:
        """Columns added to ``cells`` since a store was created (so older runs can be resumed)."""
        present = {row[1] for row in self.db.execute("PRAGMA table_info(cells)")}
        for name, kind in self.ADDED_COLUMNS.items():
            if name not in present:
                self.db.execute(f"ALTER TABLE cells ADD COLUMN {name} {kind}")

    def close(self) -> None:
        self.db.close()

    def set_info(self, key: str, value) -> None:
        self.db.execute("INSERT OR REPLACE INTO run_info VALUES (?, ?)", (key, json.dumps(value)))

    def info(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM run_info WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def save_manifest(self, manifest: dict) -> None:
        """Write the run's manifest file (atomically) and its copy in run info."""
        write_manifest_file(self.path.parent, manifest)
        self.set_info("manifest", manifest)

    def finished_keys(self, except_failed: bool = False) -> set[str]:
        """Keys of the stored cells (``except_failed``: of those that did not fail, which a resume
        with ``--retry-failed`` runs again)."""
        where = " WHERE status != 'failed'" if except_failed else ""
        return {k for (k,) in self.db.execute(f"SELECT key FROM cells{where}")}

    def outcomes(self) -> dict[str, tuple[str, str | None, str | None]]:
        """Every stored cell's (status, error, output path) by key: what a chain's next turn needs."""
        return {k: (status, error, path) for k, status, error, path in
                self.db.execute("SELECT key, status, error, output_path FROM cells")}  # fmt: skip

    def stored_metrics(self) -> set[tuple[str, str]]:
        """(cell key, metric name) of every stored per-cell value, NaN included."""
        return set(self.db.execute("SELECT key, name FROM metrics"))

    def metric_names(self) -> set[str]:
        """The metrics with at least one stored per-cell value (NaN included)."""
        return {name for (name,) in self.db.execute("SELECT DISTINCT name FROM metrics")}

    def replace_metric_values(self, names: list[str], info: dict) -> None:
        """In one transaction: drop every per-cell value and note of metrics ``names`` (to be
        computed again) and set the run info entries ``info``."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for table in ("metrics", "metric_notes"):
                self.db.executemany(f"DELETE FROM {table} WHERE name = ?", [(name,) for name in names])
            self.db.executemany("INSERT OR REPLACE INTO run_info VALUES (?, ?)",
                                [(key, json.dumps(value)) for key, value in info.items()])  # fmt: skip
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def commit_cell(self, cell: CellRecord) -> None:
        """Write one cell and its metrics in a single transaction."""
        values = {f.name: getattr(cell, f.name) for f in fields(CellRecord) if f.name not in ("metrics", "notes")}
        values["setting"] = setting_json(cell.setting)
        values["groups"] = json.dumps(cell.groups, sort_keys=True) if cell.groups else None
        if cell.prep_cached is not None:
            values["prep_cached"] = int(cell.prep_cached)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute(
                f"INSERT OR REPLACE INTO cells ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                tuple(values.values()),
            )
            self.db.execute("DELETE FROM metrics WHERE key = ?", (cell.key,))
            self.db.executemany(
                "INSERT INTO metrics VALUES (?, ?, ?)", [(cell.key, n, v) for n, v in cell.metrics.items()]
            )
            self.db.execute("DELETE FROM metric_notes WHERE key = ?", (cell.key,))
            self.db.executemany(
                "INSERT INTO metric_notes VALUES (?, ?, ?)", [(cell.key, n, t) for n, t in cell.notes.items()]
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _transaction(self, statement: str, rows: list[tuple]) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(statement, rows)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def add_cell_metrics(self, key: str, values: dict[str, float], notes: dict[str, str] | None = None) -> None:
        """Add or replace metrics of a finished cell, and their notes (``editbench score``)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany("INSERT OR REPLACE INTO metrics VALUES (?, ?, ?)", [(key, n, v) for n, v in values.items()])
            self.db.executemany("INSERT OR REPLACE INTO metric_notes VALUES (?, ?, ?)",
                                [(key, n, t) for n, t in (notes or {}).items()])  # fmt: skip
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def commit_set_metrics(self, rows: list[tuple], n_source: int | None = None) -> None:
        """Replace set-level values: rows of (method, setting JSON, name, value, n edited images);
        ``n_source``, the number of source images they were compared with, goes to run info."""
        self._transaction("INSERT OR REPLACE INTO set_metrics VALUES (?, ?, ?, ?, ?)", rows)
        if n_source is not None:
            self.set_info("set_metrics_n_source", n_source)

    def set_metrics_frame(self):
        """Set-level metrics as a DataFrame: method, setting (JSON), name, value, n."""
        import pandas as pd

        return pd.read_sql_query("SELECT method, setting, name, value, n FROM set_metrics ORDER BY rowid", self.db)

    def cells_frame(self):
        """All cells as a pandas DataFrame: one row per cell, metrics as ``metric.<name>`` columns,
        their notes as ``note.<name>``, and ``groups`` as a dict (empty when the sample has none)."""
        import pandas as pd

        cells = pd.read_sql_query("SELECT * FROM cells ORDER BY rowid", self.db)
        cells["groups"] = [json.loads(g) if isinstance(g, str) else {} for g in cells["groups"]]
        for table, column, prefix in (("metrics", "value", "metric."), ("metric_notes", "note", "note.")):
            frame = pd.read_sql_query(f"SELECT * FROM {table}", self.db)
            if len(frame):
                wide = frame.pivot(index="key", columns="name", values=column).add_prefix(prefix)
                cells = cells.merge(wide, left_on="key", right_index=True, how="left")
        return cells


def error_counts(cells) -> list[tuple[str, int]]:
    """The distinct errors of a cells frame's failed cells with how many cells each, most common
    first (equal counts in the errors' order)."""
    failed = cells[cells["status"] == "failed"]["error"].fillna("(no message)").astype(str)
    counts = failed.value_counts(sort=False)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))
