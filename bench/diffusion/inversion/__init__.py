"""Inversions of a source image, computed once per sample and cached on disk: the DDIM family
(``ddim``: DDIM, null-text, negative-prompt, direct), EDICT's exact coupled inversion (``edict``),
edit-friendly DDPM inversion (``ddpm``), and on SD3 the flow inversion (``flow``), RF-Inversion's
controlled one (``rf``), the higher-order flow solvers (``flow_solvers``: RF-Solver, FireFlow) and
their cached inversion with value recording (``solver_inversion``). Each module defines its
family's preparation spec (what a method's ``preparation`` returns); ``spec`` holds their shared
base and cache key."""
