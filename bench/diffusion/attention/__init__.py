"""Attention inside the UNet, always through diffusers' attention-processor API: Prompt-to-Prompt's
attention control (``control``) and its picture (``figure``), and the attention and feature hooks
of the two-branch editors MasaCtrl, PnP and pix2pix-zero (``hooks``)."""
