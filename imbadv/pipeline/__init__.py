"""A job's stages, in the order they run, around one Job (job.py):

plan (what a model is: spec, key, split) -> obtain (from the store, trained alone or grouped,
or a checkpoint file) -> craft (adversarial images, batch by batch, in a Lightning module) ->
attack (each source's images made once through the store, tested on the job's models: rows) ->
experiment (one job from its config: the stages above, then results.json).
"""
