"""Side-by-side benchmarks: mmgraph's paths against the Hugging Face code users would run instead.

Every benchmark builds both sides in one process, on the same random weights (the modules are shared, not
copied), checks that they compute the same thing, then times them on the same inputs:

* :mod:`benchmarks.twins` -- ``LlavaForConditionalGeneration`` and an :class:`~orchestrator.system.MMSystem`
  sharing its vision tower, projector and LLM, at a named size (:data:`benchmarks.twins.SIZES`);
* :mod:`benchmarks.peers` -- a published checkpoint folder loaded by its Hugging Face class and imported by mmgraph
  (``orchestrator.peers``).

:mod:`benchmarks.serve` and :mod:`benchmarks.load` measure the server instead: a real ``mmgraph serve`` process under
concurrent OpenAI clients against one client alone, and under locust with a full queue (load and fault figures).

:mod:`benchmarks.run` declares the ``mmgraph bench`` options and imports nothing heavy (the CLI builds its parser
on every call); :mod:`benchmarks.suite` runs the benchmarks those options name.
"""

#: every benchmark ``mmgraph bench`` knows
BENCHES = ("train", "decode", "graph", "generate", "grouping", "micro", "optimizer", "peers", "serve", "load")
#: what ``mmgraph bench`` runs when none is named (grouping, micro and optimizer train tinyworld's models; serve and
#: load start an ``mmgraph serve`` process and load it for a minute or more)
DEFAULT_BENCHES = ("train", "decode", "graph", "generate")
