"""Networks: encoders, SPADE, the Synboost dissimilarity network, segmentation plug-ins, MGCDA training heads.

Import the submodules directly (``from mgcda_core.model.dissimilarity import DissimNetPrior``); this package
file stays empty so that importing one network never pulls in the others.
"""
