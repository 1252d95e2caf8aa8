"""Sans-I/O cores of the aggregator: symbol state, reorder window, conflation, snapshots.

Nothing here owns a clock, a task or a socket: the stages in ``xypipe._stages`` feed these
classes with records and ``now`` and ship what they return.
"""
