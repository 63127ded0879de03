"""Elo ratings from pairwise verdicts, as GEditBench v2 ranks models (its ``elo_score.py``).

A match is (dimension, prompt, row A, row B, outcome) with outcome 1 (A wins), 0 (B wins) or 0.5
(tie). One ability ``theta`` per row is fitted over every dimension at once by maximum likelihood
of the Bradley-Terry model with Davidson's tie extension, one tie propensity ``nu_d`` per
dimension::

    P(A) = e^a / Z,  P(B) = e^b / Z,  P(tie) = 2 nu_d e^((a+b)/2) / Z

with an L2 penalty ``alpha/2 * |theta|^2`` (alpha 1). Each dimension's matches are weighted by
(mean match count over dimensions) / (its match count) (``balanced``: every dimension weighs
alike). As in GEditBench v2's fit, the last row (by name) is held at 0 while fitting and the
abilities are centred afterwards, so the penalty shrinks that row a little more than the others;
``log nu`` is bounded to [-12, 8]. Elo = 1000 + theta * 400 / ln 10. The interval is the 2.5 and
97.5 percentiles over ``n_boot`` refits on prompts resampled with replacement, per dimension
(its matches on one prompt travel together), from ``numpy.random.default_rng(seed)``.
"""

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp

ELO_BASE, ELO_SCALE = 1000.0, 400.0 / math.log(10.0)
LOG_NU_BOUNDS = (-12.0, 8.0)


@dataclass(frozen=True)
class Match:
    """One verdict: on ``prompt`` in ``dimension``, ``a`` against ``b``; ``outcome`` 1, 0 or 0.5."""

    dimension: str
    prompt: str
    a: str
    b: str
    outcome: float


@dataclass(frozen=True)
class Rating:
    """A row's Elo with its 95 % bootstrap interval, dimensions it was compared in and its matches."""

    name: str
    elo: float
    low: float
    high: float
    dimensions: int
    matches: int


def _counts(matches: list[Match], index: dict[str, int]) -> np.ndarray:
    """Rows (a, b, A wins, B wins, ties), one per ordered pair that met."""
    table: dict[tuple[int, int], list[float]] = {}
    for m in matches:
        slot = {1.0: 2, 0.0: 3, 0.5: 4}[float(m.outcome)]
        row = table.setdefault((index[m.a], index[m.b]), [index[m.a], index[m.b], 0.0, 0.0, 0.0])
        row[slot] += 1
    return np.asarray(list(table.values()), dtype=float).reshape(-1, 5)


def _weights(per_dimension: list[np.ndarray]) -> np.ndarray:
    sizes = np.asarray([c[:, 2:].sum() for c in per_dimension])
    played = sizes[sizes > 0]
    return np.where(sizes > 0, played.mean() / np.maximum(sizes, 1), 0.0) if len(played) else np.zeros(len(sizes))


