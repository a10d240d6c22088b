"""Side-by-side benchmarks: mmgraph's paths against the Hugging Face code users would run instead.

Every benchmark builds both sides in one process, on the same random weights (the modules are shared, not
copied), checks that they compute the same thing, then times them on the same inputs:

* :mod:`benchmarks.twins` -- ``LlavaForConditionalGeneration`` and an :class:`~orchestrator.system.MMSystem`
  sharing its vision tower, projector and LLM, at a named size (:data:`benchmarks.twins.SIZES`);
* :mod:`benchmarks.peers` -- a published checkpoint folder loaded by its Hugging Face class and imported by mmgraph
  (``orchestrator.peers``).

:mod:`benchmarks.run` declares the ``mmgraph bench`` options and imports nothing heavy (the CLI builds its parser
on every call); :mod:`benchmarks.suite` runs the benchmarks those options name.
"""

#: every benchmark ``mmgraph bench`` knows
BENCHES = ("train", "decode", "graph", "generate", "grouping", "micro", "optimizer", "peers")
#: what ``mmgraph bench`` runs when none is named (grouping, micro and optimizer train tinyworld's models)
DEFAULT_BENCHES = ("train", "decode", "graph", "generate")
