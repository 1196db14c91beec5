"""Lightning callbacks of a training run, one concern a module; ``conf/callbacks/`` instantiates them.

- :mod:`.schedules`: apply the LR, mask-ratio and batch-size schedules (:mod:`mmbert.train.schedules`).
- :mod:`.budget`: end the phase when its token budget is spent.
- :mod:`.mixture`: report the data mixture, planned and realised.
- :mod:`.progress`: throughput, MFU, data waits and Hub retries, and the token progress bar.
- :mod:`.export`: the Hugging Face folder written when the run has finished (after its last checkpoint).

The checkpoint callbacks (:class:`~mmbert.train.resume.StepCheckpoint`,
:class:`~mmbert.train.resume.TokenCheckpoint`) live in :mod:`mmbert.train.resume`, with everything else a
resumed run depends on. Import the callbacks from :mod:`mmbert.train`.
"""
