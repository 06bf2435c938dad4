"""dbtier: operations tooling for the mockupAWS PostgreSQL tier."""

__version__ = "1.0.0"
