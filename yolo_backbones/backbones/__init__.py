"""Backbone implementations; importing this package registers every family in the registry."""
