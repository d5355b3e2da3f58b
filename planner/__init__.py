"""The pure planner core: profiles, load predictors, observations and scaling policies.

Nothing in this package does I/O, sleeps or reads a clock; the simulator (`sim`) and
the live driver (`live`) feed it window statistics and apply its decisions.
"""
