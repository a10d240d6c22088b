"""tinyworld: a synthetic multimodal world (shapes, moving shapes, beeps), the text about it, and the recipe that
trains the default ``tiny-world`` system on it.

:mod:`tinyworld.world` renders things, :mod:`tinyworld.text` writes captions, questions, answers and generation
requests, :mod:`tinyworld.recipe` trains every component (``mmgraph train world``), :mod:`tinyworld.evaluate`
scores a system on held-out samples (``mmgraph eval``). The trained weights ship in ``tinyworld/weights``.
docs/tinyworld.md ("Where the code is") says what every module holds.
"""
