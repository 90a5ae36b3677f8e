"""The kit's one package (README.md); importing it first keeps hub kernels out (src/hub.py)."""

from src.hub import refuse_hub_kernels

refuse_hub_kernels()
