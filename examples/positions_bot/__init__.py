"""The trading bot's positions, event-sourced with ``eventsourcing`` on hastate.

Run ``python -m positions_bot.demo`` from ``examples/`` (see ``demo.py``).
"""
