"""The claims ledger: each conclusion of the study this project grew from (:data:`.rules.CLAIMS`, drawn
from pictures) put to a test that could come out either way, with a control, an effect size with a 95 %
interval, and a verdict by a rule fixed before any number is computed. :mod:`.rules` holds a row and its
verdict, :mod:`.probes` the tests, :mod:`.bench` the planted-cause bench, :mod:`.ledger` which rows each
stage saves and how they are read, gated and combined over seeds.
"""
