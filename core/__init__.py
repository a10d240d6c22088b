"""mmgraph's ground floor: plain data and plumbing every room shares (docs/architecture.md).

``config`` (SystemConfig, presets), ``turns`` (the turn vocabulary), ``errors``, ``registry``, ``artifacts`` (the
media store), ``hub`` (model names to folders), ``options`` (command-line options from pydantic configs). Nothing
here imports torch or a model library.
"""