def fit(per_dimension: list[np.ndarray], n_rows: int, alpha: float = 1.0, start=None) -> tuple[np.ndarray, np.ndarray]:
    """(centred abilities, log tie propensities) maximising the penalised Davidson likelihood."""
    weights = _weights(per_dimension)
    if start is None:
        rates = [c[:, 4].sum() / c[:, 2:].sum() if c[:, 2:].sum() else 0.0 for c in per_dimension]
        rates = np.clip(rates, 1e-6, 1 - 1e-6)
        start = (np.zeros(n_rows), np.log(rates / (1 - rates)))
    theta0, log_nu0 = start
    x0 = np.concatenate([(theta0 - theta0.mean())[:-1], np.clip(log_nu0, *LOG_NU_BOUNDS)])

    def loss(x):
        theta = np.append(x[: n_rows - 1], 0.0)
        log_nu = x[n_rows - 1 :]
        value, grad, grad_nu = 0.5 * alpha * theta @ theta, alpha * theta, np.zeros(len(per_dimension))
        for d, (w, c) in enumerate(zip(weights, per_dimension)):
            if not w or not len(c):
                continue
            ia, ib = c[:, 0].astype(int), c[:, 1].astype(int)
            logits = np.stack([theta[ia], theta[ib], log_nu[d] + math.log(2.0) + (theta[ia] + theta[ib]) / 2], axis=1)
            log_p = logits - logsumexp(logits, axis=1, keepdims=True)
            value -= w * (c[:, 2:] * log_p).sum()
            excess = w * (c[:, 2:].sum(axis=1, keepdims=True) * np.exp(log_p) - c[:, 2:])
            np.add.at(grad, ia, excess[:, 0] + excess[:, 2] / 2)
            np.add.at(grad, ib, excess[:, 1] + excess[:, 2] / 2)
            grad_nu[d] = excess[:, 2].sum()
        return value, np.concatenate([grad[:-1], grad_nu])

    bounds = [(None, None)] * (n_rows - 1) + [LOG_NU_BOUNDS] * len(per_dimension)
    result = minimize(loss, x0, jac=True, method="L-BFGS-B", bounds=bounds)
    if not result.success:
        raise RuntimeError(f"the Elo fit did not converge: {result.message}")
    theta = np.append(result.x[: n_rows - 1], 0.0)
    return theta - theta.mean(), result.x[n_rows - 1 :]


def elo_ratings(matches: list[Match], n_boot: int = 100, seed: int = 42, alpha: float = 1.0) -> list[Rating]:
    """Every row's Elo and bootstrap interval, best first (see the module doc)."""
    names = sorted({m.a for m in matches} | {m.b for m in matches})
    index = {name: i for i, name in enumerate(names)}
    if len(names) < 2:
        return [Rating(n, ELO_BASE, ELO_BASE, ELO_BASE, 1, 0) for n in names]
    dimensions = list(dict.fromkeys(m.dimension for m in matches))
    prompts = {d: {} for d in dimensions}  # dimension -> prompt -> its matches
    for m in matches:
        prompts[m.dimension].setdefault(m.prompt, []).append(m)
    clusters = {d: [_counts(ms, index) for ms in by_prompt.values()] for d, by_prompt in prompts.items()}
    whole = [_merge(clusters[d], len(names)) for d in dimensions]
    theta, log_nu = fit(whole, len(names), alpha)
    rng, draws = np.random.default_rng(seed), []
    for _ in range(n_boot):
        sample = []
        for d in dimensions:
            picked = rng.integers(0, len(clusters[d]), size=len(clusters[d]))
            sample.append(_merge([clusters[d][i] for i in picked], len(names)))
        try:
            draws.append(fit(sample, len(names), alpha, start=(theta, log_nu))[0])
        except RuntimeError:
            continue  # a resample that does not converge is left out, as GEditBench v2's script does
    low, high = np.percentile(draws, [2.5, 97.5], axis=0) if draws else (theta, theta)
    covered = {n: sum(any(n in (m.a, m.b) for m in matches if m.dimension == d) for d in dimensions) for n in names}
    played = {n: sum(n in (m.a, m.b) for m in matches) for n in names}
    ratings = [Rating(n, ELO_BASE + ELO_SCALE * theta[i], ELO_BASE + ELO_SCALE * low[i], ELO_BASE + ELO_SCALE * high[i],
                      covered[n], played[n]) for n, i in index.items()]  # fmt: skip
    return sorted(ratings, key=lambda r: -r.elo)


def _merge(counts: list[np.ndarray], n_rows: int) -> np.ndarray:
    """Several prompts' count rows summed per ordered pair (rows of pairs that never met dropped)."""
    table = np.zeros((n_rows, n_rows, 3))
    for c in counts:
        np.add.at(table, (c[:, 0].astype(int), c[:, 1].astype(int)), c[:, 2:])
    ia, ib = np.nonzero(table.sum(axis=2) > 0)
    return np.column_stack([ia, ib, table[ia, ib]]).astype(float).reshape(-1, 5)
