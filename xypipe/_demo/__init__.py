"""`xypipe demo`: the demo tree in the background, its helpers and its checks."""
