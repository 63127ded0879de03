"""A family's files, from its ``COMPONENT_WEIGHTS`` (weight-holding sub-folder -> safetensors file stem): the file
of each component the fingerprint hashes, and the files of a hub snapshot it fetches (diffusers' layout,
safetensors only: shards and their index files included, single-file and pickle weights left out)."""


def weight_files(weights: dict[str, str]) -> dict[str, str]:
    """Each component's safetensors file (a sharded one is named by its index file)."""
    return {component: f"{stem}.safetensors" for component, stem in weights.items()}


def hub_patterns(weights: dict[str, str], folders: tuple[str, ...], any_stem: bool = False) -> list[str]:
    """``model_index.json``, the scheduler and ``folders`` (tokenizers, processors) whole, then each component's
    config and its ``<stem>*.safetensors*`` files (any ``*.safetensors*`` file with ``any_stem``)."""
    patterns = ["model_index.json", "scheduler/*", *(f"{folder}/*" for folder in folders)]
    for component, stem in weights.items():
        patterns += [f"{component}/config.json", f"{component}/{'' if any_stem else stem}*.safetensors*"]
    return patterns
