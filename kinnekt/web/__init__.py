"""Blueprints: thin views that parse input, call a domain function and render a template."""
