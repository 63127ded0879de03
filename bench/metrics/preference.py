"""Learned preference metrics reported beside the judges.

- ``pickscore`` (Kirstain et al., "Pick-a-Pic", NeurIPS 2023): the CLIP-H that its authors
  fine-tuned on human preferences (``metric_options.pickscore_model``, default
  ``yuvalkirstain/PickScore_v1``, with the processor of the CLIP-H it started from,
  ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``, as the authors' inference code loads it), scored as
  their code does: ``exp(logit_scale) * cos(E_img(edited), E_txt(target prompt))``. The model
  loads through transformers from the local cache; nothing is downloaded.
"""

from bench.metrics.clip import _Clip, image_embeddings


class PickScore(_Clip):
    name = "pickscore"
    higher_is_better = True
    value_range = (-100.0, 100.0)  # CLIP's logit scale is capped at 100
    nan_reason = "the sample has no target prompt"
    description = ("PickScore of the edited image against the target prompt: exp(logit_scale) * cos of "
                   "PickScore_v1's CLIP-H embeddings (metric_options.pickscore_model)")  # fmt: skip

    def load(self, extractors):
        self.device = extractors.device
        self.model, self.processor = extractors.pickscore(self.name)

    def compute(self, edited, source, samples):
        images = image_embeddings(self.model, self.processor, edited)
        texts = self._texts([s.target_prompt for s in samples])
        return self.model.logit_scale.exp() * (images * texts).sum(-1)


METRICS = (PickScore,)
