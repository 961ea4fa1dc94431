"""The ground every other package stands on: image files, grids, atomic writes, the case record.

Nothing here imports torch or MONAI, or any other package of this project: ``model`` (the pipeline
and its weights), ``lesion_report``, ``runner``, ``evaluation`` and ``training`` all build on it, and
``tests/test_layering.py`` fails on an import that runs the other way.
"""
