"""Pure state machines, one module per level of the hierarchy.

Every transition is synchronous and deterministic: ``(state, inputs) ->
(state, outputs)``. No clock, randomness, I/O or unordered iteration inside.
"""
