"""Parameter counts of a pipeline's networks from their configs alone: each network is built on
PyTorch's meta device (``accelerate.init_empty_weights``), so no weight is read or allocated, and
a 20B model is counted in seconds (``editbench backbones``)."""

import json
from pathlib import Path

#: ``model_index.json`` libraries whose components are networks with a ``config.json``.
NETWORK_LIBRARIES = ("diffusers", "transformers")


def component_parameters(folder: Path) -> dict[str, int]:
    """Parameters of each network of the pipeline folder (``model_index.json``: component ->
    [library, class]), in its order; a folder without an index is SD 1.x's UNet, VAE and CLIP."""
    import diffusers
    import transformers
    from accelerate import init_empty_weights

    folder = Path(folder)
    index_file = folder / "model_index.json"
    index = json.loads(index_file.read_text()) if index_file.is_file() else {
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"]}  # fmt: skip
    counts = {}
    for name, entry in index.items():
        is_network = isinstance(entry, list) and entry[0] in NETWORK_LIBRARIES
        if not is_network or not (folder / name / "config.json").is_file():
            continue
        library, class_name = entry
        cls = getattr(diffusers if library == "diffusers" else transformers, class_name)
        with init_empty_weights():
            if library == "diffusers":
                model = cls.from_config(cls.load_config(folder / name))
            else:
                model = cls._from_config(transformers.AutoConfig.from_pretrained(folder / name))
        if library == "transformers":
            model.tie_weights()  # tied embeddings count once, as loaded (built empty, they are not tied yet)
        counts[name] = sum(p.numel() for p in model.parameters())
    return counts


def format_count(n: int) -> str:
    """``12.0B``, ``335M``, ``83.7K``: three significant figures."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)
