import json

import torch

from bench.diffusion.backbone import UNTRAINED_LABEL, Backbone, BackboneSpec


def test_tiny_is_saved_as_safetensors_and_loaded_like_a_checkpoint(backbone):
    folder = backbone.folder
    assert json.loads((folder / "model_index.json").read_text())["unet"][1] == "UNet2DConditionModel"
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(folder.rglob("*.bin"))
    assert backbone.vae_factor == 8
    assert backbone.text_encoder.config.vocab_size == 49408
    assert backbone.unet.config.cross_attention_dim == backbone.text_encoder.config.hidden_size
    assert backbone.labels == [UNTRAINED_LABEL]


def test_fingerprint_is_stable_and_keyed_on_dtype(backbone):
    again = Backbone(BackboneSpec(device="cpu"))
    assert again.fingerprint == backbone.fingerprint
    assert all(len(h) == 64 for h in backbone.fingerprint["weights_sha256"].values())
    assert Backbone(BackboneSpec(dtype="bf16", device="cpu")).fingerprint_id != backbone.fingerprint_id


def test_same_seed_builds_the_same_weights(backbone, tmp_path, monkeypatch):
    monkeypatch.setenv("EDITBENCH_CACHE", str(tmp_path))
    rebuilt = Backbone(BackboneSpec(device="cpu"))
    assert rebuilt.folder != backbone.folder
    assert rebuilt.fingerprint["weights_sha256"] == backbone.fingerprint["weights_sha256"]


def test_text_embeddings_are_cached(backbone):
    a = backbone.encode_text("a cat")
    assert backbone.encode_text("a cat") is a
    assert a.shape == (1, 77, backbone.text_encoder.config.hidden_size)
    assert not torch.equal(a, backbone.encode_text("a dog"))


def test_nfe_counts_latents_not_calls(backbone):
    z = torch.zeros(3, 4, backbone.latent_size, backbone.latent_size)
    text = backbone.encode_text("").expand(3, -1, -1)
    before = backbone.nfe.count
    with torch.no_grad():
        backbone.eps(z, 10, text)
    assert backbone.nfe.count - before == 3


def test_encode_decode_shapes_and_range(backbone, image):
    z = backbone.encode_image(image[None])
    assert z.shape == (1, 4, backbone.latent_size, backbone.latent_size)
    expected = backbone.vae.encode(image[None] * 2 - 1).latent_dist.mean * backbone.vae.config.scaling_factor
    torch.testing.assert_close(z, expected)
    with torch.no_grad():
        x = backbone.decode(z)
    assert x.shape == (1, 3, 128, 128) and 0 <= x.min() and x.max() <= 1


def test_schedulers_are_fresh_per_call(backbone):
    a, b = backbone.new_scheduler(10), backbone.new_scheduler(20)
    assert a is not b and len(a.timesteps) == 10 and len(b.timesteps) == 20
    assert a.config.beta_schedule == "scaled_linear" and a.config.beta_end == 0.012
