"""The diffusion layer: the Stable Diffusion backbone and everything that runs it.

The backbone and its embedded tiny builder (``backbone``, ``tiny``), the shared reverse-process
pieces (``sampling``), guided sampling (``guidance``), latent masks (``masks``), the inversions
(``inversion/``: the DDIM family, EDICT, edit-friendly DDPM), attention control and feature hooks
(``attention/``), condition maps and the models that make them (``control``, ``annotators``), and
the networks loaded beside the backbone (``extra_networks``). It builds on the spine and the
metrics layer (CLIP guidance scores with the metrics' CLIP extractor) and knows nothing of runs.
"""
