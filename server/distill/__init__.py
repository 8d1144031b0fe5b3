"""Distillation of the Kandinsky 2.2 decoder UNet (see README.md); the CLI is `python3 -m distill`."""
