"""Kafka-free operators: plain classes and functions over numpy arrays and records."""
