"""tinyworld: a synthetic multimodal world (shapes, moving shapes, beeps) and the text about it.

The default system is trained on it by the project's own recipe (issue 4, in progress): :mod:`tinyworld.world`
renders things, :mod:`tinyworld.text` writes captions, questions, answers and generation requests.
"""
