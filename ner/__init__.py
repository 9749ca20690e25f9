"""Recurrent named-entity tagger: conf -> data -> model -> train loop -> metrics -> tracking -> tag."""

__version__ = "0.1.0"
