"""Automations: messages sent when subscribers enter or leave segments."""
