"""Side-by-side benchmarks: mmgraph's paths against the Hugging Face code users would run instead.

Every benchmark builds both sides in one process, on the same random weights (the modules are shared, not
copied), checks that they compute the same thing, then times them on the same inputs:

* :mod:`benchmarks.twins` -- ``LlavaForConditionalGeneration`` and an :class:`~orchestrator.system.MMSystem`
  sharing its vision tower, projector and LLM, at a named size (:data:`benchmarks.twins.SIZES`).
"""
