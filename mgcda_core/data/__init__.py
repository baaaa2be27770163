"""Datasets: the training layout (``layout``), Cityscapes/COCO readers, VoidClass, AnomalyMix, procedural scenes
and evaluation-set readers. Import the submodules directly; this file stays empty so one reader never pulls in
the others.
"""
