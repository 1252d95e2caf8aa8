"""The Python client SDK's internals; the public surface is :mod:`xypipe.client`.

``_updates`` (what the client yields), ``_book`` (one group's state), ``_core`` (the sans-I/O
protocol core: frames in, frames and updates out, no socket, no clock) and ``_shell`` (the
trio-websocket connection, reconnects and timers around the core).
"""
