"""evo: an evolutionary population search engine for LLM pretraining code.

A population of ``train.py`` variants (genomes) is mutated, each child is trained for a
fixed time budget by a trusted harness (``prepare.py``) and scored by val_bpb; a DuckDB
archive records everything. Start with ``evo start --population 8``; see ``evo --help``.
"""

__version__ = "0.1.0"
