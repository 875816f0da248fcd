"""Continual learning: training a model again (new data, new labels, a new task) without forgetting what it knew.

    heads.py       label-set extension: the union of old and new labels, old rows of the head copied as they are
    replay.py      earlier examples mixed into the training set at a seeded share
    penalties.py   L2-SP and EWC (diagonal Fisher): terms of the objective the engine adds through its generic
                   `penalties` hook (the engine knows nothing about continual learning)
    stage.py       what `ftune train` does with the `continual` group: replay data, the regulariser, the Fisher
                   file of an earlier run, adapters per stage, the forgetting table of earlier runs

The settings and the experiment: docs/continual.md.
"""
