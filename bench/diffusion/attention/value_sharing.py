"""RF-Solver-Edit's feature sharing: the target takes the source's values, in SD3's joint attention or
FLUX.1's single-stream blocks.

Definition: docs/REFERENCE.md, "Flow solvers and value sharing (SD3)".

During the inversion the source's image-token values ``V`` (``attn.to_v`` of the image stream) of
the chosen transformer blocks are recorded at the evaluations of the steps that editing will share
(``ValueSharing.recording``); during the first ``inject`` editing steps each row's evaluation
replaces its own image-token values by its source's, recorded at the same step and stage
(``ValueSharing.injecting``). Text-token values (``add_v_proj``) and SD3.5's second,
image-only attention (``attn2``) are left alone.

Where this follows whom: the authors' FLUX code (RF-Solver-Edit ``SingleStreamBlock``, FireFlow's
the same) replaces the whole ``V`` of FLUX's single-stream blocks, whose sequence is text and image
tokens together: on FLUX the shared blocks are the last ``N`` of ``single_transformer_blocks``, whose
``attn.to_v`` projects text and image tokens together, so the whole ``V`` is shared, as theirs. SD3
has no single-stream blocks, and its joint blocks keep the two streams' projections apart, so only
the image stream's values are shared there, as the issue asks. The pairing
key is the authors': (step in sampling order, first or half-step evaluation, block); a key the
inversion never evaluated (FireFlow's reused velocities) is simply not shared, as their
``if name in info['feature']``. Both branches of the target's CFG batch take the source's values;
the source's are those of its conditional branch (the last row its CFG batch evaluates): FLUX is
guidance-distilled, so the authors' code has one branch and says nothing of this.

The processor goes in through diffusers' attention-processor API (``hooks.hooked``: every
original processor is put back when the block ends, even after an error). It runs the block's
own processor; to read or replace the values it holds a forward hook on ``attn.to_v`` for that
one call only, so an evaluation that shares nothing is the original computation, bit for bit.
"""

from contextlib import contextmanager

import torch

from bench.diffusion.attention.hooks import hooked


def shared_stack(transformer) -> str:
    """The blocks values are shared in: FLUX's single-stream blocks, else SD3's (joint) transformer blocks."""
    return "single_transformer_blocks" if hasattr(transformer, "single_transformer_blocks") else "transformer_blocks"


def attention_name(transformer, block: int) -> str:
    """The attention processor's name of block ``block`` of the shared stack."""
    return f"{shared_stack(transformer)}.{block}.attn.processor"


def shared_blocks(transformer, last: int) -> list[int]:
    """The indices of the last ``last`` blocks of the shared stack (all of them when there are fewer)."""
    count = len(getattr(transformer, shared_stack(transformer)))
    return list(range(max(0, count - last), count))


class ValueSharing:
    """What the processors do at the current evaluation (``at``; None: nothing).

    Recording fills ``banks[0]``: (evaluation, block) -> (tokens, inner) values of the last row, on
    the CPU (moved to the device at each injection). Injecting gives every row of the batch its own bank's values (a CFG batch of ``k`` branches
    repeats the ``B`` rows' values ``k`` times, as ``guided_velocity`` stacks its branches)."""

    def __init__(self, banks: list[dict], record: bool):
        self.banks, self.record, self.at = banks, record, None

    @classmethod
    def recording(cls) -> "ValueSharing":
        return cls([{}], record=True)

    @classmethod
    def injecting(cls, banks: list[dict]) -> "ValueSharing":
        return cls(banks, record=False)

    def stored(self, block: int, batch: int) -> torch.Tensor | None:
        """The values to put into a batch of ``batch`` rows at block ``block``, or None."""
        key = (self.at, block)
        if key not in self.banks[0]:
            return None
        values = torch.stack([bank[key] for bank in self.banks])
        if batch % len(values):
            raise RuntimeError(f"value sharing: a batch of {batch} rows is not whole branches of {len(values)} rows")
        return values.repeat(batch // len(values), 1, 1)


class SharedValueAttention:
    """Runs block ``block``'s original attention processor, recording or replacing the values ``attn.to_v`` projects
    (SD3: the image tokens'; FLUX single-stream: text and image tokens')."""

    def __init__(self, original, block: int, sharing: ValueSharing):
        self.original, self.block, self.sharing = original, block, sharing

    def __call__(self, attn, hidden_states, *args, **kwargs):
        if self.sharing.at is None:
            return self.original(attn, hidden_states, *args, **kwargs)
        calls = []
        if self.sharing.record:

            def hook(module, inputs, output):  # kept in host memory, as the authors do: ~400 MB per SD3.5 image
                calls.append(output[-1].detach().to("cpu", copy=True))
        else:
            values = self.sharing.stored(self.block, hidden_states.shape[0])
            if values is None:
                return self.original(attn, hidden_states, *args, **kwargs)

            def hook(module, inputs, output):
                calls.append(output)
                return values.to(output)

        handle = attn.to_v.register_forward_hook(hook)
        try:
            out = self.original(attn, hidden_states, *args, **kwargs)
        finally:
            handle.remove()
        if len(calls) != 1:
            raise RuntimeError(
                f"value sharing: block {self.block}'s attention processor {type(self.original).__name__} did not "
                "call attn.to_v once (a fused processor?); use diffusers' JointAttnProcessor2_0 (SD3) or FluxAttnProcessor"
            )
        if self.sharing.record:
            self.sharing.banks[0][(self.sharing.at, self.block)] = calls[0]
        return out


@contextmanager
def sharing_values(transformer, blocks: list[int], sharing: ValueSharing):
    """Install ``SharedValueAttention`` on the attention of ``blocks`` (of the shared stack); the original
    processors come back on exit, whatever happens."""
    originals = transformer.attn_processors
    names = {b: attention_name(transformer, b) for b in blocks}
    processors = {name: SharedValueAttention(originals[name], b, sharing) for b, name in names.items()}
    with hooked(transformer, processors):
        yield sharing
