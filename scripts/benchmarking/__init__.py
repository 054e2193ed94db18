"""The pieces of ``scripts/benchmark.py``: what is measured (results, models, measure, engines, reference,
train_memory), the CNN curve it is judged against (curve) and how a run is reported (report, plot)."""
