"""Win rates from a pairwise judge's matches (``bench.execution.pairwise``): per two rows of a run,
wins, losses, ties and failures by class, and the first row's win rate (a tie counts half) with
a 95 % bootstrap interval over the judged matches. The matches themselves (``RUN/pairwise.jsonl``)
are what an Elo fit reads."""

import math
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from bench.execution.pairwise import Match
from bench.reporting.aggregate import bootstrap_ci


@dataclass
class WinRate:
    first: str
    second: str
    wins: int
    losses: int
    ties: int
    failures: Counter
    rate: float
    low: float
    high: float


def win_rates(matches: list[Match]) -> list[WinRate]:
    by_pair = defaultdict(list)
    for m in matches:
        by_pair[m.first, m.second].append(m)
    out = []
    for (first, second), of in by_pair.items():
        points = [1.0 if m.winner == "first" else 0.0 if m.winner == "second" else 0.5 for m in of if m.winner]
        low, high = bootstrap_ci(points) if len(points) > 1 else (math.nan, math.nan)
        out.append(WinRate(first, second, sum(m.winner == "first" for m in of), sum(m.winner == "second" for m in of),
                           sum(m.winner == "tie" for m in of), Counter(m.kind for m in of if not m.winner),
                           float(np.mean(points)) if points else math.nan, low, high))  # fmt: skip
    return out


def win_rate_markdown(rates: list[WinRate], judge_line: str) -> str:
    from bench.reporting.report import md_table, md_text

    def num(v):
        return "—" if math.isnan(v) else f"{v:.3f}"

    body = [[r.first, r.second, str(r.wins), str(r.losses), str(r.ties),
             ", ".join(f"{n} {k}" for k, n in r.failures.most_common()) or "0",
             num(r.rate) + (f" [{num(r.low)}, {num(r.high)}]" if not math.isnan(r.low) else "")] for r in rates]  # fmt: skip
    lines = [f"Pairwise judge: {md_text(judge_line)}", ""]
    lines += md_table(["first", "second", "first wins", "second wins", "ties", "failed", "first's win rate [95% CI]"], body)
    lines += ["", "Win rate: (wins + ties / 2) / judged matches (cells of the same sample and seed); failures are "
              "counted, never a result. Every match: pairwise.jsonl in the run folder."]  # fmt: skip
    return "\n".join(lines) + "\n"
