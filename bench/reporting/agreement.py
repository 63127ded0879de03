"""How well a judge agrees with human preferences, as EditReward's and GEditBench v2's evaluations
measure it (REFERENCE-2026 E.1, D.4), with bootstrap intervals over groups.

For every human-judged pair (i, j) of a group, the judge's margin is ``value_i - value_j``:

- **pairwise accuracy with ties** (Deutsch et al. 2023, arXiv 2305.14324, as EditReward's
  ``calc_accuracy_with_ties_for_edit_reward_bench``): a margin within ``epsilon`` is the judge's
  tie; accuracy = (concordant + both-tie) / all pairs, at the ``epsilon`` among 0 and the margins'
  sizes that maximises it (the chosen ``epsilon`` is reported);
- **pairwise accuracy without ties**: concordant / (concordant + discordant) over the pairs the
  humans did not tie (a zero margin counts as discordant, as in EditReward's code);
- **group accuracy**: the share of groups whose every pair is right (ties: margin within the
  chosen ``epsilon``);
- **Spearman and Kendall** between the judge's values and the annotators' scores, where the set
  has scores.

Pairs with a NaN value (a failed judgment, counted by class) are left out of every figure and
counted. The card's ``ties`` subsets are reported with ties, the others without; ``overall`` is
with ties over all pairs (EditReward-Bench's overall). Intervals are percentile bootstraps that
resample groups (seeded).
"""

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from bench.execution.agreement import JudgedGroup
from bench.reporting.aggregate import CI_LEVEL

N_BOOT = 1000


def accuracy_with_ties(human, margin) -> tuple[float, float]:
    """(best accuracy with ties, its epsilon) of verdicts ``human`` (1, -1, 0) and judge margins; NaN for no pairs."""
    human, margin = np.asarray(human, dtype=float), np.asarray(margin, dtype=float)
    return _with_ties(human, margin) if len(human) else (math.nan, math.nan)


def _with_ties(human: np.ndarray, margin: np.ndarray) -> tuple[float, float]:
    size = np.abs(margin)
    thresholds = np.unique(np.concatenate([[0.0], size]))
    order = np.argsort(size, kind="stable")
    agree = np.concatenate([[0], np.cumsum((human * margin > 0)[order])])  # agreeing pairs among the k smallest
    human_tie = np.concatenate([[0], np.cumsum((human == 0)[order])])
    k = np.searchsorted(size[order], thresholds, side="right")  # pairs the judge ties at each threshold
    accuracy = (agree[-1] - agree[k] + human_tie[k]) / len(human)
    best = int(np.argmax(accuracy))
    return float(accuracy[best]), float(thresholds[best])


def accuracy_without_ties(human, margin) -> float:
    human, margin = np.asarray(human, dtype=float), np.asarray(margin, dtype=float)
    strict = human != 0
    return float((human[strict] * margin[strict] > 0).mean()) if strict.any() else math.nan


@dataclass
class Pairs:
    """The judged pairs of some groups: human verdicts, margins and each pair's group index."""

    human: np.ndarray
    margin: np.ndarray
    group: np.ndarray
    n_groups: int


def pairs_of(judged: list[JudgedGroup]) -> tuple[Pairs, int]:
    """The pairs whose two values are finite, and how many pairs were left out."""
    human, margin, group, left_out = [], [], [], 0
    for g, item in enumerate(judged):
        for i, j, verdict in item.group.pairs:
            d = item.values[i] - item.values[j]
            if math.isnan(d):
                left_out += 1
                continue
            human.append(verdict)
            margin.append(d)
            group.append(g)
    return Pairs(np.array(human, float), np.array(margin, float), np.array(group, int), len(judged)), left_out


def group_accuracy(pairs: Pairs, epsilon: float) -> float:
    """Groups whose every judged pair is right (a human tie: |margin| <= epsilon)."""
    if not len(pairs.human):
        return math.nan
    right = np.where(pairs.human == 0, np.abs(pairs.margin) <= epsilon,
                     (pairs.human * pairs.margin > 0) & (np.abs(pairs.margin) > epsilon))  # fmt: skip
    groups = np.unique(pairs.group)
    wrong = np.unique(pairs.group[~right])
    return 1 - len(wrong) / len(groups)


def _bootstrap(pairs: Pairs, statistic, seed: int = 0) -> tuple[float, float]:
    groups = np.unique(pairs.group)
    if len(groups) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(pairs.group == g) for g in groups]
    values = []
    for _ in range(N_BOOT):
        chosen = rng.integers(0, len(groups), len(groups))
        index = np.concatenate([members[c] for c in chosen])
        regroup = np.concatenate([np.full(len(members[c]), n) for n, c in enumerate(chosen)])
        values.append(statistic(Pairs(pairs.human[index], pairs.margin[index], regroup, len(chosen))))
    values = np.asarray(values)
    values = values[np.isfinite(values)]
    if not len(values):
        return math.nan, math.nan
    tail = (1 - CI_LEVEL) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


