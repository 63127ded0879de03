"""Inversions of a source image, computed once per sample and cached on disk: the DDIM family
(``ddim``: DDIM, null-text, negative-prompt, direct), EDICT's exact coupled inversion (``edict``)
and edit-friendly DDPM inversion (``ddpm``)."""
