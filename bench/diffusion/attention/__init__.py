"""Attention inside the denoiser (UNet or SD3 transformer), always through diffusers' attention-processor API: Prompt-to-Prompt's
attention control (``control``) and its picture (``figure``), and the attention and feature hooks
of the two-branch editors MasaCtrl, PnP and pix2pix-zero (``hooks``), and RF-Solver-Edit's value
sharing on SD3's joint attention (``value_sharing``)."""
