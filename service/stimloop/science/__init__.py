"""The functional core: arrays and tensors in, arrays and tensors out (no HTTP, Redis, globals).

One module per concept of the paper: ``backbone`` (sec. 4), ``stimuli`` (procedural stand-ins
for the stimulus sets).
"""
