"""Prompt-to-Prompt's attention picture: each token's cross-attention map, one block of
rows per prompt, every tile titled with its full token and one shared colour bar.

Each map is divided by its own maximum (as the P2P paper's figures show them), so the
colour bar reads "fraction of that token's peak", not absolute attention.
"""

import io
import textwrap

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

TOKENS_PER_ROW = 10
TILE_IN = 1.0
LABEL_CHARS = 16  # a token longer than this wraps onto further lines, never cut


def attention_figure(maps: np.ndarray, tokens: list[list[str]], prompt_names=("source", "target")) -> Figure:
    """``maps``: (prompts, tokens, h, w) averaged attention; ``tokens[b]``: prompt b's token
    texts (start and end tokens included), one per map column used."""
    blocks = [-(-len(t) // TOKENS_PER_ROW) for t in tokens]  # rows per prompt
    n_cols = min(TOKENS_PER_ROW, max(len(t) for t in tokens))
    fig = Figure(layout="constrained", figsize=(TILE_IN * n_cols + 1.0, (TILE_IN + 0.45) * sum(blocks) + 0.3))
    FigureCanvasAgg(fig)
    axes = fig.subplots(sum(blocks), n_cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    image = None
    for b, texts in enumerate(tokens):
        first = sum(blocks[:b])
        for j, text in enumerate(texts):
            ax = axes[first + j // n_cols, j % n_cols]
            peak = max(float(maps[b, j].max()), 1e-12)
            image = ax.imshow(maps[b, j] / peak, cmap="viridis", vmin=0, vmax=1)
            ax.set_title("\n".join(textwrap.wrap(text, LABEL_CHARS, break_on_hyphens=False)) or repr(text), fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.axis("on")
        axes[first, 0].set_ylabel(f"{prompt_names[b]} prompt", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention / the token's peak")
    return fig


def figure_image(fig: Figure) -> Image.Image:
    """The figure as an RGB PIL image (what a cell's artifacts hold)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return Image.open(buf).convert("RGB")
