"""The contract between the stimloop service and everything that speaks to it.

Torch-free, and importing nothing of the server or the rig client, which both stand on it:
the science's settings with their bounds (``configs``), the request and response models by
resource (``sessions``, ``trials``, ``sets``, ``system``, ``selection``, ``analysis``,
``saliency``, ``phase_three``; identifier patterns in ``ids``). Import from the modules:
this package's root stays empty so that a command's ``--help`` loads nothing it does not need.
"""
