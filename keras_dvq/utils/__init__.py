"""Small helpers the rest of the package stands on: argument checks,
atomic writes, the command-line frame, finiteness checks. Nothing here
imports from the rest of keras_dvq."""
