"""The command line: one thin module per command; nothing else in latune imports this layer."""
