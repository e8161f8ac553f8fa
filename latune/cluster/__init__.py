"""Ray cluster launcher helpers: autoscaler capacity planning."""
