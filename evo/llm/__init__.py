"""The LLM mutation operator's parts, one responsibility per module.

``prompt`` builds the request from program.md, the parent and the archive; ``edits``
parses an answer and applies its SEARCH/REPLACE edits strictly; ``client`` calls the
Messages API through the official SDK; ``prices`` turns tokens into USD; ``budget``
enforces the run's spending cap. :mod:`evo.operators.llm` wires them together.
"""
