"""The paper's baselines beside SEARLE, in the same harness: same features, prompts, rankings, metrics.

Each module holds a baseline's network, loss and query features (:mod:`.captioning`, :mod:`.pic2word`,
:mod:`.palavra`, :mod:`.lincir`; :mod:`.training`: their unlabeled images and training loop);
:mod:`searle_core.methods.registry` calls them with what they take from the method context, and
:func:`searle_core.jobs.evaluation.prepare` trains or loads their networks.
"""