@dataclass
class Figure:
    """One agreement figure with its bootstrap interval and the pairs (groups) it is over."""

    name: str
    value: float
    low: float
    high: float
    n_pairs: int
    n_groups: int
    note: str = ""


def figures(judged: list[JudgedGroup], with_ties: bool) -> list[Figure]:
    """The agreement figures of some groups: pairwise accuracy (with ties, or without), group
    accuracy (groups of 3+ candidates; with ties also 2-candidate ones) and the rank correlations."""
    from scipy.stats import kendalltau, spearmanr

    pairs, _ = pairs_of(judged)
    n_pairs, n_groups = len(pairs.human), len(np.unique(pairs.group))
    out = []
    if with_ties:
        def stat(p):
            return _with_ties(p.human, p.margin)[0] if len(p.human) else math.nan

        def group_stat(p):  # each resample chooses its own tie threshold
            return group_accuracy(p, _with_ties(p.human, p.margin)[1]) if len(p.human) else math.nan

        value, epsilon = _with_ties(pairs.human, pairs.margin) if n_pairs else (math.nan, math.nan)
        out.append(Figure("pairwise accuracy with ties", value, *_bootstrap(pairs, stat), n_pairs, n_groups,
                          f"tie threshold {epsilon:.4g}"))  # fmt: skip
    else:
        def stat(p):
            return accuracy_without_ties(p.human, p.margin)

        def group_stat(p):
            return group_accuracy(p, 0.0)

        epsilon = 0.0
        out.append(Figure("pairwise accuracy without ties", stat(pairs), *_bootstrap(pairs, stat), n_pairs, n_groups))
    out.append(Figure("group accuracy", group_accuracy(pairs, epsilon) if n_pairs else math.nan,
                      *_bootstrap(pairs, group_stat), n_pairs, n_groups))  # fmt: skip
    judge, human = [], []
    for item in judged:
        for value, score in zip(item.values, item.group.scores):
            if score is not None and not math.isnan(value):
                judge.append(value)
                human.append(score)
    if len(judge) >= 3 and len(set(judge)) > 1 and len(set(human)) > 1:
        out.append(Figure("Spearman (judge vs annotators' scores)", float(spearmanr(judge, human)[0]), math.nan,
                          math.nan, len(judge), n_groups, "over candidates"))  # fmt: skip
        out.append(Figure("Kendall tau-b (judge vs annotators' scores)", float(kendalltau(judge, human)[0]), math.nan,
                          math.nan, len(judge), n_groups, "over candidates"))  # fmt: skip
    return out


@dataclass
class Agreement:
    set_name: str
    judge_line: str
    metric: str
    sections: list[tuple[str, list[Figure]]]
    failures: Counter
    left_out_pairs: int


def agreement(set_name: str, card: dict, judged: list[JudgedGroup], metric: str, judge_line: str) -> Agreement:
    """Every figure per subset (with ties where the card says), per task, and overall."""
    ties = set(card.get("ties") or [])
    sections = []
    for subset in dict.fromkeys(j.group.subset for j in judged):
        of = [j for j in judged if j.group.subset == subset]
        sections.append((f"subset {subset}", figures(of, subset in ties)))
    tasks = list(dict.fromkeys(j.group.task for j in judged))
    if len(tasks) > 1 and tasks != [s for s, _ in sections]:
        for task in tasks:
            of = [j for j in judged if j.group.task == task]
            sections.append((f"task {task}", figures(of, of[0].group.subset in ties)))
    if len(sections) > 1:
        sections.append(("overall", figures(judged, bool(ties))))
    failures = Counter(f for j in judged for f in j.failures if f)
    return Agreement(set_name, judge_line, metric, sections, failures, pairs_of(judged)[1])


def agreement_markdown(result: Agreement) -> str:
    from bench.reporting.report import md_table, md_text

    lines = [f"# Judge agreement: {md_text(result.set_name)}", "", f"Judge: {md_text(result.judge_line)}; "
             f"metric {md_text(result.metric)}", ""]  # fmt: skip
    for title, figs in result.sections:
        body = [[f.name, _num(f.value) + (f" [{_num(f.low)}, {_num(f.high)}]" if not math.isnan(f.low) else ""),
                 str(f.n_pairs), str(f.n_groups), f.note] for f in figs]  # fmt: skip
        lines += [f"## {md_text(title)}", ""] + md_table(["figure", "value [95% CI]", "pairs", "groups", "note"], body)
        lines.append("")
    failed = ", ".join(f"{n} {kind}" for kind, n in result.failures.most_common())
    lines.append(f"Judgments that failed (NaN, their pairs left out: {result.left_out_pairs}): {failed or 'none'}.")
    lines.append("Intervals: percentile bootstrap over groups. Accuracy with ties: Deutsch et al. 2023's tie "
                 "threshold, chosen to maximise it (as EditReward's evaluation does).")
    return "\n".join(lines) + "\n"


def _num(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.4f}"
