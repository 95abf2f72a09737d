"""simulator: analytical serving model and discrete-event serving engine."""
