"""Benchmarks against the Model Garden; run each as `python -m benchmarks.<name>`.

Commands: `forward`, `train_step`, `input_pipeline`, `serving` (latency),
`serving_load` (spinenet-serve under concurrent clients and large bodies),
`serving_accuracy`, `parity`, `search_surrogate`; each prints one JSON line
last. Shared modules (underscored): `_model_garden` (the one Model Garden
recipe table and builders, also used by the parity tests), `_parity_harness`,
`_timing`, `_machine` (the machine summary every JSON carries), `_ratios`
(like-with-like and best-against-best ratios), `_serving_exports` and
`_saved_model_eval`.
"""
