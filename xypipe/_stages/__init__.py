"""Built-in stages. Each registers through the ``xypipe.stages`` entry-point group."""
